"""Client basics against the real server, in-process, on the autojump clock."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import trio

from client import JoinedSession, TandemError, open_tandem_client
from runtime.testing.server import TestServer
from tests.client.conftest import Connect
from tests.client.helpers import collect_events, next_message


async def test_welcome_identity(
    autojump_clock: trio.testing.MockClock, connect_as: Callable[[str], Connect]
) -> None:
    async with open_tandem_client(connect=connect_as("alice")) as client:
        assert client.user_id == "alice"
        assert client.connection_id is not None
        assert client.connected


async def test_join_publish_ack_seq(
    autojump_clock: trio.testing.MockClock, connect_as: Callable[[str], Connect]
) -> None:
    async with open_tandem_client(connect=connect_as("alice")) as client:
        joined = await client.join("doc")
        assert joined == JoinedSession("doc", 0, [], {})
        assert client.last_seq("doc") == 0
        seqs = [await client.publish("doc", "edit", {"n": n}) for n in range(3)]
        assert seqs == [1, 2, 3]
        events = await collect_events(client, "doc", 3)
        assert [e["seq"] for e in events] == [1, 2, 3]
        assert [e["data"] for e in events] == [{"n": 0}, {"n": 1}, {"n": 2}]
        assert all(e["userId"] == "alice" for e in events)
        assert client.last_seq("doc") == 3


async def test_join_since_replays_missed_events(
    autojump_clock: trio.testing.MockClock, connect_as: Callable[[str], Connect]
) -> None:
    async with open_tandem_client(connect=connect_as("alice")) as alice:
        await alice.join("doc")
        for n in range(5):
            await alice.publish("doc", "edit", n)
    async with open_tandem_client(connect=connect_as("bob")) as bob:
        joined = await bob.join("doc", since=2)
        assert joined.seq == 5
        events = await collect_events(bob, "doc", 3)
        assert [e["seq"] for e in events] == [3, 4, 5]


async def test_two_clients_see_the_same_order(
    autojump_clock: trio.testing.MockClock, connect_as: Callable[[str], Connect]
) -> None:
    async with (
        open_tandem_client(connect=connect_as("alice")) as alice,
        open_tandem_client(connect=connect_as("bob")) as bob,
    ):
        await alice.join("doc")
        await bob.join("doc")

        async def publish_many(client_name: str, client: object) -> None:
            assert client is alice or client is bob
            for n in range(20):
                await client.publish("doc", "edit", {"by": client_name, "n": n})

        async with trio.open_nursery() as nursery:
            nursery.start_soon(publish_many, "alice", alice)
            nursery.start_soon(publish_many, "bob", bob)
        seen_a = await collect_events(alice, "doc", 40)
        seen_b = await collect_events(bob, "doc", 40)
        assert [e["seq"] for e in seen_a] == list(range(1, 41))
        assert seen_a == seen_b
        for who in ("alice", "bob"):
            mine = [e["data"]["n"] for e in seen_a if e["data"]["by"] == who]
            assert mine == list(range(20))


async def test_presence_updates_arrive(
    autojump_clock: trio.testing.MockClock, connect_as: Callable[[str], Connect]
) -> None:
    async with (
        open_tandem_client(connect=connect_as("alice")) as alice,
        open_tandem_client(connect=connect_as("bob")) as bob,
    ):
        await alice.join("doc")
        joined = await bob.join("doc")
        assert [p["userId"] for p in joined.participants] == ["alice"]
        msg = await next_message(
            alice, "participant:joined", lambda m: m["participant"]["userId"] == "bob"
        )
        assert msg["sessionId"] == "doc"
        await bob.update_presence("doc", {"cursor": [1, 2]})
        change = await next_message(
            alice, "presence", lambda m: any(c["userId"] == "bob" for c in m["changes"])
        )
        assert [c["state"] for c in change["changes"] if c["userId"] == "bob"] == [
            {"cursor": [1, 2]}
        ]
        await bob.leave("doc")
        assert bob.last_seq("doc") is None
        left = await next_message(alice, "participant:left")
        assert left["userId"] == "bob"


async def test_ping(
    autojump_clock: trio.testing.MockClock, connect_as: Callable[[str], Connect]
) -> None:
    async with open_tandem_client(connect=connect_as("alice")) as client:
        rtt = await client.ping()
        assert rtt >= 0.0


async def test_publish_without_join_is_not_joined(
    autojump_clock: trio.testing.MockClock, connect_as: Callable[[str], Connect]
) -> None:
    async with open_tandem_client(connect=connect_as("alice")) as client:
        with pytest.raises(TandemError) as info:
            await client.publish("doc", "edit", {})
        assert info.value.code == "not_joined"
        assert info.value.session_id == "doc"
        with pytest.raises(TandemError) as info:
            await client.update_presence("doc", {"x": 1})
        assert info.value.code == "not_joined"
        # The connection is still usable after an error.
        await client.join("doc")
        assert await client.publish("doc", "edit", {}) == 1


async def test_invalid_request_maps_path(
    autojump_clock: trio.testing.MockClock, connect_as: Callable[[str], Connect]
) -> None:
    async with open_tandem_client(connect=connect_as("alice")) as client:
        with pytest.raises(TandemError) as info:
            await client.join("bad id with spaces")
        assert info.value.code == "invalid_message"
        assert info.value.path is not None


async def test_leave_twice_is_fine(
    autojump_clock: trio.testing.MockClock, connect_as: Callable[[str], Connect]
) -> None:
    async with open_tandem_client(connect=connect_as("alice")) as client:
        await client.join("doc")
        await client.leave("doc")
        await client.leave("doc")
        assert client.sessions == frozenset()


async def test_messages_end_when_client_closes(
    autojump_clock: trio.testing.MockClock, server: TestServer, connect_as: Callable[[str], Connect]
) -> None:
    async with open_tandem_client(connect=connect_as("alice")) as client:
        await client.join("doc")
        await client.publish("doc", "edit", 1)
    received = [m["type"] async for m in client.messages()]
    assert received[0] == "session:joined"
    assert "event" in received


async def test_errors_of_the_block_are_not_wrapped(
    autojump_clock: trio.testing.MockClock, connect_as: Callable[[str], Connect]
) -> None:
    with pytest.raises(KeyError) as info:
        async with open_tandem_client(connect=connect_as("alice")) as client:
            await client.join("doc")
            raise KeyError("mine")
    assert type(info.value) is KeyError
    with pytest.raises(TandemError) as terr:
        async with open_tandem_client(connect=connect_as("alice")) as client:
            await client.publish("nowhere", "edit", 1)
    assert type(terr.value) is TandemError


async def test_cancellation_propagates_and_closes(
    autojump_clock: trio.testing.MockClock, server: TestServer, connect_as: Callable[[str], Connect]
) -> None:
    with trio.move_on_after(5) as scope:
        async with open_tandem_client(connect=connect_as("alice")) as client:
            await client.join("doc")
            await client.ping()
            await trio.sleep_forever()
    assert scope.cancelled_caught
    await trio.sleep(1)
    assert server.node.connections == {}
