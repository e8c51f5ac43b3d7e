"""A former owner's late answers do not reach a relay's members; a lost lease loses no request.

Real Redis (per-test prefix), real PostgreSQL, in-process nodes, bounded real time.
"""

from __future__ import annotations

from typing import Any

import orjson
import redis
import trio

from runtime.app import Stores
from runtime.cluster.bus import envelope
from tests.cluster.helpers import cluster_sessions, open_nodes
from tests.e2e.conftest import Inbox


async def test_a_relay_drops_joined_and_lost_from_a_node_it_does_not_follow(
    redis_url: str, redis_prefix: str, pg_stores: Stores
) -> None:
    async with open_nodes(2, redis_url, redis_prefix, stores=pg_stores) as (a, b):
        async with (
            a.websocket(token=a.token("ann")) as wa,
            b.websocket(token=b.token("bob")) as wb,
        ):
            ann, bob = Inbox(wa), Inbox(wb)
            with trio.fail_after(10):
                assert (await ann.request(type="session:join", sessionId="doc"))["seq"] == 0
                assert (await bob.request(type="session:join", sessionId="doc"))["seq"] == 0
                await ann.request(type="event:publish", sessionId="doc", name="n", data=1)
                await bob.events("doc", 1)
            relay = cluster_sessions(b)
            assert relay.relays["doc"].owner == a.node.node_id
            (conn_id,) = b.node.connections
            # What a node that owned "doc" before would send: the answer to a join
            # forwarded to it, and a "restart" when it let go of the session.
            former = {"c": conn_id, "o": "former-owner"}
            joined = {"type": "session:joined", "sessionId": "doc", "seq": 0, "participants": []}
            relay.bus.publish(relay.channel, envelope({**former, "t": "msg"}, orjson.dumps(joined)))
            relay.bus.publish(
                relay.channel, envelope({**former, "t": "lost", "s": "doc", "r": "restart"})
            )
            with trio.fail_after(10):
                await ann.request(type="event:publish", sessionId="doc", name="n", data=2)
                # Redis delivers one connection's messages in order: the fakes came first.
                got = await bob.next()
            assert (got["type"], got.get("seq")) == ("event", 2), got


async def test_an_owner_that_loses_its_lease_keeps_reading_its_mailbox(
    redis_url: str, redis_prefix: str, pg_stores: Stores
) -> None:
    async with open_nodes(2, redis_url, redis_prefix, stores=pg_stores, session_lease=1.0) as (
        a,
        b,
    ):
        async with (
            a.websocket(token=a.token("ann")) as wa,
            b.websocket(token=b.token("bob")) as wb,
        ):
            ann, bob = Inbox(wa), Inbox(wb)
            with trio.fail_after(10):
                await ann.request(type="session:join", sessionId="doc")
                await bob.request(type="session:join", sessionId="doc")
            owner_key = cluster_sessions(a).owner_key("doc")
            client = redis.Redis.from_url(redis_url)
            try:
                # The lease vanishes (as when Redis restarts empty); b takes it first.
                await trio.to_thread.run_sync(client.delete, owner_key)
                await trio.to_thread.run_sync(
                    lambda: client.set(owner_key, b.node.node_id, px=1000)
                )
            finally:
                client.close()
            with trio.fail_after(10):
                left = await ann.next_of("session:left")  # a noticed at its next renewal
                assert left["reason"] == "restart", left
                # a's mailbox is still read: the rejoin and the publish are answered
                # (through b, the owner now) instead of waiting forever. If b has not
                # noticed yet that the lease is its own, it bounces the join with another
                # `restart`, and a client rejoins, as the Python and browser clients do.
                joined = await rejoin(ann)
                assert joined["type"] == "session:joined", joined
                ack = await ann.request(type="event:publish", sessionId="doc", name="n", data=1)
                assert ack["type"] == "event:ack", ack
            assert cluster_sessions(a).relays["doc"].owner == b.node.node_id


async def rejoin(inbox: Inbox) -> dict[str, Any]:
    """Join "doc" again until answered, rejoining on each `restart` as a client does."""
    while True:
        ref = f"j{id(inbox)}-{trio.current_time()}"
        await inbox.send(type="session:join", sessionId="doc", since=0, ref=ref)
        while True:
            reply = await inbox.next()
            if reply.get("ref") == ref:
                return reply
            if reply["type"] == "session:left" and reply.get("reason") == "restart":
                break  # bounced: the new owner had not taken the session yet
