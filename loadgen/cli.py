"""Command line: ``python -m loadgen SCENARIO --target ...`` (see loadgen/README.md)."""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from loadgen.report import write_all
from loadgen.runner import Options, run_plan
from loadgen.scenarios import SCENARIOS, UNAVAILABLE, build_plan
from loadgen.servers import PEERS, REPO_ROOT, TARGETS, RunningServer
from loadgen.worker import raise_fd_limit

MAX_DURATION = 120.0
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
    p.add_argument("--duration", type=float, default=10.0, help="seconds per step (max 120)")
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
    p.add_argument("--pad", type=int, default=40, help="padding chars in each event's data")
    p.add_argument(
        "--durable",
        choices=["false", "true", "default"],
        default="false",
        help="event:publish 'durable' field (default false: peers have no storage)",
    )
    p.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results")
    p.add_argument("--quiet", action="store_true", help="no live table")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.scenario in UNAVAILABLE:
        print(f"{args.scenario}: {UNAVAILABLE[args.scenario]}. No figures produced.")
        return 2
    duration = min(args.duration, MAX_DURATION)
    plan = build_plan(
        args.scenario,
        members=args.members,
        sessions=args.sessions,
        conns=args.conns,
        rate=args.rate,
        step_start=args.step_start,
        step_max=args.step_max,
    )
    if plan.connections > MAX_CONNECTIONS:
        print(f"{plan.connections} connections is over the cap of {MAX_CONNECTIONS}")
        return 2
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
    )
    targets = (
        ["tandem", *PEERS]
        if args.target == "all"
        else PEERS
        if args.target == "peers"
        else args.target.split(",")
    )
    started = time.strftime("%Y%m%d-%H%M%S")
    out_dir = args.out / f"{started}-{args.scenario}"
    out_dir.mkdir(parents=True, exist_ok=True)
    meta: dict[str, Any] = {
        "scenario": args.scenario,
        "started": started,
        "argv": " ".join(sys.argv[1:]),
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
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "note": "server and generator share this machine's cores",
    }
    raise_fd_limit()

    def log(line: str) -> None:
        if not args.quiet:
            print(line, flush=True)

    results: list[dict[str, Any]] = []
    for name in targets:
        target = TARGETS[name]
        reason = target.unavailable_reason()
        if reason:
            print(f"== {name}: UNAVAILABLE — {reason}")
            results.append({"target": name, "status": "UNAVAILABLE", "reason": reason, "steps": []})
            continue
        print(f"== {name}: {target.description}", flush=True)
        server: RunningServer | None = None
        try:
            server = RunningServer(target, out_dir / f"server-{name}.log")
            result = run_plan(plan, server, opts, log)
            if not server.alive():
                result["status"] = "FAILED"
                result["reason"] = f"server exited: {server.log_tail(500)}"
        except (RuntimeError, TimeoutError, OSError) as exc:
            result = {"target": name, "status": "ERROR", "reason": str(exc), "steps": []}
            print(f"== {name}: ERROR — {exc}")
        finally:
            if server is not None:
                server.stop()
        results.append(result)
        print(f"== {name}: {result['status']}", flush=True)
    write_all(out_dir, meta, results)
    print((out_dir / "results.md").read_text())
    print(f"results written to {out_dir}")
    bad = {r["status"] for r in results} & {"FAILED", "ERROR"}
    return 1 if bad else 0
