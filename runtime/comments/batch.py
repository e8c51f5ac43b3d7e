"""Writing a batch of new comments for one session, in two stages.

``stage``: under the session's lock, store the batch in one transaction
(``CommentStore.add_comments``) and queue its ``comment:created`` events on the
session's stream in position order. The lock covers the queueing, not the
events' persistence: the session actor's mailbox order *is* the stream's order,
so the next batch may be stored while this one's events are being written.

``finish``: wait until the events are durable, queue their webhooks (in the
session's order: the batch's :class:`~runtime.comments.locks.Turn`), and give
each comment its result. Nothing is acknowledged before its event is
durable. A comment the store refuses (missing thread or parent, too deep) fails
alone; if the transaction fails on one bad row, the batch is written again one
comment at a time so that row fails alone too.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import attrs

from runtime.comments.locks import SessionLocks, Turn
from runtime.comments.model import CommentRecord, comment_json
from runtime.gateways.comment_store import AddedComment, CommentStore
from runtime.gateways.database import DatabaseError

logger = logging.getLogger(__name__)

JSON = Any
Published = Callable[[str, int, str, JSON], Awaitable[None]]  # (session, seq, name, data)

EVENT = "comment:created"


class Queued(Protocol):
    """Events queued on a session's stream, in order."""

    async def seqs(self) -> Sequence[int | Exception]:
        """Each event's seq once durable, or why it was not stored."""
        ...


#: ``(session, [(name, data, user), ...])``: queue the events in this order (never raises).
QueueEvents = Callable[[str, Sequence[tuple[str, JSON, str]]], Awaitable[Queued]]


@attrs.frozen
class Created:
    """A new comment, stored and durable in the stream as ``seq``."""

    added: AddedComment
    data: dict[str, JSON]
    seq: int


@attrs.frozen
class Staged:
    """A batch stored, its events queued: one entry per draft, in order."""

    stored: list[AddedComment | Exception]
    events: list[tuple[str, JSON, str]]  # one per AddedComment, in the same order
    queued: Queued | None
    turn: Turn


class CommentBatches:
    def __init__(
        self,
        store: CommentStore,
        *,
        locks: SessionLocks,
        queue_events: QueueEvents,
        published: Published,
        clock: Callable[[], float],
    ) -> None:
        self._store = store
        self.locks = locks
        self._queue_events = queue_events
        self._published = published
        self._clock = clock

    async def stage(self, session_id: str, drafts: Sequence[CommentRecord], turn: Turn) -> Staged:
        """Store the batch and queue its events; never raises (but is cancellable).

        ``turn`` (the caller ends it) orders the batch's webhooks among the session's.
        """
        async with turn.locked():
            # Stamped here, under the lock, so creation times follow positions.
            now = self._clock()
            stored = await self._store_all([attrs.evolve(d, created_at=now) for d in drafts])
            events = [
                (EVENT, comment_json(r.comment, {}), r.comment.author_id)
                for r in stored
                if isinstance(r, AddedComment)
            ]
            queued = await self._queue_events(session_id, events) if events else None
        return Staged(stored, events, queued, turn)

    async def finish(self, session_id: str, staged: Staged) -> list[Created | Exception]:
        """Wait for the events, queue their webhooks; one result per draft, in order."""
        seqs = iter(await staged.queued.seqs() if staged.queued is not None else ())
        await staged.turn.wait()
        events = iter(staged.events)
        results: list[Created | Exception] = []
        for stored in staged.stored:
            if isinstance(stored, Exception):
                results.append(stored)
                continue
            _, data, _ = next(events)
            seq = next(seqs)
            if isinstance(seq, Exception):
                results.append(seq)  # stored, but not in the stream: the request fails
                continue
            try:
                await self._published(session_id, seq, EVENT, data)
            except Exception as exc:  # stored and streamed, but its webhook was not queued
                results.append(exc)
                continue
            results.append(Created(stored, data, seq))
        return results

    async def _store_all(self, drafts: list[CommentRecord]) -> list[AddedComment | Exception]:
        try:
            return list(await self._store.add_comments(drafts))
        except DatabaseError as exc:  # unavailable or timed out: the same for every comment
            return [exc] * len(drafts)
        except Exception as exc:
            if len(drafts) == 1:
                return [exc]
            # One row broke the transaction (nothing was written): find it by writing
            # one at a time, so its batch-mates are not refused for it.
            logger.warning("comment batch of %d refused (%s); writing singly", len(drafts), exc)
            out: list[AddedComment | Exception] = []
            for draft in drafts:
                out.extend(await self._store_all([draft]))
            return out


@attrs.frozen
class Appended:
    """Events already appended (one at a time, in order): their seqs are known."""

    results: Sequence[int | Exception]

    async def seqs(self) -> Sequence[int | Exception]:
        return self.results
