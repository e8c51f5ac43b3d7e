"""``tandem serve --workers N``: N server processes on one port, and the parent that runs them.

Each worker is an ordinary ``tandem serve`` process (``python -m runtime.cli
serve``) and an ordinary node of a cluster: the workers share one Redis prefix
and one PostgreSQL, so cluster mode (``runtime/cluster/``) gives them one order
per session, shared presence and shared rate limits. That is why more than one
worker needs ``TANDEM_REDIS_URL`` (``runtime/config.py`` ``validate``).

The port is shared with ``SO_REUSEPORT``: every worker listens on it and the
kernel spreads new connections among them. The parent binds the port first
(without listening, so it never receives a connection): with port 0 that picks
the port every worker then uses, and it keeps the port ours while a worker
restarts.

The parent is a one-for-one supervisor over processes, in the manner of
``runtime/supervisor.py``: a worker that exits without being asked to is
restarted after a short backoff; more than ``max_restarts`` exits of one worker
within ``period`` seconds means restarting does not help, so every worker is
stopped and the parent exits 1. Stopping (SIGINT or SIGTERM to the parent, or
giving up) is cancellation: each worker's ``trio.run_process`` then sends it
SIGTERM, waits for its graceful shutdown up to ``stop_timeout``, then SIGKILLs
it. Workers run in their own session so a terminal's Ctrl-C reaches only the
parent, which forwards it; a worker whose parent is gone (SIGKILLed) notices
within a second and shuts down (:func:`wait_orphaned`).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from functools import partial
from typing import Any

import attrs
import trio

from runtime.app import open_database_url, token_verifier
from runtime.config import Settings, settings_env

logger = logging.getLogger(__name__)

WORKER_ENV = "TANDEM_WORKER"  # "<index>:<parent pid>", set by the parent in each worker
WORKER_COMMAND = (sys.executable, "-m", "runtime.cli", "serve")
STOP_MARGIN = 5.0  # seconds past shutdown_timeout before a worker is SIGKILLed


# -- the worker's side ------------------------------------------------------------


@attrs.frozen
class WorkerIdentity:
    """Who this process is in a pool; None outside one (:func:`current_worker`)."""

    index: int
    parent_pid: int

    def status(self) -> dict[str, Any]:
        """The ``worker`` section of ``/status``: tells an operator which process answered."""
        return {"index": self.index, "pid": os.getpid(), "parent": self.parent_pid}


def current_worker(env: Mapping[str, str] | None = None) -> WorkerIdentity | None:
    raw = (os.environ if env is None else env).get(WORKER_ENV)
    if not raw:
        return None
    index, _, parent = raw.partition(":")
    return WorkerIdentity(int(index), int(parent))


async def wait_orphaned(worker: WorkerIdentity, *, poll: float = 1.0) -> None:
    """Return once the parent is gone (a SIGKILLed parent cannot forward a signal).

    Polling ``getppid`` rather than ``PR_SET_PDEATHSIG``: trio forks from a worker
    thread, and the death signal follows the thread, not the process.
    """
    while True:  # nothing to wait on but the clock: no event says "the parent died"
        if os.getppid() != worker.parent_pid:
            return
        await trio.sleep(poll)


# -- the parent's side ------------------------------------------------------------


def reserve_port(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` with SO_REUSEPORT, not listening.

    Workers bind the same port beside it. Port 0 becomes a concrete free port.
    """
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def worker_settings(settings: Settings, index: int, port: int, database_url: str) -> Settings:
    """What worker ``index`` runs with: the parent's settings, one port, one database.

    A fixed internal port becomes ``internal_port + index`` (those ports are not
    shared: each worker's /status is its own); 0 stays 0 (each picks one).
    """
    internal = settings.internal_port
    return attrs.evolve(
        settings,
        workers=1,
        port=port,
        reuse_port=True,
        database_url=database_url,
        internal_port=internal + index if internal else internal,
    )


class WorkerPool:
    """Run ``count`` processes, restart those that exit, stop them all on :meth:`stop`."""

    def __init__(
        self,
        count: int,
        env_for: Callable[[int], Mapping[str, str]],
        *,
        command: Sequence[str] = WORKER_COMMAND,
        stop_timeout: float = 15.0,
        max_restarts: int = 5,
        period: float = 60.0,
        backoff_initial: float = 0.1,
        backoff_max: float = 2.0,
    ) -> None:
        self.count = count
        self.env_for = env_for
        self.command = list(command)
        self.stop_timeout = stop_timeout
        self.max_restarts = max_restarts
        self.period = period
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.pids: dict[int, int] = {}  # worker index -> pid of its current process
        self.starts = 0  # processes started, restarts included
        self.gave_up = False
        self._scope = trio.CancelScope()

    def stop(self) -> None:
        """Stop every worker gracefully; :meth:`run` returns once they are gone."""
        self._scope.cancel()

    async def run(self) -> int:
        """Until stopped: 0 after :meth:`stop`, 1 after giving up on a worker."""
        with self._scope:
            async with trio.open_nursery() as nursery:
                for index in range(self.count):
                    nursery.start_soon(self._keep_running, index)
        return 1 if self.gave_up else 0

    async def _keep_running(self, index: int) -> None:
        exits: deque[float] = deque()
        while True:
            code = await self._run_once(index)
            now = trio.current_time()
            exits.append(now)
            while exits[0] < now - self.period:
                exits.popleft()
            if len(exits) > self.max_restarts:
                logger.error(
                    "worker %d exited %d times within %ss (last: %s): stopping all workers",
                    index,
                    len(exits),
                    self.period,
                    _describe(code),
                )
                self.gave_up = True
                self._scope.cancel()
                return
            delay = min(self.backoff_max, self.backoff_initial * 2.0 ** (len(exits) - 1))
            logger.warning(
                "worker %d exited unexpectedly (%s); restarting in %.1fs",
                index,
                _describe(code),
                delay,
            )
            await trio.sleep(delay)

    async def _run_once(self, index: int) -> int:
        """Run worker ``index`` until it exits; its exit code. Cancelled: stop it first."""
        async with trio.open_nursery() as nursery:
            process: trio.Process = await nursery.start(
                partial(
                    trio.run_process,
                    self.command,
                    env=dict(self.env_for(index)),
                    stdin=subprocess.DEVNULL,
                    check=False,
                    start_new_session=True,  # Ctrl-C reaches the parent only; it forwards
                    deliver_cancel=self._terminate,
                )
            )
            self.starts += 1
            self.pids[index] = process.pid
            logger.info("worker %d started (pid %d)", index, process.pid)
        self.pids.pop(index, None)
        assert process.returncode is not None
        return process.returncode

    async def _terminate(self, process: trio.Process) -> None:
        """How a cancelled ``run_process`` stops a worker; cancelled once it has exited."""
        process.send_signal(signal.SIGTERM)  # the worker drains its connections
        await trio.sleep(self.stop_timeout)
        logger.warning(
            "worker pid %d still running after %ss: SIGKILL", process.pid, self.stop_timeout
        )
        process.kill()


def _describe(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


async def serve_workers(settings: Settings) -> int:
    """The parent of ``tandem serve --workers N``; its exit code."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        try:
            holder = reserve_port(settings.host, settings.port)
        except OSError as exc:
            logger.error("cannot bind %s:%s: %s", settings.host, settings.port, exc)
            return 1
        with holder:
            port = holder.getsockname()[1]
            token_verifier(settings)  # makes the dev secret file once, not racing N workers
            async with open_database_url(settings) as database_url:  # one embedded server
                parent = os.getpid()

                def env_for(index: int) -> dict[str, str]:
                    child = worker_settings(settings, index, port, database_url)
                    return {**os.environ, **settings_env(child), WORKER_ENV: f"{index}:{parent}"}

                pool = WorkerPool(
                    settings.workers,
                    env_for,
                    stop_timeout=settings.shutdown_timeout + STOP_MARGIN,
                )
                logger.info(
                    "tandem %s profile: %d workers listening on ws://%s:%s/",
                    settings.profile,
                    settings.workers,
                    settings.host,
                    port,
                )
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_stop_on_signal, signals, pool)
                    code = await pool.run()
                    nursery.cancel_scope.cancel()  # pool gave up: no signal to wait for
                logger.info("all workers stopped")
                return code


async def _stop_on_signal(signals: AsyncIterator[int], pool: WorkerPool) -> None:
    async for signum in signals:
        logger.info("signal %s: stopping %d workers gracefully", signum, pool.count)
        pool.stop()
        return
