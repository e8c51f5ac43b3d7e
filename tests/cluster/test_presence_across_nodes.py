"""Lean presence changes in a cluster: relayed frames, and a dead node's tab dropped.

A member on a relay node gets the owner's frames as they are; merging them into
its session:joined snapshot must give the owner's records, also when the owner
drops a dead node's connections (a user's other tab remains).
Real time, real Redis (per-test prefix): every wait is bounded by trio.fail_after.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio

from client.presence import Participants
from runtime.app import memory_stores
from runtime.testing import open_test_server
from tests.cluster.helpers import SECRET, open_nodes
from tests.e2e.conftest import Inbox

TIMEOUT = 3.0  # TANDEM_PRESENCE_TIMEOUT for this test: node leases of 1.5 s


async def follow(
    inbox: Inbox,
    view: Participants,
    until: Callable[[dict[str, Any]], bool],
    seen: list[dict[str, Any]],
) -> None:
    """Merge every message into ``view`` (change entries into ``seen``) until ``until(records)``."""
    while not until(view.records()):
        message = await inbox.next()
        view.apply(message)
        if message["type"] == "presence":
            seen.extend(message["changes"])


async def test_a_relayed_member_merging_changes_holds_the_owners_records(
    redis_url: str, redis_prefix: str
) -> None:
    stores = memory_stores()
    async with open_nodes(2, redis_url, redis_prefix, stores=stores, presence_timeout=TIMEOUT) as (
        a,
        b,
    ):
        async with (
            a.websocket(token=a.token("ann", name="Ann")) as wa,
            b.websocket(token=b.token("wes", name="Wes")) as ww,
            b.websocket(token=b.token("bob", name="Bob")) as wb,
        ):
            ann, wes, bob = Inbox(wa), Inbox(ww), Inbox(wb)
            with trio.fail_after(10):
                joined = await ann.request(type="session:join", sessionId="doc")
                assert joined["type"] == "session:joined"  # ann's node owns the session
                joined = await wes.request(type="session:join", sessionId="doc")
                assert joined["type"] == "session:joined"
            view = Participants(joined["participants"])
            entries: list[dict[str, Any]] = []

            def bob_at(x: int) -> Callable[[dict[str, Any]], bool]:
                return lambda r: (r.get("bob") or {}).get("state") == {"cursor": [x, x]}

            with trio.fail_after(10):
                assert (await bob.request(type="session:join", sessionId="doc"))["type"] == (
                    "session:joined"
                )
                await follow(wes, view, lambda r: "bob" in r, entries)  # joined, as a whole record
                for x in (1, 2, 3):
                    await bob.send(
                        type="presence:update", sessionId="doc", state={"cursor": [x, x]}
                    )
                    await follow(wes, view, bob_at(x), entries)
            moves = [e for e in entries if e["userId"] == "bob"]
            assert moves == [{"userId": "bob", "state": {"cursor": [x, x]}} for x in (1, 2, 3)]

            async def second_tab(task_status: trio.TaskStatus[None]) -> None:
                async with open_test_server(
                    stores=stores,
                    redis_url=redis_url,
                    redis_prefix=redis_prefix,
                    jwt_secret=SECRET,
                    presence_timeout=TIMEOUT,
                ) as c:
                    async with c.websocket(token=c.token("bob", name="Bob")) as wc:
                        tab = Inbox(wc)
                        joined = await tab.request(type="session:join", sessionId="doc")
                        assert joined["type"] == "session:joined", joined
                        await tab.send(
                            type="presence:update", sessionId="doc", state={"cursor": [9, 9]}
                        )
                        task_status.started()
                        await trio.sleep_forever()

            with trio.fail_after(10):
                async with trio.open_nursery() as nursery:
                    await nursery.start(second_tab)
                    await follow(wes, view, bob_at(9), entries)
                    assert view.records()["bob"]["connections"] == 2
                    nursery.cancel_scope.cancel()  # no graceful shutdown: no leave is sent
            entries.clear()
            with trio.fail_after(TIMEOUT + 2):
                # The owner drops the dead node's tab; bob falls back to his other tab's state.
                await follow(wes, view, lambda r: r["bob"]["connections"] == 1, entries)
                on_owner = {p["userId"]: p for p in await a.node.participants("doc")}
            assert entries == [{"userId": "bob", "state": {"cursor": [3, 3]}, "connections": 1}]
            assert view.records() == on_owner
            assert on_owner["bob"]["name"] == "Bob"
            assert sorted(on_owner) == ["ann", "bob", "wes"]


async def test_a_restarted_presence_actor_keeps_remote_members_and_drops_a_remote_leaver(
    redis_url: str, redis_prefix: str
) -> None:
    """Members on a relay node are tracked in the owner's one presence actor, like local ones."""
    async with open_nodes(2, redis_url, redis_prefix, presence_timeout=TIMEOUT) as (a, b):
        async with (
            a.websocket(token=a.token("ann", name="Ann")) as wa,
            b.websocket(token=b.token("wes", name="Wes")) as ww,
            b.websocket(token=b.token("bob", name="Bob")) as wb,
        ):
            ann, wes, bob = Inbox(wa), Inbox(ww), Inbox(wb)
            views = {}
            with trio.fail_after(10):
                for name, member in (("ann", ann), ("wes", wes), ("bob", bob)):
                    joined = await member.request(type="session:join", sessionId="doc")
                    assert joined["type"] == "session:joined"  # ann's node owns the session
                    views[name] = Participants(joined["participants"])
                await wes.send(type="presence:update", sessionId="doc", state={"at": "w"})
                for name in ("ann", "wes"):
                    await follow(
                        {"ann": ann, "wes": wes}[name],
                        views[name],
                        lambda r: (
                            (r.get("wes") or {}).get("state") == {"at": "w"}
                            and sorted(r) == ["ann", "bob", "wes"]
                        ),
                        [],
                    )

                assert await a.node.inject_failure("presence:doc")
                # Bob leaves from the relay node while the owner's presence actor is down.
                left = await bob.request(type="session:leave", sessionId="doc")
                assert left["type"] == "session:left"
                await follow(ann, views["ann"], lambda r: "bob" not in r, [])
                await follow(wes, views["wes"], lambda r: "bob" not in r, [])
                on_owner = {p["userId"]: p for p in await a.node.participants("doc")}
            assert sorted(on_owner) == ["ann", "wes"]
            assert on_owner["wes"]["state"] == {"at": "w"}  # re-tracked with its state
            assert views["ann"].records() == on_owner
            assert views["wes"].records() == on_owner

            # Wes is tracked again on the owner, not only shown: a move still goes out.
            with trio.fail_after(10):
                await wes.send(type="presence:update", sessionId="doc", state={"at": "w2"})
                await follow(ann, views["ann"], lambda r: r["wes"]["state"] == {"at": "w2"}, [])
