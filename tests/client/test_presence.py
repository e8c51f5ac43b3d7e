"""Lean presence changes end to end: what members receive, and the client's merged view."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio

from client import TandemClient, open_tandem_client
from runtime.testing.server import TestServer
from tests.client.conftest import Connect
from tests.client.helpers import next_message


async def changes_of(
    client: TandemClient, user_id: str, until: Callable[[dict[str, Any]], bool]
) -> list[dict[str, Any]]:
    """``user_id``'s presence change entries as received, up to the first matching ``until``."""
    entries: list[dict[str, Any]] = []
    with trio.fail_after(10):
        while not entries or not until(entries[-1]):
            msg = await next_message(
                client, "presence", lambda m: any(c["userId"] == user_id for c in m["changes"])
            )
            entries.extend(c for c in msg["changes"] if c["userId"] == user_id)
    return entries


async def test_cursor_moves_arrive_lean_and_merge_into_the_whole_record(
    autojump_clock: trio.testing.MockClock, server: TestServer
) -> None:
    def connect_as(user: str, name: str) -> Connect:
        token = server.token(user, name=name)
        return lambda: server.websocket(token=token)

    async with (
        open_tandem_client(connect=connect_as("alice", "Alice")) as alice,
        open_tandem_client(connect=connect_as("bob", "Bob Jones")) as bob,
    ):
        await alice.join("doc")
        await bob.join("doc")
        joined = await next_message(
            alice, "participant:joined", lambda m: m["participant"]["userId"] == "bob"
        )
        assert joined["participant"]["name"] == "Bob Jones"  # a joiner's record is whole
        for x in range(5):
            await bob.update_presence("doc", {"cursor": [x, 0]})
            await trio.sleep(0.1)  # one flush each (flush_interval is 20 ms)
        moves = await changes_of(alice, "bob", lambda c: c.get("state") == {"cursor": [4, 0]})
        # Only what moved: no name, status or connection count on the wire.
        assert moves == [{"userId": "bob", "state": {"cursor": [x, 0]}} for x in range(5)]
        with trio.fail_after(10):
            server_view = {p["userId"]: p for p in await server.node.participants("doc")}
        assert server_view["bob"] == {
            "userId": "bob",
            "name": "Bob Jones",
            "state": {"cursor": [4, 0]},
            "status": "active",
            "connections": 1,
        }
        assert alice.participants("doc") == server_view
        assert bob.participants("doc") == server_view

        # A second tab: only the count changes.
        async with open_tandem_client(connect=connect_as("bob", "Bob Jones")) as bob2:
            await bob2.join("doc")
            tab = await changes_of(alice, "bob", lambda c: "connections" in c)
            assert tab[-1] == {"userId": "bob", "connections": 2}
            assert alice.participants("doc")["bob"]["connections"] == 2
            assert alice.participants("doc")["bob"]["name"] == "Bob Jones"
        closed = await changes_of(alice, "bob", lambda c: "connections" in c)
        assert closed[-1] == {"userId": "bob", "connections": 1}
        with trio.fail_after(10):
            server_view = {p["userId"]: p for p in await server.node.participants("doc")}
        assert alice.participants("doc") == server_view

        await bob.leave("doc")
        await next_message(alice, "participant:left", lambda m: m["userId"] == "bob")
        assert set(alice.participants("doc") or {}) == {"alice"}
        assert bob.participants("doc") is None
