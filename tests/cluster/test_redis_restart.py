"""Redis killed and restarted (empty) under two nodes: service resumes, the gap is reported.

A private redis-server on a free port (never the shared one), two in-process
nodes on it, real PostgreSQL. After the restart every lease and subscription is
gone: the relay's members are told ``session:left``/``restart`` and resume with
``since``; /status shows the outage; the stored log has no reused or skipped seq.
Real time: every wait is bounded.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import trio
from trio_websocket import WebSocketConnection

from client import open_tandem_client
from client.connection import TandemClient
from client.errors import Disconnected, TandemError
from runtime.app import Stores
from runtime.testing.server import TestServer
from tests.cluster.helpers import open_nodes
from tests.cluster.processes import open_redis_server
from tests.e2e.conftest import Inbox


def connect(
    server: TestServer, user: str
) -> Callable[[], AbstractAsyncContextManager[WebSocketConnection]]:
    return lambda: server.websocket(token=server.token(user))


async def collect(client: TandemClient, into: list[dict[str, Any]]) -> None:
    async for message in client.messages():
        if message["type"] == "event" and message["sessionId"] == "doc":
            into.append(message)


async def publish_until_acked(client: TandemClient, data: Any) -> int:
    """Publish; while the cluster settles, a refusal or a restart means: try again."""
    while True:
        try:
            return await client.publish("doc", "n", data)
        except (Disconnected, TandemError):
            await trio.sleep(0.1)


async def test_redis_restart_resumes_and_reports_the_gap(pg_stores: Stores) -> None:
    async with (
        open_redis_server() as redis_server,
        open_nodes(
            2,
            redis_server.url,
            "restart:",
            stores=pg_stores,
            presence_timeout=3.0,
            session_lease=1.0,
            mailbox_timeout=1.0,
        ) as (a, b),
        open_tandem_client(connect=connect(a, "ann")) as ann,
        open_tandem_client(connect=connect(b, "bob")) as bob,
        b.websocket(token=b.token("raw")) as raw_ws,
        trio.open_nursery() as nursery,
    ):
        received: dict[str, list[dict[str, Any]]] = {"ann": [], "bob": []}
        nursery.start_soon(collect, ann, received["ann"])
        nursery.start_soon(collect, bob, received["bob"])
        raw = Inbox(raw_ws)
        with trio.fail_after(10):
            await ann.join("doc")  # a owns the session, b relays
            await bob.join("doc")
            assert (await raw.request(type="session:join", sessionId="doc"))["type"] == (
                "session:joined"
            )
            for i in range(6):
                await (ann if i % 2 else bob).publish("doc", "n", {"before": i})
            await raw.events("doc", 6)
        assert b.node.status()["redis"]["outages"] == 0

        await redis_server.kill()
        with trio.fail_after(10):
            # The owner keeps serving its local members: stored, acked, not relayed yet.
            during = await ann.publish("doc", "n", {"during": 0})
            while b.node.status()["redis"]["outage_s"] is None:  # noqa: ASYNC110
                await trio.sleep(0.05)
        down = b.node.status()["redis"]
        assert down["ok"] is False and down["outages"] >= 1, down

        await redis_server.start()  # same port, empty: no lease, no subscription
        restarted_at = trio.current_time()
        with trio.fail_after(15):
            left = await raw.next_of("session:left")
            assert left["reason"] == "restart", left
            last_seen = 6
            joined = await raw.request(type="session:join", sessionId="doc", since=last_seen)
            assert joined["type"] == "session:joined", joined
            # Service resumes: a publish on each node reaches the other.
            after_b = await publish_until_acked(bob, {"after": "bob"})
            after_a = await publish_until_acked(ann, {"after": "ann"})
            resumed_in = trio.current_time() - restarted_at
            head = max(after_a, after_b)
            replayed = await raw.events("doc", head)
            for user in ("ann", "bob"):
                while not received[user] or received[user][-1]["seq"] < head:  # noqa: ASYNC110
                    await trio.sleep(0.05)
        nursery.cancel_scope.cancel()

    stored = await pg_stores.events.read_since("doc", 0, 1000)
    log = [(e.seq, e.data) for e in stored]
    assert [seq for seq, _ in log] == list(range(1, len(log) + 1))  # none reused or skipped
    assert log[during - 1] == (during, {"during": 0})
    for user in ("ann", "bob"):
        assert [(e["seq"], e["data"]) for e in received[user]] == log, user
    # The raw member resumed after the gap with what it had missed, the outage event included.
    assert {e["seq"] for e in replayed} >= set(range(last_seen + 1, head + 1))
    for node in (a, b):
        health = node.node.status()["redis"]
        assert health["ok"] is True, health
        assert health["outages"] >= 1, health  # a call in flight may end one early
        assert health["outage_s"] is None and health["last_outage_s"] > 0, health
        assert health["reconnects"] >= 1, health
    print(f"\nservice resumed {resumed_in:.2f} s after Redis came back; log {len(log)} events")
