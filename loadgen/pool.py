"""The generator processes, seen from the parent: start, command, listen, stop."""

from __future__ import annotations

import multiprocessing as mp
import time
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from typing import Any

from loadgen.worker import WorkerConfig, worker_main


class WorkerPool:
    def __init__(self, configs: list[WorkerConfig]) -> None:
        ctx = mp.get_context("spawn")
        self.pipes: list[Connection] = []
        self.procs: list[Any] = []
        for cfg in configs:
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=worker_main, args=(cfg, child), daemon=True)
            proc.start()
            child.close()
            self.pipes.append(parent)
            self.procs.append(proc)
        self.progress: list[dict[str, Any]] = [{} for _ in configs]

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def broadcast(self, msg: dict[str, Any]) -> None:
        for pipe in self.pipes:
            pipe.send(msg)

    def wait_for(
        self, event: str, timeout: float, tick: Callable[[], None] | None = None
    ) -> list[dict[str, Any]]:
        """One ``event`` message from every worker; progress messages are kept on the side."""
        got: dict[int, dict[str, Any]] = {}
        deadline = time.monotonic() + timeout
        next_tick = time.monotonic() + 1.0
        while len(got) < len(self.pipes):
            now = time.monotonic()
            if now > deadline:
                raise TimeoutError(f"workers did not report {event!r} within {timeout:.0f}s")
            if tick is not None and now >= next_tick:
                tick()
                next_tick = now + 1.0
            for i, proc in enumerate(self.procs):
                if not proc.is_alive() and i not in got:
                    raise RuntimeError(f"generator process {i} died (exit {proc.exitcode})")
            for pipe in wait(self.pipes, timeout=0.2):
                assert isinstance(pipe, Connection)
                i = self.pipes.index(pipe)
                msg = pipe.recv()
                if msg["ev"] == "progress":
                    self.progress[i] = msg
                elif msg["ev"] == event:
                    got[i] = msg
        return [got[i] for i in range(len(self.pipes))]

    def pump(
        self,
        seconds: float,
        tick: Callable[[], None] | None = None,
        until: Callable[[], bool] | None = None,
    ) -> None:
        """Absorb progress messages for up to ``seconds`` (or until ``until()`` is true)."""
        deadline = time.monotonic() + seconds
        next_tick = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            if until is not None and until():
                return
            for pipe in wait(self.pipes, timeout=0.1):
                assert isinstance(pipe, Connection)
                msg = pipe.recv()
                if msg["ev"] == "progress":
                    self.progress[self.pipes.index(pipe)] = msg
            if tick is not None and time.monotonic() >= next_tick:
                tick()
                next_tick = time.monotonic() + 1.0

    def total(self, key: str) -> int:
        return sum(int(p.get(key, 0)) for p in self.progress)

    def close(self) -> None:
        for pipe in self.pipes:
            try:
                pipe.send({"cmd": "close"})
            except (BrokenPipeError, OSError):
                pass
        for proc in self.procs:
            proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join(2)
