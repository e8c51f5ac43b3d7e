"""Presence never outranks the session: it is not spawned for nobody, and its loss is no crash.

* A ``presence:update`` reaches only a presence actor that is already live: the
  session actor's ``Track`` of a member is what spawns one (an update spawning one
  would leave an actor holding nobody).
* A session actor that cannot reach its presence actor (its spawn fails: the
  ``presence`` supervisor gave up and is waiting to be restarted) goes on serving
  its event stream, and re-syncs presence once it can.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio

from actors.messages import SetPresence
from runtime import metrics
from runtime.supervisor import RestartPolicy
from runtime.testing import open_test_server
from runtime.testing.server import TestServer
from tests.client.helpers import break_replay_reads, presence_supervisor, wait_until
from tests.e2e.conftest import Inbox


def child(supervisor_children: list[Any], name: str) -> Any:
    return next((c for c in supervisor_children if c.name == name), None)


def presence_live(server: TestServer, session_id: str) -> bool:
    return server.node.registry.lookup(server.node.presence_kind, session_id) is not None


async def presence_children(server: TestServer) -> int:
    return int((await presence_supervisor(server))["childCount"])


async def test_a_presence_update_never_spawns_a_presence_actor(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with open_test_server(memory_retention=1) as server:
        node = server.node
        for n in range(2):  # only the last stays in memory: a resume from 0 reads the store
            await node.append_event("doc", "note", {"n": n}, "system")
        assert not presence_live(server, "doc")
        # The node's own gate: with no live presence actor an update is not posted, and
        # none is spawned for it (a spawned one would hold nobody and linger).
        assert not node.post_presence_update("doc", "c1", SetPresence({"cursor": [0, 0]}))
        assert not presence_live(server, "doc")

        break_replay_reads(node.store, monkeypatch)
        async with server.websocket(token=server.token("bob", name="Bob")) as ws:
            bob = Inbox(ws)
            with trio.fail_after(10):
                # The session actor crashes reading the replay: the join is refused, so
                # bob's presence update is refused by the dispatcher before any actor.
                refused = await bob.request(type="session:join", sessionId="doc", since=0)
                assert (refused["type"], refused["code"]) == ("error", "internal")
                update = await bob.request(
                    type="presence:update", sessionId="doc", state={"cursor": [1, 2]}, ref="p"
                )
                assert (update["type"], update["code"]) == ("error", "not_joined")
            assert not presence_live(server, "doc")
            assert await presence_children(server) == 0

            # A real member's presence still works: its join spawns the presence actor.
            monkeypatch.undo()
            with trio.fail_after(10):
                joined = await bob.request(type="session:join", sessionId="doc", since=0)
                assert joined["type"] == "session:joined"
                await bob.send(type="presence:update", sessionId="doc", state={"cursor": [3, 4]})
                change = await bob.next_of("presence", "participant:joined")
                while change["type"] != "presence" or change["changes"][0].get("state") != {
                    "cursor": [3, 4]
                }:
                    change = await bob.next_of("presence", "participant:joined")
            assert presence_live(server, "doc")
            assert await presence_children(server) == 1


async def test_the_session_goes_on_while_presence_cannot_be_spawned(
    autojump_clock: trio.testing.MockClock, server: TestServer
) -> None:
    node = server.node
    # The root waits 5 s before restarting the presence supervisor that gave up: a
    # window in which every presence spawn fails (by default it lasts 50 ms).
    node.root.policy = RestartPolicy(
        max_restarts=3, period=30.0, backoff_initial=5.0, backoff_max=5.0
    )
    unreachable = metrics.PRESENCE_UNREACHABLE.value
    async with (
        server.websocket(token=server.token("bob", name="Bob")) as wb,
        server.websocket(token=server.token("alice", name="Alice")) as wa,
    ):
        bob, alice = Inbox(wb), Inbox(wa)
        with trio.fail_after(30):
            assert (await bob.request(type="session:join", sessionId="doc"))["type"] == (
                "session:joined"
            )
            # Crash presence:doc until its supervisor escalates (more than 5 in 10 s).
            for _ in range(6):
                await wait_until(
                    lambda: (
                        child(node.presence_supervisor.children(), "presence:doc").state
                        == "running"
                    )
                )
                assert await node.inject_failure("presence:doc")
                await wait_until(
                    lambda: (
                        (c := child(node.presence_supervisor.children(), "presence:doc")) is None
                        or c.state != "running"
                    )
                )
            await wait_until(lambda: child(node.root.children(), "presence").state == "backoff")
            assert not presence_live(server, "doc")

            # Alice's join makes the session track her: the presence spawn fails.
            joined = await alice.request(type="session:join", sessionId="doc")
            assert joined["type"] == "session:joined"
            ack = await bob.request(
                type="event:publish", sessionId="doc", name="note", data={"n": 1}
            )
            assert ack["type"] == "event:ack"
            event = await alice.next_of("event")
            assert (event["seq"], event["data"]) == (ack["seq"], {"n": 1})
            assert child(node.root.children(), "presence").state == "backoff"  # still down

        session = child(node.sessions_supervisor.children(), "session:doc")
        assert (session.restarts, session.state) == (0, "running")
        assert metrics.PRESENCE_UNREACHABLE.value == unreachable + 1  # once per outage
        seen = bob.pending + alice.pending
        assert not [m for m in seen if m["type"] == "session:left"]

        # The presence supervisor is back: the session's next batch re-syncs presence.
        with trio.fail_after(30):
            await wait_until(lambda: child(node.root.children(), "presence").state == "running")
            ack = await alice.request(
                type="event:publish", sessionId="doc", name="note", data={"n": 2}
            )
            assert ack["type"] == "event:ack"
            await wait_until(lambda: presence_live(server, "doc"))
            await trio.sleep(1.0)
            present = {p["userId"] for p in await node.participants("doc")}
            assert present == {"alice", "bob"}
            await alice.send(type="presence:update", sessionId="doc", state={"cursor": [9, 9]})
            while True:
                message = await bob.next_of("presence", "session:left")
                assert message["type"] == "presence"
                if any(c.get("state") == {"cursor": [9, 9]} for c in message["changes"]):
                    break
        assert (session.restarts, session.state) == (0, "running")
