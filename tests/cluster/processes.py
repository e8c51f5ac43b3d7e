"""Real ``tandem serve`` node processes for cluster tests, on free loopback ports.

Each node runs ``python -m runtime.cli serve`` with this interpreter from the
repository root (so the code under test, not an installed copy, is what runs),
configured through ``TANDEM_*`` environment variables. :func:`open_node_processes`
starts them, waits for ``/readyz``, and kills every child in its ``finally``
(SIGKILL: a test that failed must not leave servers behind). Output goes to a
log file per node, printed when a test fails to start a node.

Also here: a minimal HTTP GET (no client library needed), a readiness probe and a
free-port finder.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
import trio

from tests.cluster.helpers import SECRET

REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the OS's pick)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def http_get(port: int, path: str, *, within: float = 2.0) -> tuple[int, Any]:
    """GET ``path`` on 127.0.0.1:``port``; (status, decoded JSON body or raw bytes)."""
    with trio.fail_after(within):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
            await stream.send_all(request.encode())
            data = b""
            while chunk := await stream.receive_some(65536):
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    try:
        return status, orjson.loads(body)
    except orjson.JSONDecodeError:
        return status, body


async def is_ready(port: int) -> bool:
    """Whether ``/readyz`` on 127.0.0.1:``port`` answers 200 now (False: not listening yet)."""
    try:
        status, _ = await http_get(port, "/readyz", within=1.0)
    except (OSError, trio.TooSlowError, ValueError, IndexError):
        return False
    return status == 200


class NodeProcess:
    """One ``tandem serve`` child process."""

    def __init__(self, name: str, env: Mapping[str, str], log_dir: Path) -> None:
        self.name = name
        self.port = int(env["TANDEM_PORT"])
        self.env = dict(env)
        self.log_path = log_dir / f"{name}.log"
        self.process: trio.Process | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = await trio.lowlevel.open_process(
                [sys.executable, "-m", "runtime.cli", "serve"],
                cwd=REPO_ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    async def wait_ready(self, within: float = 30.0) -> None:
        """Poll /readyz until it answers 200 (or fail with the node's log)."""
        with trio.move_on_after(within):
            while True:
                if not self.running:
                    raise RuntimeError(f"{self.name} exited early:\n{self.log()}")
                if await is_ready(self.port):
                    return
                await trio.sleep(0.05)
        raise RuntimeError(f"{self.name} not ready within {within} s:\n{self.log()}")

    def kill(self) -> None:
        """SIGKILL: no goodbye to clients, Redis or PostgreSQL."""
        if self.running:
            os.kill(self.pid, signal.SIGKILL)

    async def reap(self) -> None:
        if self.process is not None:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await self.process.wait()

    async def status(self) -> dict[str, Any]:
        status, body = await http_get(self.port, "/status")
        assert status == 200, body
        return dict(body)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return "(no log)"


def node_env(port: int, **settings: Any) -> dict[str, str]:
    """The environment of a node: the test's settings as ``TANDEM_<NAME>`` variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TANDEM_")}
    env.update(
        {
            "TANDEM_HOST": "127.0.0.1",
            "TANDEM_PORT": str(port),
            "TANDEM_PROFILE": "dev",
            "TANDEM_JWT_SECRET": SECRET,
            "TANDEM_LOG_LEVEL": "info",
        }
    )
    for name, value in settings.items():
        env[f"TANDEM_{name.upper()}"] = str(value)
    return env


def schema_url(database_url: str, schema: str) -> str:
    """``database_url`` with its connections in ``schema`` (a libpq ``options`` parameter)."""
    separator = "&" if "?" in database_url else "?"
    return f"{database_url}{separator}options=-c%20search_path%3D{schema}"


@asynccontextmanager
async def open_node_processes(n: int, **settings: Any) -> AsyncIterator[list[NodeProcess]]:
    """``n`` node processes with ``settings`` (e.g. redis_url=…), ready; all killed after."""
    with tempfile.TemporaryDirectory(prefix="tandem-nodes-") as tmp:
        log_dir = Path(tmp)
        nodes = [
            NodeProcess(
                f"node{i}",
                node_env(free_port(), data_dir=log_dir / f"data{i}", **settings),
                log_dir,
            )
            for i in range(n)
        ]
        try:
            for node in nodes:
                await node.start()
            async with trio.open_nursery() as nursery:
                for node in nodes:
                    nursery.start_soon(node.wait_ready)
            yield nodes
        finally:
            for node in nodes:
                node.kill()
            for node in nodes:
                await node.reap()


class RedisServer:
    """A private ``redis-server`` on a free port, to kill and restart (no persistence)."""

    def __init__(self, port: int | None = None) -> None:
        self.port = free_port() if port is None else port
        self.process: trio.Process | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        """Start it and wait until it accepts connections."""
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        argv += ["--save", "", "--appendonly", "no", "--daemonize", "no"]
        self.process = await trio.lowlevel.open_process(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        with trio.fail_after(10):
            while True:
                try:
                    stream = await trio.open_tcp_stream("127.0.0.1", self.port)
                except OSError:
                    await trio.sleep(0.02)
                    continue
                async with stream:
                    await stream.send_all(b"PING\r\n")
                    if (await stream.receive_some(64)).startswith(b"+PONG"):
                        return

    async def kill(self) -> None:
        """SIGKILL and reap: everything it held (leases, subscriptions) is gone."""
        if self.process is not None and self.process.returncode is None:
            os.kill(self.process.pid, signal.SIGKILL)
        if self.process is not None:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await self.process.wait()


@asynccontextmanager
async def open_redis_server() -> AsyncIterator[RedisServer]:
    server = RedisServer()
    try:
        await server.start()
        yield server
    finally:
        await server.kill()
