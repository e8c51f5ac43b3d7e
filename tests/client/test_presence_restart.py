"""Presence converges to the truth after a presence actor or a session actor restarts.

What a member sees is the Python client's merged view (``participants``), which
is what an application shows: no ghost of a user who left while an actor was
down, no duplicate, and a quiet user (who never updates again) still there.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio

from client import TandemClient, open_tandem_client
from runtime.testing.server import TestServer
from tests.client.conftest import Connect
from tests.client.helpers import next_message, presence_supervisor, wait_until
from tests.e2e.conftest import Inbox

View = dict[str, dict[str, Any]]


def named(server: TestServer) -> Callable[[str, str], Connect]:
    def connect_as(user: str, name: str) -> Connect:
        token = server.token(user, name=name)
        return lambda: server.websocket(token=token)

    return connect_as


async def view_until(
    client: TandemClient, session_id: str, done: Callable[[View], bool], limit: float = 10.0
) -> View:
    """Read (and drop) messages until the client's merged view satisfies ``done``."""
    with trio.fail_after(limit):
        async for _ in client.messages():
            view = client.participants(session_id) or {}
            if done(view):
                return view
    raise AssertionError("message stream ended")


async def server_view(server: TestServer, session_id: str) -> View:
    with trio.fail_after(10):
        return {p["userId"]: p for p in await server.node.participants(session_id)}


def record(user: str, name: str, state: Any, connections: int = 1) -> dict[str, Any]:
    return {
        "userId": user,
        "name": name,
        "state": state,
        "status": "active",
        "connections": connections,
    }


def child_state(server: TestServer, name: str) -> str:
    return next(c.state for c in server.node.presence_supervisor.children() if c.name == name)


async def presence_restarts(server: TestServer, child: str) -> int:
    tree = await presence_supervisor(server)
    return int(next(c["restarts"] for c in tree["children"] if c["name"] == child))


async def test_a_user_who_left_while_presence_was_down_leaves_every_view(
    autojump_clock: trio.testing.MockClock, server: TestServer
) -> None:
    connect_as = named(server)
    async with (
        open_tandem_client(connect=connect_as("alice", "Alice")) as alice,
        open_tandem_client(connect=connect_as("bob", "Bob")) as bob,
    ):
        await alice.join("doc")
        await bob.join("doc")
        await alice.update_presence("doc", {"cursor": [1, 1]})
        await bob.update_presence("doc", {"cursor": [2, 2]})
        await view_until(
            alice, "doc", lambda v: (v.get("bob") or {}).get("state") == {"cursor": [2, 2]}
        )

        assert await server.node.inject_failure("presence:doc")
        # Polled on the MockClock (1 ms steps; the backoff lasts 50 ms): nothing to wait on.
        await wait_until(lambda: child_state(server, "presence:doc") == "backoff", limit=1)
        await bob.leave("doc")  # its Untrack waits for a fresh presence actor, which knows nobody

        truth = {"alice": record("alice", "Alice", {"cursor": [1, 1]})}
        # Nobody does anything more: the view heals by itself.
        assert await view_until(alice, "doc", lambda v: "bob" not in v) == truth
        await trio.sleep(1.0)  # whatever else was coming has come
        assert alice.participants("doc") == truth
        assert await server_view(server, "doc") == truth
        assert await presence_restarts(server, "presence:doc") == 1

        # Alice is tracked again, not only shown: her next move and her leave go out.
        async with open_tandem_client(connect=connect_as("carol", "Carol")) as carol:
            await carol.join("doc")
            await alice.update_presence("doc", {"cursor": [3, 3]})
            await view_until(
                carol, "doc", lambda v: (v.get("alice") or {}).get("state") == {"cursor": [3, 3]}
            )
            await alice.leave("doc")
            await next_message(carol, "participant:left", lambda m: m["userId"] == "alice")
            assert set(carol.participants("doc") or {}) == {"carol"}


async def test_a_quiet_member_is_tracked_again_once_with_its_state(
    autojump_clock: trio.testing.MockClock, server: TestServer
) -> None:
    connect_as = named(server)
    async with (
        open_tandem_client(connect=connect_as("alice", "Alice")) as alice,
        open_tandem_client(connect=connect_as("bob", "Bob")) as bob,
        open_tandem_client(connect=connect_as("bob", "Bob")) as bob_tab,
    ):
        await alice.join("doc")
        await bob.join("doc")
        await bob_tab.join("doc")
        await bob.update_presence("doc", {"cursor": [5, 5]})
        before = await view_until(
            alice,
            "doc",
            lambda v: (
                (v.get("bob") or {}).get("state") == {"cursor": [5, 5]}
                and v["bob"]["connections"] == 2
            ),
        )
        assert before == {
            "alice": record("alice", "Alice", None),
            "bob": record("bob", "Bob", {"cursor": [5, 5]}, connections=2),
        }

        assert await server.node.inject_failure("presence:doc")
        await trio.sleep(1.0)  # restarted (backoff 50 ms); nobody sends anything
        assert await presence_restarts(server, "presence:doc") == 1
        assert alice.participants("doc") == before
        assert await server_view(server, "doc") == before

        # The presence actor knows bob's two tabs again: closing one is a count change,
        # not a leave, and the last one leaving is a leave (no ghost, no second record).
        await bob_tab.leave("doc")
        view = await view_until(alice, "doc", lambda v: v["bob"]["connections"] == 1)
        assert view["bob"] == record("bob", "Bob", {"cursor": [5, 5]})
        await bob.leave("doc")
        assert await view_until(alice, "doc", lambda v: "bob" not in v) == {
            "alice": record("alice", "Alice", None)
        }


async def test_a_member_that_never_rejoins_a_restarted_session_is_no_ghost(
    autojump_clock: trio.testing.MockClock, server: TestServer
) -> None:
    connect_as = named(server)
    async with open_tandem_client(connect=connect_as("alice", "Alice")) as alice:
        await alice.join("doc")
        async with server.websocket(token=server.token("bob", name="Bob")) as ws:
            bob = Inbox(ws)  # a client that does not rejoin by itself
            with trio.fail_after(10):
                assert (await bob.request(type="session:join", sessionId="doc"))["type"] == (
                    "session:joined"
                )
                await bob.send(type="presence:update", sessionId="doc", state={"cursor": [7, 7]})
            await view_until(alice, "doc", lambda v: "bob" in v and v["bob"]["state"] is not None)

            assert await server.node.inject_failure("session:doc")
            with trio.fail_after(10):
                assert (await bob.next_of("session:left"))["reason"] == "restart"
            # Alice's client rejoins by itself; bob's does not, then goes away.
            truth = {"alice": record("alice", "Alice", None)}
            assert await view_until(alice, "doc", lambda v: v == truth) == truth
        # Past away_after (60 s): a presence actor still holding bob's connection
        # would now report him away, and the session show him again.
        await trio.sleep(120)
        view = alice.participants("doc")
        assert view is not None and set(view) == {"alice"}
        assert view["alice"]["status"] == "away"  # alice idled too: the clock did move
        assert set(await server_view(server, "doc")) == {"alice"}
