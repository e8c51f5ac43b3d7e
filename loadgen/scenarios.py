"""Scenario plans: which sessions exist, who joins what, who publishes, what is expected."""

from __future__ import annotations

from dataclasses import dataclass, field

UNAVAILABLE = {
    "comments": "not yet available: the comments service does not exist yet",
    "cluster": "not yet available: a multi-node Tandem cluster cannot be started yet",
}
SCENARIOS = ["connections", "fanout", "rooms", "presence", *UNAVAILABLE]


@dataclass(frozen=True)
class Plan:
    scenario: str
    sessions: dict[str, int]  # sessionId -> member count
    conns: list[tuple[str, bool]]  # (sessionId, publishes?) per connection, in ramp order
    kind: str  # "event" | "presence" | "none"
    rate_unit: str  # what --rate means, for the tables
    rates: list[float] = field(default_factory=list)  # offered rates, one step each

    def per_publisher_rate(self, rate: float) -> float:
        if self.scenario == "rooms":  # rate per room, spread over its members
            return rate / max(1, next(iter(self.sessions.values())))
        return rate

    def expected_deliveries(self, published: dict[str, int]) -> int:
        if self.kind == "presence":  # others only
            return sum(n * (self.sessions[sid] - 1) for sid, n in published.items())
        return sum(n * self.sessions[sid] for sid, n in published.items())

    @property
    def connections(self) -> int:
        return len(self.conns)


def _interleaved(sessions: int, members: int, publishes: bool) -> list[tuple[str, bool]]:
    """Member k of every session joins before member k+1 of any, so rooms fill evenly."""
    return [(f"s{s}", publishes) for _m in range(members) for s in range(sessions)]


def step_rates(start: float, limit: float) -> list[float]:
    rates: list[float] = []
    rate = start
    while rate <= limit:
        rates.append(rate)
        rate = rate * 2
    return rates


def build_plan(
    scenario: str,
    *,
    members: int | None,
    sessions: int | None,
    conns: int | None,
    rate: float | None,
    step_start: float,
    step_max: float,
) -> Plan:
    if scenario == "connections":
        n = conns or 1000
        size = members or 10
        count = max(1, -(-n // size))
        plan_conns = [(f"s{i // size}", False) for i in range(n)]
        return Plan(
            scenario,
            {f"s{s}": 0 for s in range(count)} | _sizes(plan_conns),
            plan_conns,
            "none",
            "-",
        )
    if scenario == "fanout":
        m = members or 100
        plan_conns = [("s0", i == 0) for i in range(m)]
        rates = [rate] if rate else step_rates(step_start, step_max)
        return Plan(scenario, {"s0": m}, plan_conns, "event", "events/s into the session", rates)
    if scenario == "rooms":
        m = members or 20
        s = sessions or 50
        plan_conns = _interleaved(s, m, True)
        return Plan(
            scenario, _sizes(plan_conns), plan_conns, "event", "events/s per room", [rate or 10.0]
        )
    if scenario == "presence":
        m = members or 20
        s = sessions or 10
        plan_conns = _interleaved(s, m, True)
        return Plan(
            scenario,
            _sizes(plan_conns),
            plan_conns,
            "presence",
            "presence updates/s per member",
            [rate or 20.0],
        )
    raise ValueError(f"unknown scenario {scenario!r}")


def _sizes(conns: list[tuple[str, bool]]) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for sid, _ in conns:
        sizes[sid] = sizes.get(sid, 0) + 1
    return sizes
