"""Micro-benchmark: CPU per read of ``SocketWire.receive_some`` on quiet sockets (not a test).

    python -m loadgen.receive_cost [--src DIR] [--conns 500] [--rate 10000] [--seconds 6]

A writer process sends 100-byte messages round-robin over ``--conns`` loopback
TCP connections at ``--rate`` per second, as a presence storm's clients do; in
this process one trio task per connection reads them with ``SocketWire`` from
the source tree ``--src`` (default: this checkout; pass an extracted older build
to compare). Prints this process's CPU time per read after a one-second warm-up.
Most reads find the socket empty and wait for it, the common case being measured.
"""

from __future__ import annotations

import argparse
import multiprocessing
import socket
import sys
import time
from pathlib import Path

MESSAGE = b"x" * 100


def _write(port: int, conns: int, rate: float, seconds: float) -> None:
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(conns)]
    started = time.monotonic()
    sent = 0
    while time.monotonic() - started < seconds + 1:
        due = int((time.monotonic() - started) * rate)
        while sent < due:
            socks[sent % conns].send(MESSAGE)
            sent += 1
        time.sleep(0.0005)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--conns", type=int, default=500)
    parser.add_argument("--rate", type=float, default=10_000)
    parser.add_argument("--seconds", type=float, default=6.0)
    args = parser.parse_args()
    sys.path.insert(0, str(args.src))
    import trio

    from runtime.transport.wire import SocketWire

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(args.conns)
    writer = multiprocessing.Process(
        target=_write, args=(listener.getsockname()[1], args.conns, args.rate, args.seconds)
    )
    writer.start()
    wires = [SocketWire(listener.accept()[0], "bench") for _ in range(args.conns)]
    reads = 0

    async def read(wire: SocketWire) -> None:
        nonlocal reads
        while await wire.receive_some(65536):
            reads += 1

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            for wire in wires:
                nursery.start_soon(read, wire)
            await trio.sleep(1.0)
            reads0, cpu0 = reads, time.process_time()
            await trio.sleep(args.seconds - 1.0)
            reads1, cpu1 = reads, time.process_time()
            print(
                f"{args.src}: {(cpu1 - cpu0) / (reads1 - reads0) * 1e6:.2f} µs CPU per read"
                f" ({reads1 - reads0} reads)"
            )
            nursery.cancel_scope.cancel()

    trio.run(run)
    writer.join()


if __name__ == "__main__":
    main()
