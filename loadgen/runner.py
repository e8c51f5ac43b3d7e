"""Runs one scenario plan against one running server with a pool of generator processes."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from hdrh.histogram import HdrHistogram

from loadgen.comments import user_id
from loadgen.pool import WorkerPool
from loadgen.procstat import (
    CpuMeter,
    GroupSample,
    machine_busy_seconds,
    sample_group,
    sockstat_tcp,
)
from loadgen.scenarios import Plan, members_per_node, publishers_per_node
from loadgen.servers import Target
from loadgen.worker import HIST_MAX_US, ConnSpec, WorkerConfig, conn_id

GEN_CPU_LIMIT = 0.90  # above this a generator process, not the server, may be the bottleneck
OTHER_CPU_WARN = 0.25  # cores' worth of CPU used by neither server nor generator: noisy machine


@dataclass(frozen=True)
class Options:
    procs: int
    duration: float
    ramp: float  # connections per second, all processes together
    source_ips: int
    drain_timeout: float
    connect_timeout: float
    p99_limit_ms: float
    max_total_seconds: float
    pad: int
    durable: bool | None
    compression: bool = False  # offer permessage-deflate, as browsers do
    token_secret: str | None = None  # comments: the server's TANDEM_JWT_SECRET


class Server(Protocol):
    """A running target: one server (``RunningServer``) or a cluster (``RunningCluster``)."""

    target: Target
    label: str
    port: int

    @property
    def ports(self) -> list[int]: ...
    @property
    def pgids(self) -> list[int]: ...


def sample_server(server: Server) -> tuple[GroupSample, list[float]]:
    """Totals over every process group of the server (all nodes), and CPU seconds per node."""
    samples = [sample_group(pgid) for pgid in server.pgids]
    total = GroupSample(
        sum(x.cpu_seconds for x in samples),
        sum(x.rss_bytes for x in samples),
        sum(x.processes for x in samples),
    )
    return total, [x.cpu_seconds for x in samples]


def _configs(plan: Plan, server: Server, opts: Options) -> list[WorkerConfig]:
    shares: list[list[ConnSpec]] = [[] for _ in range(opts.procs)]
    ports = server.ports
    for i, (sid, publishes) in enumerate(plan.conns):
        ip = f"127.0.0.{2 + i % opts.source_ips}"
        port = ports[plan.node_of(i) % len(ports)]
        shares[i % opts.procs].append(ConnSpec(sid, ip, publishes, port, plan.observes(i)))
    pool: tuple[str, ...] = ()
    if plan.kind == "comment":
        pool = tuple(
            user_id(conn_id(k, j)) for k, share in enumerate(shares) for j in range(len(share))
        )
    return [
        WorkerConfig(
            index=k,
            host="127.0.0.1",
            port=server.port,
            path=server.target.path,
            socketio=server.target.socketio,
            conns=share,
            ramp_per_second=opts.ramp / opts.procs,
            connect_timeout=opts.connect_timeout,
            kind=plan.kind,
            pad=opts.pad,
            durable=opts.durable,
            compression=opts.compression,
            token_secret=opts.token_secret if plan.kind == "comment" else None,
            mention_pool=pool,
        )
        for k, share in enumerate(shares)
    ]


def progress_bar(done: float, total: float, width: int = 20) -> str:
    """``[#######-------------]  35%``: how far a ramp or a timed phase has got."""
    share = 0.0 if total <= 0 else min(1.0, max(0.0, done / total))
    filled = round(share * width)
    return f"[{'#' * filled}{'-' * (width - filled)}] {100 * share:3.0f}%"


class ScenarioRun:
    """Drives the phases (connect, then one publishing step per rate) and builds the result."""

    def __init__(
        self, plan: Plan, server: Server, opts: Options, log: Callable[[str], None]
    ) -> None:
        self.plan, self.server, self.opts, self.log = plan, server, opts, log
        configs = _configs(plan, server, opts)
        self.session_of = {
            conn_id(cfg.index, i): spec.session_id
            for cfg in configs
            for i, spec in enumerate(cfg.conns)
        }
        self.observing = {
            conn_id(cfg.index, i)
            for cfg in configs
            for i, spec in enumerate(cfg.conns)
            if spec.observes
        }
        self.pool = WorkerPool(configs)
        self.gen_cpu = CpuMeter(self.pool.pids)
        self.started = time.monotonic()
        self._last_tick = (time.monotonic(), sample_server(server)[0].cpu_seconds)
        self.phase = "start"
        self.expected_so_far = 0
        self._timed: tuple[float, float] | None = None  # a timed phase's (start, seconds)

    def close(self) -> None:
        self.pool.close()

    # -- live table -------------------------------------------------------------------------
    def tick(self) -> None:
        now = time.monotonic()
        srv = sample_server(self.server)[0].cpu_seconds
        last_t, last_cpu = self._last_tick
        wall = now - last_t
        self._last_tick = (now, srv)
        gen = self.gen_cpu.fractions(wall)
        p = self.pool
        delivered = p.total("events") + p.total("presence")
        if self.phase == "connect":  # the ramp: joined of all
            bar = " " + progress_bar(p.total("joined"), self.plan.connections)
        elif self._timed is not None:  # holding idle, or publishing: time of the phase's
            bar = " " + progress_bar(now - self._timed[0], self._timed[1])
        else:
            bar = ""
        self.log(
            f"{self.server.label:>13} {self.phase:>10} {now - self.started:6.1f}s "
            f"joined={p.total('joined'):>6} sent={p.total('sent'):>7} "
            f"delivered={delivered:>9} srv_cpu={100 * (srv - last_cpu) / wall:5.0f}% "
            f"gen_cpu={','.join(f'{100 * g:.0f}%' for g in gen.values())}{bar}"
        )

    # -- phases -----------------------------------------------------------------------------
    def connect(self) -> dict[str, Any]:
        before = sample_server(self.server)[0]
        sock_before = sockstat_tcp()
        self.phase = "connect"
        t0 = time.monotonic()
        self.pool.broadcast({"cmd": "connect"})
        budget = self.plan.connections / self.opts.ramp + self.opts.connect_timeout + 30
        replies = self.pool.wait_for("connected", budget, self.tick)
        ramp_seconds = time.monotonic() - t0
        time.sleep(0.5)  # let the server settle before reading its memory
        after = sample_server(self.server)[0]
        sock_after = sockstat_tcp()
        joined = sum(r["joined"] for r in replies)
        n = max(1, joined)
        return {
            "connections": self.plan.connections,
            "joined": joined,
            "failed": sum(r["failed"] for r in replies),
            "errors": [e for r in replies for e in r["errors"]][:5],
            "ramp_seconds": round(ramp_seconds, 3),
            "server_cpu_seconds": round(after.cpu_seconds - before.cpu_seconds, 3),
            "server_rss_before_bytes": before.rss_bytes,
            "server_rss_after_bytes": after.rss_bytes,
            "server_rss_per_connection_bytes": round((after.rss_bytes - before.rss_bytes) / n),
            "tcp_mem_per_connection_bytes": round(
                (sock_after.get("mem_bytes", 0) - sock_before.get("mem_bytes", 0)) / n
            ),
            "tcp_sockets_inuse_delta": sock_after.get("inuse", 0) - sock_before.get("inuse", 0),
        }

    def idle(self, seconds: float) -> dict[str, Any]:
        self.phase = "idle"
        before = sample_server(self.server)[0]
        self._timed = (time.monotonic(), seconds)
        self.pool.pump(seconds, self.tick)
        self._timed = None
        after = sample_server(self.server)[0]
        return {
            "idle_seconds": seconds,
            "idle_server_cpu_percent": round(
                100 * (after.cpu_seconds - before.cpu_seconds) / seconds, 2
            ),
            "lost_connections": self.pool.total("lost"),
        }

    def step(self, rate: float) -> dict[str, Any]:
        opts, plan = self.opts, self.plan
        per_pub = plan.per_publisher_rate(rate)
        duration = plan.publish_seconds(rate) if plan.kind == "comment" else opts.duration
        self.phase = f"@{rate:g}"
        start_at = time.time() + 0.3
        self.pool.pump(0.3)
        srv0, nodes0 = sample_server(self.server)
        gen_meter = CpuMeter(self.pool.pids)
        busy0 = machine_busy_seconds()
        t0 = time.monotonic()
        self.pool.broadcast(
            {"cmd": "run", "rate": per_pub, "start_at": start_at, "duration": duration}
        )
        self._timed = (time.monotonic(), duration)  # workers start when the command arrives
        published_msgs = self.pool.wait_for("published", duration + 30, self.tick)
        self._timed = None
        window = time.monotonic() - t0
        gen_fracs = list(gen_meter.fractions(window).values())
        srv_window = sample_server(self.server)[0].cpu_seconds - srv0.cpu_seconds
        other = (machine_busy_seconds() - busy0 - srv_window - sum(gen_fracs) * window) / window
        published: dict[str, int] = {}
        for msg in published_msgs:
            for sid, n in msg["per_session"].items():
                published[sid] = published.get(sid, 0) + n
        total_published = sum(published.values())
        expected = plan.expected_deliveries(published)
        self.phase = "drain"
        counter = "presence" if plan.kind == "presence" else "events"

        quiet = {"count": -1, "since": time.monotonic()}

        def drained() -> bool:
            count = self.pool.total(counter)
            if plan.kind == "presence":
                # Servers may coalesce presence (last write wins): stop once nothing more
                # arrives for a while; convergence is checked from the reports.
                if count != quiet["count"]:
                    quiet["count"], quiet["since"] = count, time.monotonic()
                return count >= expected or time.monotonic() - quiet["since"] > 1.5
            return count >= expected and self.pool.total("acks") >= total_published

        t_drain = time.monotonic()
        self.pool.pump(opts.drain_timeout, self.tick, drained)
        drain_seconds = time.monotonic() - t_drain
        srv1, nodes1 = sample_server(self.server)
        srv_total = srv1.cpu_seconds - srv0.cpu_seconds
        self.pool.broadcast({"cmd": "report"})
        reports = self.pool.wait_for("report", 60)
        result = self._step_result(
            rate, per_pub, window, drain_seconds, total_published, expected, reports,
            srv_window, srv_total, gen_fracs,
        )  # fmt: skip
        result["other_cpu_percent"] = round(100 * other, 1)
        if plan.kind == "comment":
            self._comment_figures(result, reports, window)
        if plan.scenario == "cluster":
            node_cpu = [b - a for a, b in zip(nodes0, nodes1, strict=True)]
            span = window + drain_seconds
            result["nodes"] = len(node_cpu)
            result["node_cpu_seconds"] = [round(c, 3) for c in node_cpu]
            result["node_cpu_percent"] = [round(100 * c / max(span, 1e-9), 1) for c in node_cpu]
            result["members_per_node"] = members_per_node(plan)
            result["publishers_per_node"] = publishers_per_node(plan)
        if other > OTHER_CPU_WARN:
            result["warnings"].append(
                f"other processes used {100 * other:.0f}% of a core: noisy machine, "
                "compare with care"
            )
        return result

    def _step_result(
        self,
        rate: float,
        per_pub: float,
        window: float,
        drain: float,
        published: int,
        expected: int,
        reports: list[dict[str, Any]],
        srv_window: float,
        srv_total: float,
        gen: list[float],
    ) -> dict[str, Any]:
        hist = HdrHistogram(1, HIST_MAX_US, 3)
        for r in reports:
            hist.decode_and_add(r["histogram"])
        counter = "presence" if self.plan.kind == "presence" else "events"
        delivered = sum(r[counter] for r in reports)
        acks = sum(r["acks"] for r in reports)
        lost_conns = sum(r["lost"] for r in reports)
        problems: list[str] = []
        presence = self.plan.kind == "presence"
        stale = self._stale_presence_pairs(reports) if presence else 0
        if stale:
            problems.append(f"{stale} (receiver, sender) pairs never saw the sender's last state")
        if delivered < expected and not presence:
            problems.append(
                f"{expected - delivered} of {expected} deliveries missing after a "
                f"{self.opts.drain_timeout:g}s drain"
            )
        if delivered > expected:
            problems.append(f"{delivered - expected} unexpected extra deliveries")
        if self.plan.kind in ("event", "comment") and acks < published:
            problems.append(f"missing {published - acks} of {published} acks")
        if lost_conns:
            problems.append(f"{lost_conns} connections dropped")
        if published == 0:
            problems.append("nothing was published")
        invalid = [g for g in gen if g > GEN_CPU_LIMIT]
        status = "FAILED" if problems else ("INVALID" if invalid else "OK")
        if invalid:
            problems.append(
                f"generator process at {100 * max(invalid):.0f}% of a core: generator-bound"
            )

        def ms(v: float) -> float:
            return round(v / 1000, 3)

        count = hist.get_total_count()
        return {
            "rate": rate,
            "rate_per_publisher": round(per_pub, 4),
            "publish_seconds": round(window, 3),
            "drain_seconds": round(drain, 3),
            "published": published,
            "expected": expected,
            "delivered": delivered,
            "acks": acks,
            "self_echoes_ignored": sum(r["self_echoes"] for r in reports),
            "coalesced_updates": max(0, expected - delivered) if presence else None,
            "deliveries_per_second": round(delivered / max(window, 1e-9), 1),
            "latency_samples": count,
            "p50_ms": ms(hist.get_value_at_percentile(50)) if count else None,
            "p95_ms": ms(hist.get_value_at_percentile(95)) if count else None,
            "p99_ms": ms(hist.get_value_at_percentile(99)) if count else None,
            "max_ms": ms(hist.get_max_value()) if count else None,
            "server_cpu_seconds": round(srv_total, 3),
            "server_cpu_percent": round(100 * srv_window / max(window, 1e-9), 1),
            "deliveries_per_server_cpu_second": (
                round(delivered / srv_total, 1) if srv_total > 0 else None
            ),
            "generator_cpu_percent": [round(100 * g, 1) for g in gen],
            # How late the start command reached each generator (its schedule starts on
            # arrival, phases spread as asked; before, late starts fired catch-up bursts).
            "start_late_s": [r.get("start_late_s", 0.0) for r in reports],
            "status": status,
            "problems": problems,
            "warnings": (
                [
                    f"{expected - delivered} presence updates coalesced by the server (last write "
                    "wins); every member converged on every other member's last state"
                ]
                if presence and delivered < expected and not stale
                else []
            ),
        }

    def _comment_figures(
        self, result: dict[str, Any], reports: list[dict[str, Any]], window: float
    ) -> None:
        """Ack latency, comments/s, mention notifications, refused comments."""

        def merged(key: str) -> HdrHistogram:
            hist = HdrHistogram(1, HIST_MAX_US, 3)
            for r in reports:
                hist.decode_and_add(r[key])
            return hist

        def pct(hist: HdrHistogram, p: float | None) -> float | None:
            if not hist.get_total_count():
                return None
            v = hist.get_max_value() if p is None else hist.get_value_at_percentile(p)
            return round(v / 1000, 3)

        ack = merged("ack_histogram")
        mention = merged("mention_histogram")
        kinds: dict[str, int] = {}
        for r in reports:
            for k, n in r["comment_kinds"].items():
                kinds[k] = kinds.get(k, 0) + n
        errors = sum(r["comment_errors"] for r in reports)
        result.update(
            {
                "comments_per_second": round(result["published"] / max(window, 1e-9), 1),
                "acked_per_second": acked_per_second(result["acks"], reports),
                # The older figure: acks over publish + drain, where the drain ends on a
                # progress poll (every 250 ms), so it is a lower bound; kept to compare.
                "acked_per_second_polled": round(
                    result["acks"] / max(window + result["drain_seconds"], 1e-9), 1
                ),
                "comment_kinds": kinds,
                "ack_p50_ms": pct(ack, 50),
                "ack_p95_ms": pct(ack, 95),
                "ack_p99_ms": pct(ack, 99),
                "ack_max_ms": pct(ack, None),
                "mentions_sent": sum(r["mentions_sent"] for r in reports),
                "mention_notifications": sum(r["mention_notifications"] for r in reports),
                "mention_p50_ms": pct(mention, 50),
                "mention_p99_ms": pct(mention, 99),
                "comment_errors": errors,
                "comment_error_samples": [e for r in reports for e in r["comment_error_samples"]][
                    :5
                ],
            }
        )
        if errors:
            result["problems"].append(f"{errors} comment requests refused by the server")
            result["status"] = "FAILED"

    def _stale_presence_pairs(self, reports: list[dict[str, Any]]) -> int:
        """Convergence: every observer must end up with every other member's last state."""
        last_sent: dict[int, int] = {}
        seen: dict[int, dict[int, int]] = {}
        for r in reports:
            last_sent.update(r["presence_last_sent"])
            seen.update(r["presence_seen"])
        members: dict[str, list[int]] = {}
        for cid, sid in self.session_of.items():
            members.setdefault(sid, []).append(cid)
        stale = 0
        for ids in members.values():
            for receiver in ids:
                if receiver not in self.observing:
                    continue
                got = seen.get(receiver, {})
                for sender in ids:
                    want = last_sent.get(sender, 0)
                    if sender != receiver and want and got.get(sender, 0) != want:
                        stale += 1
        return stale


def run_plan(
    plan: Plan, server: Server, opts: Options, log: Callable[[str], None]
) -> dict[str, Any]:
    """Connect, then either idle (connections) or step through the plan's rates."""
    run = ScenarioRun(plan, server, opts, log)
    result: dict[str, Any] = {"target": server.label, "steps": []}
    try:
        result["connect"] = connect = run.connect()
        if connect["joined"] < plan.connections:
            result["status"] = "FAILED"
            result["reason"] = f"only {connect['joined']} of {plan.connections} joined"
            return result
        if plan.scenario == "connections":
            result["connect"].update(run.idle(opts.duration))
            lost = result["connect"]["lost_connections"]
            result["status"] = "FAILED" if lost else "OK"
            return result
        deadline = run.started + opts.max_total_seconds
        for rate in plan.rates:
            if time.monotonic() + opts.duration > deadline:
                log(f"stopping: --max-time {opts.max_total_seconds:g}s reached")
                break
            step = run.step(rate)
            result["steps"].append(step)
            log(_step_line(server.label, step))
            if step["status"] != "OK":
                break
            stepping = len(plan.rates) > 1 and not plan.fixed_rates
            if stepping and (step["p99_ms"] or math.inf) > opts.p99_limit_ms:
                log(f"stopping: p99 {step['p99_ms']} ms > limit {opts.p99_limit_ms} ms")
                break
        statuses = [s["status"] for s in result["steps"]]
        result["status"] = (
            "FAILED" if "FAILED" in statuses else "INVALID" if "INVALID" in statuses else "OK"
        )
        if len(plan.rates) > 1 and not plan.fixed_rates and statuses and statuses[-1] != "OK":
            result["stopped_by"] = statuses[-1]
        return result
    finally:
        run.close()


def _step_line(name: str, s: dict[str, Any]) -> str:
    return (
        f"{name:>13} {s['status']:>8} rate={s['rate']:g} delivered={s['delivered']}/"
        f"{s['expected']} p50={s['p50_ms']}ms p99={s['p99_ms']}ms max={s['max_ms']}ms "
        f"srv_cpu={s['server_cpu_percent']}% per_cpu_s={s['deliveries_per_server_cpu_second']}"
    )


def acked_per_second(acks: int, reports: list[dict[str, Any]]) -> float | None:
    """Acknowledged (stored) comments per second, from the first create sent to the
    last ack received over every generator process (wall clock, so comparable)."""
    firsts: list[int] = [r["first_sent_us"] for r in reports if r.get("first_sent_us") is not None]
    lasts: list[int] = [r["last_ack_us"] for r in reports if r.get("last_ack_us") is not None]
    if not acks or not firsts or not lasts:
        return None
    span_us = max(lasts) - min(firsts)
    return round(acks / max(span_us / 1e6, 1e-6), 1)
