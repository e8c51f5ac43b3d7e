"""Scenario plans: which sessions exist, who joins what, who publishes, what is expected."""

from __future__ import annotations

from dataclasses import dataclass, field

UNAVAILABLE: dict[str, str] = {}
SCENARIOS = ["connections", "fanout", "rooms", "presence", "comments", "cluster", *UNAVAILABLE]
# Scenarios only Tandem can run: the peers have no comments and no cluster mode.
TANDEM_ONLY = {
    "comments": "Tandem-only: the peer servers have no comments",
    "cluster": "Tandem-only: the peer servers have no cluster mode",
}


@dataclass(frozen=True)
class Plan:
    scenario: str
    sessions: dict[str, int]  # sessionId -> member count
    conns: list[tuple[str, bool]]  # (sessionId, publishes?) per connection, in ramp order
    kind: str  # "event" | "presence" | "comment" | "none"
    rate_unit: str  # what --rate means, for the tables
    rates: list[float] = field(default_factory=list)  # offered rates, one step each
    nodes: int = 1  # cluster: connection i goes to node i % nodes
    per_user: int = 0  # comments: how many comments each user creates
    # presence: members per session whose receipts are counted and timed (0: all). The
    # others still join, publish and receive everything, but only ping-pong: a generator
    # that parses 5M propagations/s saturates long before the server does.
    observers: int = 0
    # Rates given up front (--baseline-rate), not a step-up: every one runs, whatever its p99.
    fixed_rates: bool = False

    def observes(self, index: int) -> bool:
        """Whether connection ``index`` (in ramp order) counts and times what it receives."""
        return self.observers <= 0 or index // max(1, len(self.sessions)) < self.observers

    def per_publisher_rate(self, rate: float) -> float:
        if self.scenario == "rooms":  # rate per room, spread over its members
            return rate / max(1, next(iter(self.sessions.values())))
        if self.scenario == "cluster":  # rate into the session, spread over its publishers
            return rate / max(1, sum(1 for _sid, publishes in self.conns if publishes))
        return rate

    def expected_deliveries(self, published: dict[str, int]) -> int:
        if self.kind == "presence" and self.observers > 0:
            # Each observer expects every update but its own; members publish alike.
            return sum(
                round(n * min(self.observers, m) * (m - 1) / m)
                for sid, n in published.items()
                for m in (self.sessions[sid],)
            )
        if self.kind in ("presence", "comment"):  # others only
            return sum(n * (self.sessions[sid] - 1) for sid, n in published.items())
        return sum(n * self.sessions[sid] for sid, n in published.items())

    def node_of(self, index: int) -> int:
        """The node connection ``index`` (in ramp order) connects to: round-robin."""
        return index % self.nodes

    def publish_seconds(self, rate: float) -> float:
        """Comments: the window in which every user creates its ``per_user`` comments."""
        return self.per_user / rate

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
    nodes: int = 1,
    publishers: int = 1,
    comments: int = 10,
    observers: int = 0,
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
            observers=observers,
        )
    if scenario == "comments":
        m = members or 100
        if m < 2:
            raise ValueError("comments needs at least 2 members (latency is to the others)")
        if comments < 1:
            raise ValueError("--comments must be at least 1")
        plan_conns = [("s0", True) for _ in range(m)]
        return Plan(
            scenario,
            {"s0": m},
            plan_conns,
            "comment",
            "comments/s per user",
            [rate or 1.0],
            per_user=comments,
        )
    if scenario == "cluster":
        return cluster_plan(members or 300, nodes, publishers, rate or 20.0)
    raise ValueError(f"unknown scenario {scenario!r}")


def cluster_plan(members: int, nodes: int, publishers_per_node: int, rate: float) -> Plan:
    """One session spanning every node: member i connects to node i % nodes, and the first
    ``publishers_per_node`` members of each node publish (rate is spread over all of them)."""
    if nodes < 1:
        raise ValueError("--nodes must be at least 1")
    if members < nodes * publishers_per_node:
        raise ValueError(
            f"{members} members cannot hold {publishers_per_node} publisher(s) x {nodes} nodes"
        )
    plan_conns = [("s0", i < nodes * publishers_per_node) for i in range(members)]
    return Plan(
        "cluster",
        {"s0": members},
        plan_conns,
        "event",
        "events/s into the session (all nodes)",
        [rate],
        nodes=nodes,
    )


def publishers_per_node(plan: Plan) -> list[int]:
    counts = [0] * plan.nodes
    for i, (_sid, publishes) in enumerate(plan.conns):
        if publishes:
            counts[plan.node_of(i)] += 1
    return counts


def members_per_node(plan: Plan) -> list[int]:
    counts = [0] * plan.nodes
    for i in range(len(plan.conns)):
        counts[plan.node_of(i)] += 1
    return counts


def _sizes(conns: list[tuple[str, bool]]) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for sid, _ in conns:
        sizes[sid] = sizes.get(sid, 0) + 1
    return sizes
