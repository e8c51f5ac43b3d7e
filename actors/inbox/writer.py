"""Group commit for inbox writes: one statement for the batches of many inboxes.

Every inbox actor stores its batch through the node's :class:`InboxWriter`
(``add_batch``, the store's signature). One task takes every write that queued
while the previous statement ran and stores them all with one
``NotificationStore.add_batches`` (one statement, one commit): a comment that
notifies ten readers costs the database one commit instead of ten, and a busy
node's statements grow rather than multiply.

A user's writes never share a statement: an inbox has one write in flight, but
the write of an inbox that was restarted may still be queued, and two rows of
one group in one statement would grow it once. The later write waits for the
next statement. If the statement fails on anything but the database's own
trouble (``DatabaseError``: every write fails alike), the writes are stored one
at a time, so a bad one fails alone. Before :meth:`InboxWriter.run` (or after it
ended) a write goes straight to the store.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs
import trio

from runtime.gateways.database import each_alone_if_refused
from runtime.gateways.notifications import (
    InboxWrite,
    NotificationRecord,
    NotificationStore,
    Written,
)

#: Writes queued before an inbox waits for room (backpressure).
QUEUE = 4096
#: Writes looked at for one statement (the others wait for the next).
MAX_WRITES = 256
#: Most notification rows in one statement.
MAX_ROWS = 2048


class WriterStopped(Exception):
    """The inbox writer stopped before storing the batch (shutdown)."""


@attrs.frozen(eq=False)
class _Queued:
    write: InboxWrite
    reply: trio.MemorySendChannel[Written | Exception]


class InboxWriter:
    """The node's one writer of inbox batches (see the module docstring)."""

    def __init__(self, store: NotificationStore, *, max_rows: int = MAX_ROWS) -> None:
        self._store = store
        self._max_rows = max_rows
        self._send, self._receive = trio.open_memory_channel[_Queued](QUEUE)
        self._running = False

    async def add_batch(
        self, user_id: str, records: Sequence[NotificationRecord], since: float | None, at: float
    ) -> Written:
        """``NotificationStore.add_batch``, stored with whatever else is queued."""
        if not self._running:
            return await self._store.add_batch(user_id, records, since, at)
        send, receive = trio.open_memory_channel[Written | Exception](1)
        try:
            await self._send.send(_Queued(InboxWrite(user_id, records, since, at), send))
            result = await receive.receive()
        except (trio.EndOfChannel, trio.BrokenResourceError):
            raise WriterStopped("the inbox writer stopped before storing the batch") from None
        if isinstance(result, Exception):
            raise result
        return result

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Store queued writes until cancelled (the node's shutdown)."""
        self._running = True
        held: list[_Queued] = []  # taken from the queue for a later statement
        batch: list[_Queued] = []  # being stored
        try:
            task_status.started()
            while True:
                if not held:
                    held = [await self._receive.receive()]
                batch, held = self._next(held)
                results = await self._store_all([q.write for q in batch])
                for queued, result in zip(batch, results, strict=True):
                    try:
                        queued.reply.send_nowait(result)
                    except (trio.WouldBlock, trio.BrokenResourceError):
                        pass  # the inbox gave up; its batch is stored all the same
                batch = []
        finally:
            # Writes not stored wake their inboxes with WriterStopped; later ones go
            # straight to the store (and a sender waiting for room is refused).
            self._running = False
            for queued in batch + held:
                queued.reply.close()
            while True:
                try:
                    self._receive.receive_nowait().reply.close()
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
            self._receive.close()

    def _next(self, held: list[_Queued]) -> tuple[list[_Queued], list[_Queued]]:
        """The next statement's writes (distinct users, at most ``max_rows`` rows), and
        the ones that wait for the statement after it, both in queue order."""
        candidates = list(held)
        while len(candidates) < MAX_WRITES:
            try:
                candidates.append(self._receive.receive_nowait())
            except trio.WouldBlock:
                break
        batch: list[_Queued] = []
        later: list[_Queued] = []
        users: set[str] = set()
        rows = 0
        for queued in candidates:
            write = queued.write
            size = len(write.records)
            if write.user_id in users or (batch and rows + size > self._max_rows):
                later.append(queued)
                continue
            batch.append(queued)
            users.add(write.user_id)
            rows += size
        return batch, later

    async def _store_all(self, writes: list[InboxWrite]) -> Sequence[Written | Exception]:
        """One result per write; never raises (but is cancellable)."""
        return await each_alone_if_refused(self._store.add_batches, writes, "inbox writes")
