"""The ``tandem`` command: serve, token, migrate, status, report, keys, audit, bench, version."""

from __future__ import annotations

import argparse
import gc
import importlib
import logging
import signal
import sys
import time
from collections.abc import Sequence

import trio

from runtime.app import jwt_secret, open_node, open_stores
from runtime.config import ConfigError, Settings, add_setting_flags, load_settings
from runtime.observability.logs import configure_logging
from runtime.security.tokens import mint_token
from runtime.workers import WorkerIdentity, current_worker, wait_orphaned

logger = logging.getLogger("tandem")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tandem", description="Tandem collaboration server")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve", help="run the server (embedded defaults: no set-up needed)"
    )
    add_setting_flags(serve)
    token = commands.add_parser("token", help="mint a client token (HS256)")
    token.add_argument("--user", required=True, help="user id (the token's sub)")
    token.add_argument("--name", help="display name")
    token.add_argument("--ttl", type=float, default=86400.0, help="seconds until expiry")
    token.add_argument(
        "--grant",
        action="append",
        default=[],
        metavar="SESSION=ROLE",
        help="per-session role grant (repeatable)",
    )
    migrate_cmd = commands.add_parser(
        "migrate", help="apply database migrations (serve also does this at start)"
    )
    add_setting_flags(migrate_cmd)
    commands.add_parser("version", help="print the version")
    status = commands.add_parser("status", help="print a node's /status as tables")
    status.add_argument("--url", default="http://127.0.0.1:8080", help="the node's base URL")
    report = commands.add_parser("report", help="latency percentiles against the SLA table")
    report.add_argument("--url", default="http://127.0.0.1:8080", help="the node's base URL")
    report.add_argument("--since", default="10m", help="interval between two scrapes (5s, 10m)")
    report.add_argument("--markdown", metavar="FILE", help="also write the report as Markdown")
    # Everything after `bench` is the load generator's own command line (its --help too).
    commands.add_parser(
        "bench",
        add_help=False,
        help="run a load-generator scenario: tandem bench SCENARIO [options] "
        "(python -m loadgen; needs `pip install 'tandem[bench]'`)",
    )
    from runtime import admin_cli

    admin_cli.add_commands(commands)  # keys generate|rotate, audit verify
    args, _ = parser.parse_known_args(argv)
    try:
        if args.command == "serve":
            return _serve(list(argv or sys.argv[1:])[1:])
        if args.command == "bench":
            return _bench(list(argv or sys.argv[1:])[1:])
        if args.command == "token":
            return _token(args)
        if args.command == "migrate":
            return _migrate(list(argv or sys.argv[1:])[1:])
        if args.command in ("status", "report"):
            return _observe(args)
        if args.command in ("keys", "audit"):
            return admin_cli.run(args, list(sys.argv[1:] if argv is None else argv))
    except ConfigError as exc:
        print(f"tandem: configuration error: {exc}", file=sys.stderr)
        return 2
    from importlib.metadata import version

    print(version("tandem"))
    return 0


def _bench(argv: list[str]) -> int:
    """``tandem bench ...`` is ``python -m loadgen ...`` (see loadgen/README.md)."""
    # Imported by name: the generator is an optional tool beside the server, not part of it
    # (nor of what mypy checks as the server's code).
    try:
        loadgen_cli = importlib.import_module("loadgen.cli")
    except ImportError as exc:  # the generator's extras (hdrhistogram, the peers) are optional
        print(
            f"tandem bench: the load generator is not installed ({exc}); "
            "pip install 'tandem[bench]' from a checkout of the repository",
            file=sys.stderr,
        )
        return 2
    return int(loadgen_cli.main(argv))


def _serve(argv: list[str]) -> int:
    settings = load_settings(argv)
    configure_logging(settings.log_level, settings.log_format, profile=settings.profile)
    if settings.workers > 1:
        from runtime.workers import serve_workers

        return trio.run(serve_workers, settings)
    trio.run(_run_until_signal, settings)
    return 0


#: Allocations between collections of the youngest generation (CPython's default: 700).
GC_YOUNG_THRESHOLD = 10_000


async def _run_until_signal(settings: Settings) -> None:
    worker = current_worker()  # set when a --workers parent started this process
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with open_node(settings) as node:
            # Everything built so far (modules, the node, its tables) lives as long as
            # the process: out of the collector's sight, a full collection scans only
            # what serving creates. Measured: full collections of 14-30 ms were the
            # p99 of fan-out latency at 100 members (docs/performance.md).
            gc.freeze()
            # Collect the youngest generation every 10,000 new container objects, not
            # 700: under load most of them are gone by then, so far fewer survive into
            # the older generations, whose collections scan everything that has (each
            # event in a session's retention ring lives ~1 s at 1,000 events/s). At 1,000
            # comments/s: 281-327 → 81-127 ms of collections per 4,000-comment run, and
            # none of the four 23-33 ms full collections (docs/performance.md, change 25).
            gc.set_threshold(GC_YOUNG_THRESHOLD, 10, 10)
            logger.info(
                "tandem %s profile listening on ws://%s:%s/ (status: /status)%s",
                settings.profile,
                settings.host,
                node.public_port,
                "" if worker is None else f" as worker {worker.index}",
            )
            async with trio.open_nursery() as nursery:
                if worker is not None:
                    node.status_hooks["worker"] = worker.status
                    nursery.start_soon(_stop_when_orphaned, worker, nursery.cancel_scope)
                async for signum in signals:
                    logger.info("signal %s: shutting down gracefully", signum)
                    break
                nursery.cancel_scope.cancel()


async def _stop_when_orphaned(worker: WorkerIdentity, scope: trio.CancelScope) -> None:
    await wait_orphaned(worker)
    logger.warning("worker %d: the parent is gone; shutting down gracefully", worker.index)
    scope.cancel()


def _migrate(argv: list[str]) -> int:
    settings = load_settings(argv)
    configure_logging(settings.log_level, settings.log_format, profile=settings.profile)

    async def run() -> None:
        async with open_stores(settings):  # migrates on open
            pass

    trio.run(run)
    print("tandem migrate: schema is up to date")
    return 0


def _observe(args: argparse.Namespace) -> int:
    import urllib.error

    import orjson
    from rich.console import Console

    from runtime.observability import report, status_view

    console = Console()
    try:
        if args.command == "status":
            data = orjson.loads(report.fetch(args.url.rstrip("/") + "/status"))
            status_view.render_status(data, console)
        else:
            interval = report.parse_duration(args.since)
            report.run_report(args.url, interval, console=console, markdown_path=args.markdown)
    except (OSError, urllib.error.URLError, ValueError) as exc:
        print(f"tandem {args.command}: {exc}", file=sys.stderr)
        return 1
    return 0


def _token(args: argparse.Namespace) -> int:
    settings = load_settings([])
    grants = dict(grant.split("=", 1) for grant in args.grant)
    print(
        mint_token(
            jwt_secret(settings),
            args.user,
            name=args.name,
            ttl_s=args.ttl,
            now=time.time(),
            grants=grants or None,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
