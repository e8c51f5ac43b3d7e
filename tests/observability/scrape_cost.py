"""Measure what scraping /metrics costs a loaded node (not a test; run by hand).

    python -m tests.observability.scrape_cost [--seconds 10] [--clients 50] [--rate 200]

Starts ``tandem serve`` in a child process, keeps ``--clients`` members in one
session with one of them publishing ``--rate`` events per second, and compares
the server's CPU time over equal windows: no scraping, a scrape every 15 s
(Prometheus' usual interval), every 1 s and every 0.1 s.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
import urllib.request

import orjson
import psutil
import trio
import trio_websocket


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url) as response:
        body: bytes = response.read()
    return body


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _member(url: str, publish_rate: float, stop: trio.Event) -> None:
    async with trio_websocket.open_websocket_url(url) as ws:
        await ws.send_message(orjson.dumps({"type": "session:join", "sessionId": "bench"}).decode())

        async def drain() -> None:
            while True:
                await ws.get_message()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(drain)
            n = 0
            while not stop.is_set():
                if publish_rate:
                    n += 1
                    msg = {"type": "event:publish", "sessionId": "bench", "name": "e", "data": n}
                    await ws.send_message(orjson.dumps(msg).decode())
                    await trio.sleep(1 / publish_rate)
                else:
                    await stop.wait()
            nursery.cancel_scope.cancel()


async def _window(
    proc: psutil.Process, base: str, seconds: float, every: float | None
) -> tuple[float, float]:
    """CPU seconds the server used in ``seconds``, and the mean scrape time."""
    before = sum(proc.cpu_times()[:2])
    start = time.perf_counter()
    scrapes: list[float] = []
    while time.perf_counter() - start < seconds:
        if every is None:
            await trio.sleep(seconds)
            break
        t0 = time.perf_counter()
        await trio.to_thread.run_sync(_get, base + "/metrics")
        scrapes.append(time.perf_counter() - t0)
        await trio.sleep(max(0.0, every - (time.perf_counter() - t0)))
    elapsed = time.perf_counter() - start
    used = sum(proc.cpu_times()[:2]) - before
    return used / elapsed, (sum(scrapes) / len(scrapes) if scrapes else 0.0)


async def _main(args: argparse.Namespace) -> None:
    port = _free_port()
    env = dict(os.environ, TANDEM_PORT=str(port), TANDEM_LOG_LEVEL="warning")
    command = [sys.executable, "-m", "runtime.cli", "serve"]
    server = await trio.to_thread.run_sync(lambda: subprocess.Popen(command, env=env))
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                await trio.to_thread.run_sync(_get, base + "/healthz")
                break
            except OSError:
                await trio.sleep(0.1)
        proc = psutil.Process(server.pid)
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            for i in range(args.clients):
                rate = args.rate if i == 0 else 0.0
                nursery.start_soon(_member, f"ws://127.0.0.1:{port}/", rate, stop)
            await trio.sleep(2)  # warm up
            results = []
            for label, every in (("none", None), ("15 s", 15.0), ("1 s", 1.0), ("0.1 s", 0.1)):
                cpu, scrape = await _window(proc, base, args.seconds, every)
                results.append((label, cpu, scrape))
            stop.set()
            nursery.cancel_scope.cancel()
        size = len(await trio.to_thread.run_sync(_get, base + "/metrics"))
        base_cpu = results[0][1]
        print(f"{args.clients} members, {args.rate:g} publishes/s, /metrics is {size} bytes")
        print("| scrape every | server CPU (% of a core) | added | mean scrape time |")
        print("|---|---:|---:|---:|")
        for label, cpu, scrape in results:
            print(
                f"| {label} | {cpu * 100:.1f} | {(cpu - base_cpu) * 100:+.2f} "
                f"| {scrape * 1000:.2f} ms |"
            )
    finally:
        server.terminate()
        server.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--rate", type=float, default=200.0)
    trio.run(_main, parser.parse_args())


if __name__ == "__main__":
    main()
