"""The outbox's byte count: every byte handed to the wire, whether sent at once or drained."""

from __future__ import annotations

import trio
import trio.testing

from runtime import metrics
from runtime.transport.outbox import Outbox
from runtime.transport.wire import memory_wire_pair


async def test_every_byte_handed_to_the_wire_is_counted_once_sent_or_drained(
    autojump_clock: trio.testing.MockClock,
) -> None:
    wire, client = memory_wire_pair(capacity=10)  # the client's side takes 10 bytes unread
    before = metrics.BYTES_OUT.value
    received = b""
    async with trio.open_nursery() as nursery:
        outbox = Outbox(wire, nursery, limit=1000, on_overflow=lambda: None, on_broken=lambda: None)
        outbox.write(b"a" * 4)  # fits: straight to the wire
        assert metrics.BYTES_OUT.value - before == 4
        outbox.write(b"b" * 20)  # 6 fit, 14 wait for the drain
        assert metrics.BYTES_OUT.value - before == 10
        assert outbox.queued_bytes == 14
        while len(received) < 24:
            received += await client.receive_some(100)
        await outbox.wait_drained()
    assert received == b"a" * 4 + b"b" * 20
    assert outbox.queued_bytes == 0
    assert metrics.BYTES_OUT.value - before == 24
