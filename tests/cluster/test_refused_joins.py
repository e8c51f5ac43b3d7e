"""A join forwarded from a relay node is answered even when the owner's actor crashes on it.

The owner's SessionActor refuses the joins it was handling when it stops
(``refuse_joins``); for a member on another node that is a ``refused`` envelope
on the member's node channel, which the relay node must turn into ``error``
``internal`` with the join's ``ref`` and stop counting as joined. Without it the
client hears nothing and its connection stays joined on the relay node.
Real time, real Redis (per-test prefix): every wait is bounded by trio.fail_after.
"""

from __future__ import annotations

import pytest
import trio

from runtime.app import memory_stores
from tests.client.helpers import break_replay_reads, rejoin_after_refused_join
from tests.cluster.helpers import cluster_sessions, open_nodes
from tests.e2e.conftest import Inbox


async def test_a_relayed_join_the_owner_crashes_on_is_refused_with_its_ref(
    redis_url: str, redis_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    stores = memory_stores()
    # memory_retention=1: a join from 0 has to read the store for seq 1.
    async with open_nodes(2, redis_url, redis_prefix, stores=stores, memory_retention=1) as (a, b):
        with trio.fail_after(10):
            for n in range(2):  # node a spawns the session first: it owns it
                await a.node.append_event("doc", "note", {"n": n}, "system")
        assert a.node.store is b.node.store

        # The owner's actor crashes reading bob's replay (only the owner reads: b relays).
        break_replay_reads(a.node.store, monkeypatch)
        async with b.websocket(token=b.token("bob", name="Bob")) as ws:
            bob = Inbox(ws)
            with trio.fail_after(10):
                conn_id = str((await bob.next_of("welcome"))["connectionId"])
                # Skips anything without the ref (a session:left would time out here).
                refused = await bob.request(type="session:join", sessionId="doc", since=0, ref="j")
            assert (refused["type"], refused["code"], refused["sessionId"], refused["ref"]) == (
                "error",
                "internal",
                "doc",
                "j",
            )
            assert "doc" not in b.node.connections[conn_id].joined
            relay = cluster_sessions(b).relays.get("doc")
            assert relay is None or (conn_id not in relay.joining and conn_id not in relay.members)
            await rejoin_after_refused_join(
                bob, monkeypatch, lambda: "doc" in b.node.connections[conn_id].joined
            )
