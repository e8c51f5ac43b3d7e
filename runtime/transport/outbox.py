"""Outbound bytes of one connection: direct send first, a bounded queue only when needed.

``write`` never waits. While nothing is queued it sends straight into the
socket; only what the kernel cannot take is queued, and a drain task (started
on demand in the connection's nursery, gone when the queue is empty) writes
the rest as the socket becomes writable. A writer task per member cost about
5x the CPU of the direct send at 1,000 members, so the common case has none.

Backpressure policy: past ``limit`` queued bytes the client is too slow. The
outbox stops taking frames, queues the given close frame (close code 4000,
"slow consumer"; the client reconnects and resumes from its last seq) and
calls ``on_overflow`` so the connection can end after a bounded grace period.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import trio

from runtime import metrics
from runtime.transport.wire import Wire

#: Largest single send when coalescing queued chunks.
_COALESCE = 256 * 1024

#: Bound once: ``write`` runs once per member per fan-out frame.
_BYTES_OUT = metrics.BYTES_OUT


class Outbox:
    # Slots, and the queue and drain event created only when first needed: one
    # outbox per connection, so its idle size counts against the per-connection
    # memory target (an empty deque alone is about 600 bytes).
    __slots__ = (
        "_drained",
        "_draining",
        "_nursery",
        "_on_broken",
        "_on_overflow",
        "_queue",
        "_try_send",
        "_wire",
        "accepting",
        "broken",
        "limit",
        "queued_bytes",
    )

    def __init__(
        self,
        wire: Wire,
        nursery: trio.Nursery,
        *,
        limit: int,
        on_overflow: Callable[[], None],
        on_broken: Callable[[], None],
    ) -> None:
        self._wire = wire
        self._try_send = wire.try_send
        self._nursery = nursery
        self.limit = limit
        self._on_overflow = on_overflow
        self._on_broken = on_broken
        self._queue: deque[bytes] | None = None  # created on the first partial send
        self.queued_bytes = 0
        self._draining = False
        self._drained: trio.Event | None = None  # None: nothing queued, nothing to wait for
        self.accepting = True
        self.broken = False

    def write(self, data: bytes) -> None:
        """Send or queue ``data``; never waits. Dropped once the outbox stopped accepting."""
        if not self.accepting:  # also true once broken
            return
        if not self._queue:
            # The common case, kept to one call into the socket: nothing queued, so
            # the bytes go straight to the kernel. This repeats `_write` inline on
            # purpose: it runs once per member per frame, the server's hottest line,
            # and adds to the counter's value without a call for the same reason.
            try:
                sent = self._try_send(data)
            except trio.BrokenResourceError:
                self._mark_broken()
                return
            _BYTES_OUT.value += sent
            if sent == len(data):
                return
            data = data[sent:]
        self._enqueue(data)
        if self.queued_bytes > self.limit and self.accepting:
            self.accepting = False
            self._on_overflow()

    def write_final(self, data: bytes) -> None:
        """Queue a last frame (a close frame) even past the limit, then accept nothing more."""
        if self.broken:
            return
        self.accepting = False
        self._write(data)

    def _write(self, data: bytes) -> None:
        if self.broken:
            return
        if not self._queue:
            try:
                sent = self._try_send(data)
            except trio.BrokenResourceError:
                self._mark_broken()
                return
            _BYTES_OUT.inc(sent)
            if sent == len(data):
                return
            data = data[sent:]
        self._enqueue(data)

    def _enqueue(self, data: bytes) -> None:
        if self._queue is None:
            self._queue = deque()
        self._queue.append(data)
        self.queued_bytes += len(data)
        if not self._draining:
            self._draining = True
            self._drained = trio.Event()
            self._nursery.start_soon(self._drain)

    async def wait_drained(self) -> None:
        """Wait until everything queued was handed to the kernel (or the wire broke)."""
        drained = self._drained
        if drained is None:
            await trio.lowlevel.checkpoint()
        else:
            await drained.wait()

    async def _drain(self) -> None:
        queue = self._queue
        assert queue is not None
        try:
            while queue and not self.broken:
                await self._wire.wait_writable()
                chunk = queue.popleft()
                while queue and len(chunk) < _COALESCE:
                    chunk += queue.popleft()
                try:
                    sent = self._try_send(chunk)
                except trio.BrokenResourceError:
                    self._mark_broken()
                    return
                _BYTES_OUT.inc(sent)
                self.queued_bytes -= sent
                if sent < len(chunk):
                    queue.appendleft(chunk[sent:])
        except (trio.ClosedResourceError, OSError):
            self._mark_broken()
        finally:
            self._draining = False
            if self._drained is not None:
                self._drained.set()

    def _mark_broken(self) -> None:
        if not self.broken:
            self.broken = True
            self.accepting = False
            if self._queue is not None:
                self._queue.clear()
            self.queued_bytes = 0
            self._on_broken()
