"""Command line: ``python -m loadgen SCENARIO --target ...`` (see loadgen/README.md)."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import os
import platform
import secrets
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadgen.report import BASELINE, write_all
from loadgen.runner import Options, Server, run_plan
from loadgen.scenarios import SCENARIOS, TANDEM_ONLY, UNAVAILABLE, Plan, build_plan, cluster_plan
from loadgen.servers import (
    DEFAULT_DATABASE_URL,
    DEFAULT_REDIS_URL,
    PEERS,
    REPO_ROOT,
    TARGETS,
    FreshSchema,
    RunningCluster,
    RunningServer,
    Target,
    delete_redis_prefix,
    run_name,
)
from loadgen.worker import raise_fd_limit

MAX_DURATION = 120.0  # a publishing step: longer only piles up histogram samples
MAX_HOLD = 900.0  # connections: how long the idle connections are held (5 min is a target)
MAX_CONNECTIONS = 18_000  # the machine's hard file-descriptor limit is 20,000 per process


def _targets(value: str) -> str:
    """``all``, ``peers`` or a comma-separated list of target names, run one after another."""
    if value in ("all", "peers"):
        return value
    names = [name.strip() for name in value.split(",") if name.strip()]
    unknown = [name for name in names if name not in TARGETS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(
            f"unknown target(s) {', '.join(unknown) or value!r}; "
            f"choose from {', '.join([*TARGETS, 'all', 'peers'])}"
        )
    return ",".join(names)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m loadgen", description=__doc__)
    p.add_argument("scenario", choices=SCENARIOS)
    p.add_argument(
        "--target",
        default="tandem",
        type=_targets,
        help="server(s) under test, comma-separated (e.g. tandem,websockets); "
        "'all' = tandem + every peer, 'peers' = peers only",
    )
    p.add_argument("--members", type=int, help="members per session")
    p.add_argument("--sessions", type=int, help="sessions (rooms, presence)")
    p.add_argument("--conns", type=int, help="connections (connections scenario)")
    p.add_argument("--rate", type=float, help="offered rate; fanout without it steps up")
    p.add_argument(
        "--duration",
        type=float,
        default=10.0,
        help="seconds per step (max 120; connections: seconds held, max 900)",
    )
    p.add_argument(
        "--procs",
        type=int,
        default=max(1, (os.cpu_count() or 2) - 1),
        help="generator processes (one per core you give the generator)",
    )
    p.add_argument("--ramp", type=float, default=500.0, help="new connections per second")
    p.add_argument(
        "--source-ips",
        type=int,
        default=0,
        help="spread sources over 127.0.0.2..127.0.0.(N+1); 0 = automatic",
    )
    p.add_argument("--drain", type=float, default=5.0, help="max seconds to wait for stragglers")
    p.add_argument("--p99-limit-ms", type=float, default=50.0, help="fanout step-up stops here")
    p.add_argument("--step-start", type=float, default=10.0, help="first step-up rate")
    p.add_argument("--step-max", type=float, default=5120.0, help="last step-up rate")
    p.add_argument("--max-time", type=float, default=300.0, help="cap per target, seconds")
    p.add_argument("--pad", type=int, default=40, help="random chars in each event's data")
    p.add_argument(
        "--compression",
        action="store_true",
        help="offer permessage-deflate as browsers do (servers that accept it compress)",
    )
    p.add_argument(
        "--durable",
        choices=["false", "true", "default"],
        default="false",
        help="event:publish 'durable' field (default false: peers have no storage)",
    )
    p.add_argument(
        "--observers",
        type=int,
        default=0,
        help="presence: members per session that count and time receipts (0: all); "
        "the rest only load the server",
    )
    p.add_argument(
        "--baseline-rate",
        type=float,
        help="fanout, rooms: also run the websockets peer at this lower rate, before --rate; "
        "when the peer's run at --rate is not OK (typically INVALID: generator-bound), the "
        "ratio uses its highest OK rate instead and the table says so",
    )
    p.add_argument("--comments", type=int, default=10, help="comments per user (comments)")
    p.add_argument("--nodes", type=int, choices=[2, 3], default=2, help="cluster: Tandem nodes")
    p.add_argument("--publishers", type=int, default=1, help="cluster: publishing members per node")
    p.add_argument(
        "--baseline",
        choices=["single", "none"],
        default="single",
        help="cluster: also run one standalone node (no Redis) with the same load first",
    )
    p.add_argument(
        "--database-url",
        default=os.environ.get("TANDEM_TEST_DATABASE_URL", DEFAULT_DATABASE_URL),
        help="comments, cluster: PostgreSQL; each run gets a fresh schema, dropped afterwards",
    )
    p.add_argument("--keep-schema", action="store_true", help="do not drop the run's schema")
    p.add_argument("--redis-url", default=DEFAULT_REDIS_URL, help="cluster: Redis")
    p.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results")
    p.add_argument("--quiet", action="store_true", help="no live table")
    return p.parse_args(argv)


@dataclass
class RunSpec:
    """One target run: what to start (with which per-run schema / Redis prefix) and drive."""

    label: str
    target: Target
    plan: Plan
    start: Callable[[Path, dict[str, str]], Server] | None  # None: not run (skip_reason)
    database: bool = False  # give it a fresh PostgreSQL schema
    redis: bool = False  # give it a fresh Redis key prefix
    skip_reason: str | None = None


def _runs(args: argparse.Namespace, plan: Plan) -> list[RunSpec]:
    names = (
        ["tandem", *PEERS]
        if args.target == "all"
        else PEERS
        if args.target == "peers"
        else args.target.split(",")
    )
    tandem = TARGETS["tandem"]
    if args.scenario == "cluster":
        runs: list[RunSpec] = []
        if args.baseline == "single":
            # Same members, same publishers, same rate, all on one standalone node.
            single = cluster_plan(plan.connections, 1, args.publishers * plan.nodes, plan.rates[0])
            runs.append(
                RunSpec(
                    "tandem-1node",
                    tandem,
                    single,
                    lambda out, env: RunningServer(
                        tandem, out / "server-tandem-1node.log", extra_env=env, module=True,
                        label="tandem-1node",
                    ),
                    database=True,
                )
            )  # fmt: skip
        label = f"tandem-{plan.nodes}nodes"
        runs.append(
            RunSpec(
                label,
                tandem,
                plan,
                lambda out, env: RunningCluster(tandem, out, plan.nodes, env, label),
                database=True,
                redis=True,
            )
        )
        runs += [
            RunSpec(n, TARGETS[n], plan, None, skip_reason=TANDEM_ONLY["cluster"])
            for n in names
            if n != "tandem"
        ]
        return runs
    out: list[RunSpec] = []
    for name in names:
        target = TARGETS[name]
        if args.scenario in TANDEM_ONLY and name != "tandem":
            out.append(RunSpec(name, target, plan, None, skip_reason=TANDEM_ONLY[args.scenario]))
            continue

        def start(out_dir: Path, env: dict[str, str], target: Target = target) -> Server:
            return RunningServer(
                target, out_dir / f"server-{target.name}.log", extra_env=env, label=target.name
            )

        target_plan = plan
        if name == BASELINE and args.baseline_rate and args.scenario in ("fanout", "rooms"):
            rates = sorted({args.baseline_rate, *plan.rates})
            target_plan = dataclasses.replace(plan, rates=rates, fixed_rates=True)
        out.append(RunSpec(name, target, target_plan, start, database=args.scenario == "comments"))
    return out


@contextlib.contextmanager
def _resources(
    args: argparse.Namespace, run: RunSpec, started: str, token_secret: str | None
) -> Iterator[tuple[dict[str, str], dict[str, Any]]]:
    """Per-run environment for the server(s): a fresh schema, Redis prefix, token secret."""
    env: dict[str, str] = {}
    info: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        if run.database:
            schema = stack.enter_context(
                FreshSchema(
                    args.database_url, run_name("loadgen", started, run.label), args.keep_schema
                )
            )
            env["TANDEM_DATABASE_URL"] = schema.url
            info["database_schema"] = schema.name + (
                " (kept)" if args.keep_schema else " (dropped)"
            )
        if run.redis:
            prefix = run_name("loadgen", started, run.label) + ":"
            env["TANDEM_REDIS_URL"] = args.redis_url
            env["TANDEM_REDIS_PREFIX"] = prefix
            info["redis_prefix"] = prefix
            stack.callback(delete_redis_prefix, args.redis_url, prefix)
        if token_secret is not None:
            env["TANDEM_JWT_SECRET"] = token_secret
        # Benchmarks measure the server, not its per-connection limits (an explicit value wins).
        env["TANDEM_RATE_LIMITS"] = os.environ.get("TANDEM_RATE_LIMITS", "off")
        yield env, info


def plan_from_args(args: argparse.Namespace) -> Plan:
    """The scenario's plan from the command line (ValueError when the options do not fit)."""
    return build_plan(
        args.scenario,
        members=args.members,
        sessions=args.sessions,
        conns=args.conns,
        rate=args.rate,
        step_start=args.step_start,
        step_max=args.step_max,
        nodes=args.nodes,
        publishers=args.publishers,
        comments=args.comments,
        observers=args.observers,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.scenario in UNAVAILABLE:
        print(f"{args.scenario}: {UNAVAILABLE[args.scenario]}. No figures produced.")
        return 2
    duration = min(args.duration, MAX_HOLD if args.scenario == "connections" else MAX_DURATION)
    try:
        plan = plan_from_args(args)
    except ValueError as exc:
        print(f"{args.scenario}: {exc}")
        return 2
    if plan.kind == "comment":
        duration = plan.publish_seconds(plan.rates[0])
        if duration > MAX_DURATION:
            print(f"{plan.per_user} comments at {plan.rates[0]:g}/s is over {MAX_DURATION:g} s")
            return 2
    if plan.connections > MAX_CONNECTIONS:
        print(f"{plan.connections} connections is over the cap of {MAX_CONNECTIONS}")
        return 2
    token_secret = secrets.token_urlsafe(32) if plan.kind == "comment" else None
    source_ips = args.source_ips or max(4, math.ceil(plan.connections / 20_000))
    opts = Options(
        procs=max(1, args.procs),
        duration=duration,
        ramp=args.ramp,
        source_ips=source_ips,
        drain_timeout=args.drain,
        connect_timeout=15.0,
        p99_limit_ms=args.p99_limit_ms,
        max_total_seconds=args.max_time,
        pad=args.pad,
        durable={"false": False, "true": True, "default": None}[args.durable],
        compression=args.compression,
        token_secret=token_secret,
    )
    runs = _runs(args, plan)
    started = time.strftime("%Y%m%d-%H%M%S")
    out_dir = args.out / f"{started}-{args.scenario}"
    out_dir.mkdir(parents=True, exist_ok=True)
    meta: dict[str, Any] = {
        "scenario": args.scenario,
        "started": started,
        "argv": " ".join(sys.argv[1:] if argv is None else argv),
        "connections": plan.connections,
        "sessions": len(plan.sessions),
        "members_per_session": max(plan.sessions.values()),
        "rate_unit": plan.rate_unit,
        "rates": plan.rates,
        "duration_s": duration,
        "generator_procs": opts.procs,
        "source_ips": source_ips,
        "durable": args.durable,
        "pad": args.pad,
        "compression": args.compression,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "note": "server and generator share this machine's cores",
    }
    if args.scenario in TANDEM_ONLY:
        meta["tandem_only"] = TANDEM_ONLY[args.scenario]
    if plan.kind == "presence":
        meta["observers_per_session"] = plan.observers or "all"
    if plan.kind == "comment":
        meta["comments_per_user"] = plan.per_user
        meta["durable"] = "n/a (comments are always stored)"
        meta["database"] = "PostgreSQL (fresh schema per run); its CPU is in 'other CPU'"
    if args.scenario == "cluster":
        meta["nodes"] = plan.nodes
        meta["publishers_per_node"] = args.publishers
        meta["redis"] = "fresh key prefix per run, deleted afterwards; its CPU is in 'other CPU'"
        meta["baseline"] = args.baseline
    if args.scenario in TANDEM_ONLY:
        print(f"== {args.scenario}: {TANDEM_ONLY[args.scenario]}", flush=True)
    raise_fd_limit()

    def log(line: str) -> None:
        if not args.quiet:
            print(line, flush=True)

    results: list[dict[str, Any]] = []
    for run in runs:
        target = run.target
        reason = run.skip_reason or target.unavailable_reason()
        if reason or run.start is None:
            print(f"== {run.label}: UNAVAILABLE — {reason}")
            results.append(
                {"target": run.label, "status": "UNAVAILABLE", "reason": reason, "steps": []}
            )
            continue
        print(f"== {run.label}: {target.description}", flush=True)
        server: Any = None
        info: dict[str, Any] = {}
        try:
            with _resources(args, run, started, token_secret) as (env, info):
                try:
                    server = run.start(out_dir, env)
                    result = run_plan(run.plan, server, opts, log)
                    if not server.alive():
                        result["status"] = "FAILED"
                        result["reason"] = f"server exited: {server.log_tail(500)}"
                finally:
                    if server is not None:
                        server.stop()
        except (RuntimeError, TimeoutError, OSError) as exc:
            result = {"target": run.label, "status": "ERROR", "reason": str(exc), "steps": []}
            print(f"== {run.label}: ERROR — {exc}")
        except Exception as exc:  # psycopg / redis errors while preparing the run
            result = {
                "target": run.label,
                "status": "ERROR",
                "reason": f"{type(exc).__name__}: {exc}",
                "steps": [],
            }
            print(f"== {run.label}: ERROR — {type(exc).__name__}: {exc}")
        result.update(info)
        results.append(result)
        print(f"== {run.label}: {result['status']}", flush=True)
    write_all(out_dir, meta, results)
    print((out_dir / "results.md").read_text())
    print(f"results written to {out_dir}")
    bad = {r["status"] for r in results} & {"FAILED", "ERROR"}
    return 1 if bad else 0
