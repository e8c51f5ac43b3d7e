"""Helpers for reading a client's message stream in tests, and for refused joins."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import trio

from client import Message, TandemClient
from runtime.gateways.memory import StoreError
from runtime.testing.server import TestServer
from tests.e2e.conftest import Inbox


async def next_message(
    client: TandemClient,
    kind: str,
    where: Callable[[Message], bool] = lambda _: True,
    *,
    limit: float = 30.0,
) -> Message:
    """The next message of type ``kind`` matching ``where`` (others are skipped)."""
    with trio.fail_after(limit):
        async for msg in client.messages():
            if msg.get("type") == kind and where(msg):
                return msg
    raise AssertionError(f"message stream ended before a {kind!r}")


async def collect_events(
    client: TandemClient, session_id: str, count: int, *, limit: float = 60.0
) -> list[dict[str, Any]]:
    """The next ``count`` events of ``session_id``, in delivery order."""
    events: list[dict[str, Any]] = []
    with trio.fail_after(limit):
        async for msg in client.messages():
            if msg.get("type") == "event" and msg.get("sessionId") == session_id:
                events.append(msg)
                if len(events) == count:
                    return events
    raise AssertionError(f"message stream ended after {len(events)} of {count} events")


async def wait_until(predicate: Callable[[], bool], *, limit: float = 30.0) -> None:
    """Poll ``predicate`` on the (mock) clock; for client state that has no event to wait on."""
    with trio.fail_after(limit):
        while not predicate():  # noqa: ASYNC110 - polling observable state is the point
            await trio.sleep(0.001)


async def presence_supervisor(server: TestServer) -> dict[str, Any]:
    """The ``presence`` supervisor's entry in the server's ``/status`` actor tree."""
    status, body = await server.http("GET", "/status")
    assert status == 200
    tree: dict[str, Any] = next(
        c["supervisor"] for c in body["actors"]["children"] if c["name"] == "presence"
    )
    return tree


def break_replay_reads(store: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``store.read_since`` fail: a join that must replay from the store crashes
    the session actor reading it (``monkeypatch.undo()`` mends it)."""

    async def store_down(*args: Any, **kwargs: Any) -> Any:
        raise StoreError("store down")

    monkeypatch.setattr(store, "read_since", store_down)


async def rejoin_after_refused_join(
    member: Inbox, monkeypatch: pytest.MonkeyPatch, is_joined: Callable[[], bool]
) -> None:
    """After ``member``'s join of "doc" (events 1-2 stored) was refused: it is not a
    member (publishing is ``not_joined``); once the store is mended a join from 0
    replays 1 and 2, the next publish is seq 3, and ``is_joined()`` holds again."""
    with trio.fail_after(10):
        publish = await member.request(type="event:publish", sessionId="doc", name="x", ref="p")
    assert (publish["type"], publish["code"]) == ("error", "not_joined")

    monkeypatch.undo()
    with trio.fail_after(10):
        joined = await member.request(type="session:join", sessionId="doc", since=0)
        assert (joined["type"], joined["seq"]) == ("session:joined", 2)
        assert [e["seq"] for e in await member.events("doc", 2)] == [1, 2]
        ack = await member.request(type="event:publish", sessionId="doc", name="x")
    assert (ack["type"], ack["seq"]) == ("event:ack", 3)
    assert is_joined()
    assert not [m for m in member.pending if m["type"] == "error"]
