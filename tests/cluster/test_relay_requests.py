"""Questions a relay node asks the owner: participants, and server-side appends.

Real time, real Redis (per-test prefix): every wait is bounded by trio.fail_after.
"""

from __future__ import annotations

import pytest
import redis
import trio

from runtime.app import Stores, memory_stores
from runtime.cluster.requests import OwnerUnavailable
from tests.cluster.helpers import cluster_sessions, open_nodes
from tests.e2e.conftest import Inbox


async def _until_present(inbox: Inbox, users: set[str]) -> None:
    seen: set[str] = set()
    while not users <= seen:
        message = await inbox.next_of("participant:joined", "session:joined")
        if message["type"] == "session:joined":
            seen.update(p["userId"] for p in message["participants"])
        else:
            seen.add(message["participant"]["userId"])


async def test_participants_on_a_relay_equal_the_owners(redis_url: str, redis_prefix: str) -> None:
    async with open_nodes(3, redis_url, redis_prefix, stores=memory_stores()) as (a, b, c):
        async with (
            a.websocket(token=a.token("ann")) as wa,
            b.websocket(token=b.token("bob")) as wb,
        ):
            ia, ib = Inbox(wa), Inbox(wb)
            with trio.fail_after(10):
                assert (await ia.request(type="session:join", sessionId="doc"))["type"] == (
                    "session:joined"
                )  # ann's node owns the session
                assert (await ib.request(type="session:join", sessionId="doc"))["type"] == (
                    "session:joined"
                )
                await ib.send(type="presence:update", sessionId="doc", state={"cursor": [1, 2]})
                await _until_present(ia, {"ann", "bob"})
                while True:  # bob's state reached the owner's presence
                    on_owner = await a.node.participants("doc")
                    if any(p.get("state") for p in on_owner):
                        break
                    await trio.sleep(0.02)
                on_relay = await b.node.participants("doc")
                elsewhere = await c.node.participants("doc")  # not live on c at all
                status, body = await b.http("GET", "/v1/sessions/doc/participants")
            assert "doc" in cluster_sessions(b).relays
            assert "doc" not in cluster_sessions(c).relays
            assert sorted(p["userId"] for p in on_owner) == ["ann", "bob"]
            assert on_relay == on_owner
            assert elsewhere == on_owner
            assert status == 200 and body["participants"] == on_owner
            assert cluster_sessions(b).questions.pending == 0
            assert cluster_sessions(c).questions.pending == 0


async def test_append_on_a_relay_takes_a_seq_in_the_one_order(
    redis_url: str, redis_prefix: str, pg_stores: Stores
) -> None:
    async with open_nodes(3, redis_url, redis_prefix, stores=pg_stores) as nodes:
        async with (
            nodes[0].websocket(token=nodes[0].token("u0")) as w0,
            nodes[1].websocket(token=nodes[1].token("u1")) as w1,
            nodes[2].websocket(token=nodes[2].token("u2")) as w2,
        ):
            inboxes = [Inbox(w0), Inbox(w1), Inbox(w2)]
            appended: list[int] = []
            with trio.fail_after(20):
                for inbox in inboxes:  # node 0 owns; 1 and 2 relay
                    joined = await inbox.request(type="session:join", sessionId="doc")
                    assert joined["type"] == "session:joined", joined

                async def publish(inbox: Inbox, who: int) -> None:
                    for i in range(10):
                        await inbox.send(
                            type="event:publish", sessionId="doc", name="n", data=[who, i]
                        )

                async def append(node: int) -> None:  # what the HTTP API / comments do
                    for i in range(5):
                        seq = await nodes[node].node.append_event(
                            "doc", "thread:created", {"n": [node, i]}, "api"
                        )
                        appended.append(seq)

                async with trio.open_nursery() as nursery:
                    for who, inbox in enumerate(inboxes):
                        nursery.start_soon(publish, inbox, who)
                    nursery.start_soon(append, 1)
                    nursery.start_soon(append, 2)
                seen = [await inbox.events("doc", 40) for inbox in inboxes]
            orders = [[(e["seq"], e["name"], e["data"]) for e in events] for events in seen]
            assert orders[0] == orders[1] == orders[2]
            assert [seq for seq, _, _ in orders[0]] == list(range(1, 41))
            by_seq = {seq: (name, data) for seq, name, data in orders[0]}
            assert sorted(appended) == sorted(
                seq for seq, (name, _) in by_seq.items() if name == "thread:created"
            )
            assert len(appended) == 10
            for node in (1, 2):  # each relay's appends in the order it made them
                mine = [by_seq[s][1]["n"] for s in appended if by_seq[s][1]["n"][0] == node]
                assert mine == [[node, i] for i in range(5)]
            stored = await pg_stores.events.read_since("doc", 0, 100)
            assert [(e.seq, e.name) for e in stored] == [(s, n) for s, n, _ in orders[0]]
            for node in nodes[1:]:
                assert cluster_sessions(node).questions.pending == 0


async def test_a_silent_owner_is_an_error_not_an_answer(redis_url: str, redis_prefix: str) -> None:
    # A node id that holds the lease but never answers (it died an instant ago).
    client = redis.Redis.from_url(redis_url)
    try:
        client.set(redis_prefix + "owner:doc", b"ghost", px=60_000)
    finally:
        client.close()
    async with open_nodes(
        1, redis_url, redis_prefix, stores=memory_stores(), mailbox_timeout=0.25
    ) as (b,):
        sessions = cluster_sessions(b)
        assert sessions.request_timeout == 0.5
        with trio.fail_after(5):
            started = trio.current_time()
            with pytest.raises(OwnerUnavailable, match="did not answer"):
                await b.node.append_event("doc", "thread:created", {}, "api")
            took = trio.current_time() - started
            assert "doc" in sessions.relays  # it asked as a relay
            with pytest.raises(OwnerUnavailable):
                await b.node.participants("doc")
            status, body = await b.http("GET", "/v1/sessions/doc/participants")
        assert 0.5 <= took < 2.0
        assert status == 503 and body["error"]["code"] == "overloaded", body
        assert sessions.questions.pending == 0  # nothing left behind by the timeouts
