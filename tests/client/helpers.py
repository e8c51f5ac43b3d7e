"""Helpers for reading a client's message stream in tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio

from client import Message, TandemClient


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
