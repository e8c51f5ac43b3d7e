"""One session, members on three nodes: one identical gap-free order; resume elsewhere."""

from __future__ import annotations

import trio

from runtime.app import Stores
from tests.cluster.helpers import open_nodes
from tests.e2e.conftest import Inbox


async def test_one_order_across_nodes_and_resume_elsewhere(
    redis_url: str, redis_prefix: str, pg_stores: Stores
) -> None:
    async with open_nodes(3, redis_url, redis_prefix, stores=pg_stores) as nodes:
        async with (
            nodes[0].websocket(token=nodes[0].token("u0")) as w0,
            nodes[1].websocket(token=nodes[1].token("u1")) as w1,
            nodes[2].websocket(token=nodes[2].token("u2")) as w2,
        ):
            inboxes = [Inbox(w0), Inbox(w1), Inbox(w2)]
            with trio.fail_after(20):
                for inbox in inboxes:
                    joined = await inbox.request(type="session:join", sessionId="doc")
                    assert joined["type"] == "session:joined", joined

                async def publish(inbox: Inbox, who: int) -> None:
                    for i in range(20):
                        await inbox.send(
                            type="event:publish", sessionId="doc", name="n", data=[who, i]
                        )

                async with trio.open_nursery() as nursery:
                    for who, inbox in enumerate(inboxes):
                        nursery.start_soon(publish, inbox, who)
                seen = [await inbox.events("doc", 60) for inbox in inboxes]
            orders = [[(e["seq"], tuple(e["data"])) for e in events] for events in seen]
            assert orders[0] == orders[1] == orders[2]
            assert [seq for seq, _ in orders[0]] == list(range(1, 61))
            for who in range(3):  # each publisher's own events in its order
                assert [d[1] for _, d in orders[0] if d[0] == who] == list(range(20))
        # resume on a different node from the middle: no gap, no duplicate
        async with nodes[2].websocket(token=nodes[2].token("u0")) as w:
            inbox = Inbox(w)
            with trio.fail_after(20):
                await inbox.request(type="session:join", sessionId="doc", since=25)
                await inbox.send(type="event:publish", sessionId="doc", name="n", data="late")
                events = await inbox.events("doc", 61)
            assert [e["seq"] for e in events] == list(range(26, 62))
            assert [(e["seq"], tuple(e["data"])) for e in events[:-1]] == orders[0][25:]
