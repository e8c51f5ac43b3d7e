"""Reconnect and resume: drops, slow consumers, session restarts, terminal close codes."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
from trio_websocket import WebSocketConnection

from client import ConnectionEnded, Disconnected, TandemClient, TandemError, open_tandem_client
from runtime.gateways.store import StoredEvent
from runtime.testing import open_test_server
from runtime.testing.server import TestServer
from tests.client.conftest import Connect
from tests.client.helpers import collect_events, next_message, wait_until


def abort_connection(server: TestServer, client: TandemClient, code: int) -> None:
    """Close the client's connection from the server side, as the server would."""
    assert client.connection_id is not None
    server.node.connections[client.connection_id].abort(code, "test")


async def publish_steadily(client: TandemClient, session_id: str, count: int) -> None:
    for n in range(count):
        await client.publish(session_id, "tick", {"n": n})
        await trio.sleep(0.01)


async def publish_politely(client: TandemClient, session_id: str, data: object) -> int:
    """Publish, waiting out ``rate_limited`` refusals as a well-behaved client would."""
    while True:
        try:
            return await client.publish(session_id, "edit", data)
        except TandemError as exc:
            if exc.code != "rate_limited":
                raise
            await trio.sleep(exc.retry_after or 0.1)


async def test_resume_after_drop_delivers_every_event_once_in_order(
    autojump_clock: trio.testing.MockClock,
    server: TestServer,
    connect_as: Callable[[str], Connect],
    rng: random.Random,
) -> None:
    async with (
        open_tandem_client(connect=connect_as("writer")) as writer,
        open_tandem_client(connect=connect_as("reader"), rng=rng) as reader,
    ):
        await writer.join("doc")
        await reader.join("doc")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(publish_steadily, writer, "doc", 100)
            first = await collect_events(reader, "doc", 10)
            for _ in range(3):
                old_id = reader.connection_id
                abort_connection(server, reader, 4000)
                await trio.sleep(0.05)  # the writer keeps publishing meanwhile
                await wait_until(
                    lambda old=old_id: reader.connected and reader.connection_id != old
                )
            rest = await collect_events(reader, "doc", 90)
        assert [e["seq"] for e in first + rest] == list(range(1, 101))
        assert [e["data"]["n"] for e in first + rest] == list(range(100))
        assert reader.reconnects == 3
        assert reader.last_seq("doc") == 100
        assert reader.sessions == frozenset({"doc"})


async def test_requests_wait_for_the_reconnect(
    autojump_clock: trio.testing.MockClock,
    server: TestServer,
    connect_as: Callable[[str], Connect],
) -> None:
    async with open_tandem_client(connect=connect_as("alice")) as client:
        await client.join("doc")
        abort_connection(server, client, 1011)
        await wait_until(lambda: not client.connected)
        # Issued while the client is reconnecting: sent once it is back (and rejoined).
        assert await client.publish("doc", "edit", 1) == 1
        assert client.reconnects == 1


async def test_in_flight_publish_fails_with_disconnected(
    server: TestServer, connect_as: Callable[[str], Connect], monkeypatch: pytest.MonkeyPatch
) -> None:
    async with open_tandem_client(connect=connect_as("alice")) as client:
        await client.join("doc")
        store: Any = server.node.store
        original_append = store.append
        gate, waiting = trio.Event(), trio.Event()

        async def gated_append(events: Sequence[StoredEvent]) -> None:
            waiting.set()  # keeps the ack in flight until the test opens the gate
            await gate.wait()
            await original_append(events)

        monkeypatch.setattr(store, "append", gated_append)
        failures: list[BaseException] = []

        async def publish() -> None:
            try:
                await client.publish("doc", "edit", 1)
            except Disconnected as exc:
                failures.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(publish)
            await waiting.wait()
            abort_connection(server, client, 4000)
            gate.set()
        assert len(failures) == 1
        assert not isinstance(failures[0], ConnectionEnded)
        # At-most-once: the event was stored although its ack never came.
        await next_message(client, "session:joined")
        assert await client.publish("doc", "edit", 2) == 2


async def test_no_reconnect_after_4403(
    autojump_clock: trio.testing.MockClock,
    server: TestServer,
    connect_as: Callable[[str], Connect],
) -> None:
    async with open_tandem_client(connect=connect_as("alice")) as client:
        await client.join("doc")
        await client.publish("doc", "edit", 1)
        opened = server.node.gateway.connections_opened
        abort_connection(server, client, 4403)
        with pytest.raises(ConnectionEnded) as info:
            async for _ in client.messages():
                pass  # messages received before the close are still delivered
        assert info.value.code == 4403
        with pytest.raises(ConnectionEnded):
            await client.publish("doc", "edit", 2)
        await trio.sleep(60)
        assert server.node.gateway.connections_opened == opened
        assert not client.connected


async def test_reconnect_false_ends_on_any_drop(
    autojump_clock: trio.testing.MockClock,
    server: TestServer,
    connect_as: Callable[[str], Connect],
) -> None:
    async with open_tandem_client(connect=connect_as("alice"), reconnect=False) as client:
        abort_connection(server, client, 4000)
        with pytest.raises(ConnectionEnded) as info:
            await next_message(client, "never")
        assert info.value.code == 4000


async def test_invalid_token_fails_on_entry(
    autojump_clock: trio.testing.MockClock, server: TestServer
) -> None:
    with pytest.raises(ConnectionEnded) as info:
        async with open_tandem_client(connect=lambda: server.websocket(token="not-a-jwt")):
            pytest.fail("entered with a bad token")
    assert info.value.code == 4402


async def test_in_band_auth(autojump_clock: trio.testing.MockClock, server: TestServer) -> None:
    async with open_tandem_client(connect=server.websocket, token=server.token("carol")) as c:
        assert c.user_id == "carol"
        await c.join("doc")
        assert await c.publish("doc", "edit", {}) == 1


async def test_session_restart_rejoins_transparently(
    autojump_clock: trio.testing.MockClock,
    server: TestServer,
    connect_as: Callable[[str], Connect],
) -> None:
    async with (
        open_tandem_client(connect=connect_as("writer")) as writer,
        open_tandem_client(connect=connect_as("reader")) as reader,
    ):
        await writer.join("doc")
        await reader.join("doc")
        for n in range(5):
            await writer.publish("doc", "edit", n)
        before = await collect_events(reader, "doc", 5)
        assert await server.node.inject_failure("session:doc")
        # Both clients rejoin by themselves; nothing for the application to do.
        await next_message(reader, "session:joined", lambda m: m["seq"] == 5)
        await next_message(writer, "session:joined", lambda m: m["seq"] == 5)
        for n in range(5, 10):
            await writer.publish("doc", "edit", n)
        after = await collect_events(reader, "doc", 5)
        assert [e["seq"] for e in before + after] == list(range(1, 11))
        assert [e["data"] for e in before + after] == list(range(10))
        assert reader.reconnects == 0
        assert reader.sessions == frozenset({"doc"})


async def test_slow_consumer_is_disconnected_then_resumes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_test_server(outbound_limit=16 * 1024) as server:
        token_w, token_r = server.token("writer"), server.token("reader")

        @asynccontextmanager
        async def small_pipe() -> AsyncIterator[WebSocketConnection]:
            async with server.websocket(token=token_r, capacity=8 * 1024) as ws:
                yield ws

        async with (
            open_tandem_client(connect=lambda: server.websocket(token=token_w)) as writer,
            open_tandem_client(connect=small_pipe, inbox_size=4) as reader,
        ):
            await writer.join("doc")
            await reader.join("doc")
            payload = "x" * 1000
            for n in range(200):  # ~200 kB while the reader reads nothing
                await publish_politely(writer, "doc", {"n": n, "pad": payload})
            await trio.sleep(60)
            events = await collect_events(reader, "doc", 200)
            assert [e["data"]["n"] for e in events] == list(range(200))
            assert reader.reconnects >= 1
