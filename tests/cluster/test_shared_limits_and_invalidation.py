"""Per-user/per-IP rate limits and cache invalidation are shared by the nodes."""

from __future__ import annotations

import trio

from runtime.app import memory_stores
from tests.cluster.helpers import open_nodes
from tests.e2e.conftest import Inbox


async def test_per_user_event_limit_is_shared(redis_url: str, redis_prefix: str) -> None:
    async with open_nodes(
        2,
        redis_url,
        redis_prefix,
        stores=memory_stores(),
        rate_limits="event_per_user=0.01/3",
    ) as (a, b):
        async with (
            a.websocket(token=a.token("alice")) as wa,
            b.websocket(token=b.token("alice")) as wb,
        ):
            ia, ib = Inbox(wa), Inbox(wb)
            with trio.fail_after(10):
                # one session per node: this test is about the user's bucket only
                await ia.request(type="session:join", sessionId="doc-a")
                await ib.request(type="session:join", sessionId="doc-b")
                for i in range(3):
                    inbox, sid = (ia, "doc-a") if i % 2 else (ib, "doc-b")
                    reply = await inbox.request(
                        type="event:publish", sessionId=sid, name="n", data=i
                    )
                    assert reply["type"] == "event:ack", reply
                reply = await ia.request(type="event:publish", sessionId="doc-a", name="n", data=3)
                assert reply["type"] == "error" and reply["code"] == "rate_limited", reply


async def test_membership_change_on_a_applies_on_b_within_1s(
    redis_url: str, redis_prefix: str
) -> None:
    async with open_nodes(
        2, redis_url, redis_prefix, stores=memory_stores(), default_access="none"
    ) as (a, b):
        await a.node.sessions.create("doc")
        await a.node.sessions.add_member("doc", "alice", "editor")
        await trio.sleep(0.3)  # let B see (and act on) that invalidation first
        async with b.websocket(token=b.token("alice")) as wb:
            ib = Inbox(wb)
            with trio.fail_after(10):
                joined = await ib.request(type="session:join", sessionId="doc")
                assert joined["type"] == "session:joined", joined
            assert b.node.sessions.roles.get(("doc", "alice")) == "editor"  # cached on B
            await a.node.sessions.remove_member("doc", "alice")
            with trio.fail_after(1.0):
                left = await ib.next_of("session:left")
            assert left["reason"] == "revoked"


async def test_archived_on_a_kicks_members_on_b(redis_url: str, redis_prefix: str) -> None:
    async with open_nodes(2, redis_url, redis_prefix, stores=memory_stores()) as (a, b):
        await a.node.sessions.create("doc")
        async with b.websocket(token=b.token("bob")) as wb:
            ib = Inbox(wb)
            with trio.fail_after(10):
                await ib.request(type="session:join", sessionId="doc")
            assert not await b.node.sessions.is_deleted("doc")  # cached on B
            assert await a.node.sessions.soft_delete("doc")
            await a.node.session_deleted("doc")
            with trio.fail_after(1.0):
                left = await ib.next_of("session:left")
            assert left["reason"] == "deleted"
