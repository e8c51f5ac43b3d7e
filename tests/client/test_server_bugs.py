"""Server bugs the client exposed, fixed since: kept as regression tests."""

from __future__ import annotations

import functools
from collections.abc import Callable

import pytest
import trio

import runtime.node
from actors.session.actor import SessionConfig
from client import open_tandem_client
from runtime.testing import open_test_server
from tests.client.conftest import Connect
from tests.client.helpers import collect_events


async def test_resume_beyond_replay_limit_loses_no_event_silently(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        runtime.node, "SessionConfig", functools.partial(SessionConfig, replay_limit=3)
    )
    async with open_test_server(memory_retention=2) as server:
        async with open_tandem_client(
            connect=lambda: server.websocket(token=server.token("writer"))
        ) as writer:
            await writer.join("doc")
            for n in range(10):
                await writer.publish("doc", "edit", n)
        async with open_tandem_client(
            connect=lambda: server.websocket(token=server.token("reader"))
        ) as reader:
            await reader.join("doc", since=0)
            seen: list[int] = []
            with trio.move_on_after(5):
                async for msg in reader.messages():
                    if msg["type"] == "session:reset":
                        return  # acceptable: the client is told to reload
                    if msg["type"] == "event":
                        seen.append(msg["seq"])
                        if len(seen) == 10:
                            break
            # Every event, or a reset: never a silent gap.
            assert seen == list(range(1, 11))


async def test_ephemeral_events_are_delivered_in_stream_order(
    autojump_clock: trio.testing.MockClock, connect_as: Callable[[str], Connect]
) -> None:
    async with (
        open_tandem_client(connect=connect_as("alice")) as alice,
        open_tandem_client(connect=connect_as("bob")) as bob,
    ):
        await alice.join("doc")
        await bob.join("doc")
        await alice.publish("doc", "a", 1)
        await alice.publish("doc", "cursor", {"x": 1}, durable=False)
        last = await alice.publish("doc", "b", 2)
        events = await collect_events(bob, "doc", 3)
        assert [e["name"] for e in events] == ["a", "cursor", "b"]
        assert bob.last_seq("doc") == last


async def test_a_late_session_joined_does_not_deliver_events_twice(
    autojump_clock: trio.testing.MockClock, connect_as: Callable[[str], Connect]
) -> None:
    # After a cluster owner change a member can have two rejoins in flight; the first,
    # superseded, may still be answered (by the former owner). Its session:joined
    # arrives with no request waiting and must not take last_seq back: the replay
    # after it would deliver events a second time (test_redis_restart saw that).
    async with open_tandem_client(connect=connect_as("alice")) as alice:
        await alice.join("doc")
        for n in range(3):
            await alice.publish("doc", "edit", n)
        assert [e["seq"] for e in await collect_events(alice, "doc", 3)] == [1, 2, 3]
        await alice._dispatch(
            {"type": "session:joined", "sessionId": "doc", "seq": 1, "participants": []}
        )
        replayed = {"type": "event", "sessionId": "doc", "seq": 2, "name": "edit", "data": 1}
        await alice._dispatch(replayed)
        assert alice.last_seq("doc") == 3
        await alice.publish("doc", "edit", 3)
        assert [e["seq"] for e in await collect_events(alice, "doc", 1)] == [4]
