"""Which session batches may wait for more (the load-scaled batching window)."""

from __future__ import annotations

from typing import Any

import trio

from actors.messages import AppendEvent, PresenceChanged, PublishEvent
from actors.session.actor import _worth_a_window


async def test_published_events_may_wait_appended_ones_and_presence_do_not() -> None:
    reply, _ = trio.open_memory_channel[int | Exception](1)
    peer: Any = object()  # the predicate looks at the message type only
    assert _worth_a_window(PublishEvent(peer, "cursor", {}, False, None))
    # A comment's event is acknowledged only once durable: a window delays every ack.
    assert not _worth_a_window(AppendEvent("comment:created", {}, "u1", reply))
    assert not _worth_a_window(PresenceChanged([], [], []))
