"""A relay that stops (crash, or cancelled when its node's sessions supervisor escalates)
tells its members and the joins it was forwarding, and the owner forgets them.

Its members get ``session:left`` ``restart`` (they rejoin), the joins it forwarded
and was waiting on get ``error internal`` with their ``ref``, nobody stays in
``conn.joined`` for the session on the relay node, and the owner drops them from
presence: without a word from the relay they would stay tracked there as ghosts
(their node is alive, so the node-lease cleanup never takes them).
Real time, real Redis (per-test prefix): every wait is bounded by trio.fail_after.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any

import pytest
import trio

from runtime.app import memory_stores
from runtime.testing.server import TestServer
from tests.client.helpers import wait_until
from tests.client.test_lost_joins import connect, escalate_sessions
from tests.cluster.conftest import kill_clients
from tests.cluster.helpers import cluster_sessions, open_nodes


async def participants(server: TestServer, session_id: str) -> set[str]:
    return {p["userId"] for p in await server.node.participants(session_id)}


async def wait_for_participants(server: TestServer, session_id: str, users: set[str]) -> None:
    # Presence has no event to wait on from here: poll the owner's roster.
    while await participants(server, session_id) != users:  # noqa: ASYNC110
        await trio.sleep(0.02)


@pytest.mark.parametrize("how", ["escalation", "crash"])
async def test_a_stopped_relay_tells_its_members_and_joins_and_the_owner_drops_them(
    redis_url: str, redis_prefix: str, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    stores = memory_stores()
    # memory_retention=1: a join from 0 reads the store on the owner (held below).
    async with open_nodes(2, redis_url, redis_prefix, stores=stores, memory_retention=1) as (a, b):
        with trio.fail_after(10):
            for n in range(2):  # node a spawns "other" first: it owns it, b relays
                await a.node.append_event("other", "note", {"n": n}, "system")
        real_read = a.node.store.read_since
        reading = trio.Event()
        hold = trio.Event()  # carol's replay read on the owner waits until the relay stopped

        async def read_since(session_id: str, *args: Any) -> Any:
            if session_id == "other":
                reading.set()
                await hold.wait()
            return await real_read(session_id, *args)

        monkeypatch.setattr(a.node.store, "read_since", read_since)
        async with AsyncExitStack() as stack:
            bob, bob_id = await connect(b, stack, "bob")
            carol, carol_id = await connect(b, stack, "carol")
            with trio.fail_after(10):
                joined = await bob.request(type="session:join", sessionId="other")
                assert joined["type"] == "session:joined"
                await wait_for_participants(a, "other", {"bob"})
                # Carol's join is forwarded and the owner is handling it: b waits on it.
                await carol.send(type="session:join", sessionId="other", since=0, ref="jc")
                await reading.wait()
            relay = cluster_sessions(b).relays["other"]
            assert bob_id in relay.members and carol_id in relay.joining

            with trio.fail_after(20):
                if how == "escalation":
                    await escalate_sessions(b)  # crashes b's own "doc" until b gives up
                else:
                    assert await b.node.inject_failure("session:other")
                left = await bob.next_of("session:left")
                assert (left["sessionId"], left["reason"]) == ("other", "restart")
                refused = await carol.next_of("error", "session:joined")
                assert (refused["code"], refused["ref"], refused["sessionId"]) == (
                    "internal",
                    "jc",
                    "other",
                )
            for conn_id in (bob_id, carol_id):
                assert "other" not in b.node.connections[conn_id].joined

            # The owner finishes carol's join now (b does not count her joined after it), then
            # hears that both left: neither stays tracked in presence.
            hold.set()
            with trio.fail_after(5):
                await wait_for_participants(a, "other", set())
                late = await carol.quiet(0.5)  # the owner's answer has come and gone
            assert "other" not in b.node.connections[carol_id].joined
            # ...and none of it reached her: neither the answer nor the join's replay.
            assert [m for m in late if m.get("sessionId") == "other"] == []

            # A rejoin works (through a new relay), and is tracked anew.
            with trio.fail_after(20):
                while True:
                    joined = await bob.request(type="session:join", sessionId="other", since=2)
                    if joined["type"] == "session:joined":
                        break
                    assert joined["code"] == "internal"  # b's sessions were not back yet
                    await trio.sleep(0.1)
                assert [p["userId"] for p in joined["participants"]] == []  # carol: no ghost
                await wait_for_participants(a, "other", {"bob"})
                ack = await bob.request(type="event:publish", sessionId="other", name="x")
                assert (ack["type"], ack["seq"]) == ("event:ack", 3)
                await wait_until(lambda: "other" in cluster_sessions(b).relays, limit=5)


async def test_after_a_redis_reconnect_the_owner_drops_the_members_told_to_rejoin(
    redis_url: str, redis_prefix: str
) -> None:
    async with open_nodes(2, redis_url, redis_prefix, stores=memory_stores()) as (a, b):
        with trio.fail_after(10):
            await a.node.append_event("other", "note", {}, "system")  # a owns it, b relays
        async with AsyncExitStack() as stack:
            bob, bob_id = await connect(b, stack, "bob")
            with trio.fail_after(10):
                joined = await bob.request(type="session:join", sessionId="other")
                assert joined["type"] == "session:joined"
                await wait_for_participants(a, "other", {"bob"})

            # b's Redis connections drop: frames may have been missed, so its relay tells
            # bob to rejoin. He is no longer joined on b, so the owner must not track him.
            assert kill_clients(redis_url, b.node.status()["redis"]["client_name"]) >= 2
            with trio.fail_after(10):
                left = await bob.next_of("session:left")
                assert (left["sessionId"], left["reason"]) == ("other", "restart")
                await wait_for_participants(a, "other", set())
            assert "other" not in b.node.connections[bob_id].joined

            with trio.fail_after(10):  # a rejoin is tracked anew
                joined = await bob.request(type="session:join", sessionId="other", since=1)
                assert joined["type"] == "session:joined"
                await wait_for_participants(a, "other", {"bob"})
