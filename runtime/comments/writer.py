"""Group commit for new comments: one small writer actor per session.

A create waits on its session's writer instead of writing by itself. The writer
takes everything that queued while it was busy as one batch (``run_batch_loop``)
and hands it to ``write``, which stores the batch in one transaction and appends
its events in one go; each waiter then gets its own result. So a session's
comments are still written one batch after another (positions and events in the
same order) but a busy session pays one round of database work per batch, not per
comment, and an idle one adds no wait at all (no batching window).

Writers live in the nursery of :meth:`CommentWriters.run` and passivate when idle;
a create racing with passivation goes to a fresh writer. Before ``run`` (or after
it ended) a create is written on its own, inline.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

import attrs
import trio

from runtime.actor import BatchPolicy, run_batch_loop
from runtime.mailbox import Mailbox, MailboxClosed

logger = logging.getLogger(__name__)

Item = TypeVar("Item")
Result = TypeVar("Result")

#: Creates queued for one session before a new one waits for room (backpressure).
QUEUE = 1024
#: Most creates written in one transaction.
MAX_BATCH = 256
#: Seconds an idle writer lingers before it stops (a later create starts a new one).
PASSIVATE_AFTER = 30.0


class WriterStopped(Exception):
    """The session's writer stopped before answering (shutdown or a bug): not written."""


@attrs.frozen
class _Waiting(Generic[Item, Result]):
    item: Item
    reply: trio.MemorySendChannel[Result | Exception]


#: ``write(session_id, items)``: one result (or exception) per item, in order; it must
#: not raise (a raise answers the whole batch with that exception).
Write = Callable[[str, Sequence[Item]], Awaitable[Sequence[Result | Exception]]]


class _SessionWriter(Generic[Item, Result]):
    """The batch handler of one session's writer."""

    def __init__(self, session_id: str, write: Write[Item, Result]) -> None:
        self.session_id = session_id
        self._write = write

    async def handle(self, batch: list[_Waiting[Item, Result]]) -> None:
        try:
            try:
                results = await self._write(self.session_id, [w.item for w in batch])
            except Exception as exc:  # a bug in write: fail this batch, keep the writer
                logger.exception("comment writer for %s failed a batch", self.session_id)
                results = [exc] * len(batch)
            for waiting, result in zip(batch, results, strict=True):
                try:
                    waiting.reply.send_nowait(result)
                except (trio.WouldBlock, trio.BrokenResourceError):
                    pass  # the waiter gave up; its comment is written all the same
        finally:
            # Also when cancelled mid-write: each waiter wakes (WriterStopped) instead of
            # waiting forever; one already answered reads its result first.
            for waiting in batch:
                waiting.reply.close()

    def is_idle(self) -> bool:
        return True  # nothing outlives a batch: passivate once the mailbox is empty


class CommentWriters(Generic[Item, Result]):
    """The per-session writers of one node (see the module docstring)."""

    def __init__(self, write: Write[Item, Result], *, policy: BatchPolicy | None = None) -> None:
        self._write = write
        self._policy = policy or BatchPolicy(max_batch=MAX_BATCH)
        self._mailboxes: dict[str, Mailbox[_Waiting[Item, Result]]] = {}
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the writers until cancelled (the node's shutdown)."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._nursery = None

    def live(self) -> int:
        """Sessions with a writer right now."""
        return len(self._mailboxes)

    async def submit(self, session_id: str, item: Item) -> Result:
        """Queue ``item`` for its session's next batch and wait for its result.

        Raises the item's exception. Once queued, cancellation does not withdraw
        the item: the writer still writes it (nobody reads the answer).
        """
        if self._nursery is None:
            [result] = await self._write(session_id, [item])
        else:
            result = await self._queue(session_id, item)
        if isinstance(result, Exception):
            raise result
        return result

    async def _queue(self, session_id: str, item: Item) -> Result | Exception:
        send, receive = trio.open_memory_channel[Result | Exception](1)
        waiting: _Waiting[Item, Result] = _Waiting(item, send)
        for _ in range(3):  # a writer may passivate between lookup and send
            mailbox = self._mailboxes.get(session_id) or self._spawn(session_id)
            try:
                await mailbox.send(waiting)
                break
            except MailboxClosed:
                if self._mailboxes.get(session_id) is mailbox:
                    del self._mailboxes[session_id]
        else:
            raise WriterStopped(f"the comment writer of {session_id!r} kept closing")
        try:
            return await receive.receive()
        except trio.EndOfChannel:
            raise WriterStopped(f"the comment writer of {session_id!r} stopped") from None

    def _spawn(self, session_id: str) -> Mailbox[_Waiting[Item, Result]]:
        assert self._nursery is not None
        mailbox: Mailbox[_Waiting[Item, Result]] = Mailbox(QUEUE)
        self._mailboxes[session_id] = mailbox
        self._nursery.start_soon(self._run_writer, session_id, mailbox)
        return mailbox

    async def _run_writer(self, session_id: str, mailbox: Mailbox[_Waiting[Item, Result]]) -> None:
        handler: _SessionWriter[Item, Result] = _SessionWriter(session_id, self._write)
        try:
            await run_batch_loop(
                handler, mailbox, policy=self._policy, passivate_after=PASSIVATE_AFTER
            )
        finally:
            # Passivated (mailbox closed in the same step), or cancelled: refuse what is
            # still queued so its waiters wake up rather than wait for nobody.
            mailbox.close()
            while True:
                try:
                    mailbox.receive_nowait().reply.close()
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
            if self._mailboxes.get(session_id) is mailbox:
                del self._mailboxes[session_id]
