"""Group commit for new comments and threads: one small writer actor per session.

A create waits on its session's writer instead of writing by itself. The writer
takes everything that queued while it was busy as one batch (``run_batch_loop``,
no batching window: an idle session adds no wait) and runs it in two stages
(:mod:`runtime.comments.batch`):

* the stager stores the batch in one transaction and queues its events on the
  session's stream, then takes the next batch at once;
* the finisher, a second task, waits for those events to be durable and answers
  each waiter, batch after batch in order.

So while one batch's events are being written, the next batch is being stored:
a busy session pays one transaction per batch and its batches stay small.
Positions and events keep their order because both are fixed in the stager, one
batch after another under the session's lock.

Writers live in the nursery of :meth:`CommentWriters.run` and passivate when idle;
a create racing with passivation goes to a fresh writer. Before ``run`` (or after
it ended) a create is written on its own, inline.

What follows a create (its notifications) is the writer's job too (``then``), not
the requester's: a client that disconnects while its comment is being written
still gets the comment stored, so its mentions and replies must still go out.
:meth:`CommentWriters.settle` lets a shutdown wait for all of it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence

import attrs
import trio
from trio_util import AsyncValue

from runtime.actor import BatchPolicy, run_batch_loop
from runtime.comments.batch import CommentBatches, Created, Draft, Staged
from runtime.comments.locks import Turn
from runtime.mailbox import Mailbox, MailboxClosed

logger = logging.getLogger(__name__)

#: Creates queued for one session before a new one waits for room (backpressure).
QUEUE = 1024
#: Most creates written in one transaction.
MAX_BATCH = 256
#: Batches stored whose events are still being written, before the stager waits.
IN_FLIGHT = 4
#: Seconds an idle writer lingers before it stops (a later create starts a new one).
PASSIVATE_AFTER = 30.0

Reply = trio.MemorySendChannel[Created | Exception]
#: Run by the writer once a create is durable (and answered): its notifications.
Then = Callable[[Created], Awaitable[None]]


class WriterStopped(Exception):
    """The session's writer stopped before answering (shutdown or a bug)."""


@attrs.frozen
class _Waiting:
    draft: Draft
    reply: Reply
    then: Then | None


@attrs.frozen
class _Flight:
    """A staged batch on its way to the finisher."""

    replies: list[Reply]
    thens: list[Then | None]
    staged: Staged | Exception
    turn: Turn  # done once answered (or dropped)


def _close(flight: _Flight) -> None:
    # A waiter whose reply closes unanswered wakes with WriterStopped instead of
    # waiting forever; one already answered reads its result first. The turn ends
    # too, so the session's later changes are not held up behind it.
    for reply in flight.replies:
        reply.close()
    flight.turn.done()


class _Stager:
    """The batch handler of one session's writer: the first stage."""

    def __init__(
        self,
        session_id: str,
        batches: CommentBatches,
        finisher: trio.MemorySendChannel[_Flight],
        done_with: Callable[[_Flight], None],
    ) -> None:
        self.session_id = session_id
        self._batches = batches
        self._finisher = finisher
        self._done_with = done_with

    async def handle(self, batch: list[_Waiting]) -> None:
        flight = _Flight(
            [w.reply for w in batch],
            [w.then for w in batch],
            ValueError("not staged"),
            self._batches.locks.turn(self.session_id),
        )
        handed = False
        try:
            try:
                staged = await self._batches.stage(
                    self.session_id, [w.draft for w in batch], flight.turn
                )
                flight = attrs.evolve(flight, staged=staged)
            except Exception as exc:  # a bug: fail this batch, keep the writer
                logger.exception("comment writer for %s failed a batch", self.session_id)
                flight = attrs.evolve(flight, staged=exc)
            await self._finisher.send(flight)
            handed = True
        finally:
            if not handed:
                self._done_with(flight)

    def is_idle(self) -> bool:
        return True  # the finisher drains on its own: passivate once the mailbox is empty


class CommentWriters:
    """The per-session writers of one node (see the module docstring)."""

    def __init__(self, batches: CommentBatches, *, policy: BatchPolicy | None = None) -> None:
        self._batches = batches
        self._policy = policy or BatchPolicy(max_batch=MAX_BATCH)
        self._mailboxes: dict[str, Mailbox[_Waiting]] = {}
        self._nursery: trio.Nursery | None = None
        # Creates queued whose writer has not finished with them (settle waits for 0).
        self._unsettled = AsyncValue(0)

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

    async def settle(self) -> None:
        """Wait until every create queued so far is written, answered and its ``then``
        has run (a shutdown, once no new ones can come; the caller bounds the wait)."""
        await self._unsettled.wait_value(0)

    async def submit(self, session_id: str, draft: Draft, then: Then | None = None) -> Created:
        """Queue ``draft`` for its session's next batch and wait until it is durable.

        Raises the comment's exception. Once queued, cancellation does not
        withdraw it: the writer still writes it and runs ``then`` (nobody reads
        the answer).
        """
        if self._nursery is None:
            async with self._batches.locks.taking_turn(session_id) as turn:
                staged = await self._batches.stage(session_id, [draft], turn)
                [result] = await self._batches.finish(session_id, staged)
            if then is not None and not isinstance(result, Exception):
                await then(result)
        else:
            result = await self._queue(session_id, draft, then)
        if isinstance(result, Exception):
            raise result
        return result

    def _hold(self) -> None:
        self._unsettled.value += 1

    def _release(self, n: int = 1) -> None:
        self._unsettled.value -= n

    def _done_with(self, flight: _Flight) -> None:
        """A flight answered (and its ``then`` run), or dropped unanswered."""
        _close(flight)
        self._release(len(flight.replies))

    async def _queue(self, session_id: str, draft: Draft, then: Then | None) -> Created | Exception:
        send, receive = trio.open_memory_channel[Created | Exception](1)
        waiting = _Waiting(draft, send, then)
        self._hold()
        for _ in range(3):  # a writer may passivate between lookup and send
            mailbox = self._mailboxes.get(session_id) or self._spawn(session_id)
            try:
                await mailbox.send(waiting)
                break
            except MailboxClosed:
                if self._mailboxes.get(session_id) is mailbox:
                    del self._mailboxes[session_id]
            except BaseException:
                self._release()  # never queued (cancelled while waiting for room)
                raise
        else:
            self._release()
            raise WriterStopped(f"the comment writer of {session_id!r} kept closing")
        try:
            return await receive.receive()
        except trio.EndOfChannel:
            raise WriterStopped(f"the comment writer of {session_id!r} stopped") from None

    def _spawn(self, session_id: str) -> Mailbox[_Waiting]:
        assert self._nursery is not None
        mailbox: Mailbox[_Waiting] = Mailbox(QUEUE)
        self._mailboxes[session_id] = mailbox
        self._nursery.start_soon(self._run_writer, session_id, mailbox)
        return mailbox

    async def _run_writer(self, session_id: str, mailbox: Mailbox[_Waiting]) -> None:
        to_finisher, flights = trio.open_memory_channel[_Flight](IN_FLIGHT)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._finish, session_id, flights)
                async with to_finisher:  # closing it lets the finisher drain and end
                    stager = _Stager(session_id, self._batches, to_finisher, self._done_with)
                    await run_batch_loop(
                        stager, mailbox, policy=self._policy, passivate_after=PASSIVATE_AFTER
                    )
        finally:
            # Passivated (the mailbox was closed in the same step), or cancelled: refuse
            # what is still queued so its waiters wake up rather than wait for nobody.
            mailbox.close()
            while True:
                try:
                    mailbox.receive_nowait().reply.close()
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
                self._release()
            if self._mailboxes.get(session_id) is mailbox:
                del self._mailboxes[session_id]

    async def _finish(self, session_id: str, flights: trio.MemoryReceiveChannel[_Flight]) -> None:
        """The second stage: answer each batch once its events are durable, in order."""
        try:
            async for flight in flights:
                try:
                    await self._answer(session_id, flight)
                finally:
                    self._done_with(flight)
        finally:
            # Cancelled: batches staged but not yet answered wake their waiters.
            while True:
                try:
                    self._done_with(flights.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel):
                    break

    async def _answer(self, session_id: str, flight: _Flight) -> None:
        staged = flight.staged
        results: Sequence[Created | Exception]
        if isinstance(staged, Exception):
            results = [staged] * len(flight.replies)
        else:
            try:
                results = await self._batches.finish(session_id, staged)
            except Exception as exc:  # a bug: fail this batch, keep the writer
                logger.exception("comment writer for %s failed a batch", session_id)
                results = [exc] * len(flight.replies)
        for reply, result in zip(flight.replies, results, strict=True):
            try:
                reply.send_nowait(result)
            except (trio.WouldBlock, trio.BrokenResourceError):
                pass  # the waiter gave up; its comment is written all the same
        # After the answers, so no ack waits for them.
        for then, result in zip(flight.thens, results, strict=True):
            if then is None or isinstance(result, Exception):
                continue
            try:
                await then(result)
            except Exception:  # the comment stands; only what follows it failed
                logger.exception("comment writer for %s: what follows a create failed", session_id)
