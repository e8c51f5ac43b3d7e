"""Writing a batch of new comments and threads for one session, in two stages.

``stage``: under the session's lock, store the batch (its comments in one
transaction, ``CommentStore.add_comments``; its new threads in another,
``create_threads``) and queue its ``comment:created`` / ``thread:created`` events
on the session's stream in the batch's order (positions, for comments). The lock
covers the queueing, not the events' persistence: the session actor's mailbox
order *is* the stream's order, so the next batch may be stored while this one's
events are being written.

``finish``: wait until the events are durable, queue their webhooks (in the
session's order: the batch's :class:`~runtime.comments.locks.Turn`), and give
each comment its result. Nothing is acknowledged before its event is
durable. A comment the store refuses (missing thread or parent, too deep) fails
alone; if the transaction fails on one bad row, the batch is written again one
comment at a time so that row fails alone too.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import attrs

from runtime.cluster.requests import ClusterRequestError
from runtime.comments.locks import SessionLocks, Turn
from runtime.comments.model import (
    CommentRecord,
    ThreadRecord,
    Unavailable,
    comment_json,
    thread_json,
)
from runtime.gateways.comment_store import AddedComment, CommentStore
from runtime.gateways.database import each_alone_if_refused

JSON = Any
Published = Callable[[str, int, str, JSON], Awaitable[None]]  # (session, seq, name, data)


@attrs.frozen
class NewThread:
    """A thread to create with its first comment."""

    thread: ThreadRecord
    first: CommentRecord


#: What a batch holds: comments to add (drafts: the store places them) and new threads.
Draft = CommentRecord | NewThread


class Queued(Protocol):
    """Events queued on a session's stream, in order."""

    async def seqs(self) -> Sequence[int | Exception]:
        """Each event's seq once durable, or why it was not stored."""
        ...


#: ``(session, [(name, data, user), ...])``: queue the events in this order (never raises).
QueueEvents = Callable[[str, Sequence[tuple[str, JSON, str]]], Awaitable[Queued]]


@attrs.frozen
class Created:
    """A new comment (or thread: its first comment, no participants), stored and
    durable in the stream as ``seq``."""

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

    async def stage(self, session_id: str, drafts: Sequence[Draft], turn: Turn) -> Staged:
        """Store the batch and queue its events; never raises (but is cancellable).

        ``turn`` (the caller ends it) orders the batch's webhooks among the session's.
        """
        async with turn.locked():
            # Stamped here, under the lock, so creation times follow positions.
            now = self._clock()
            drafts = [_stamped(d, now) for d in drafts]
            comments = [d for d in drafts if isinstance(d, CommentRecord)]
            threads = [(d.thread, d.first) for d in drafts if isinstance(d, NewThread)]
            store = self._store
            added = iter(await each_alone_if_refused(store.add_comments, comments, "comments"))
            made = iter(await each_alone_if_refused(store.create_threads, threads, "threads"))
            stored: list[AddedComment | Exception] = []
            events: list[tuple[str, JSON, str]] = []
            for draft in drafts:  # back in the batch's order
                if isinstance(draft, CommentRecord):
                    result = next(added)
                    if isinstance(result, AddedComment):
                        data = comment_json(result.comment, {})
                        events.append(("comment:created", data, draft.author_id))
                else:
                    pair = next(made)
                    result = pair if isinstance(pair, Exception) else _as_added(*pair)
                    if isinstance(result, AddedComment):
                        data = {
                            **thread_json(result.thread),
                            "comments": [comment_json(result.comment, {})],
                        }
                        events.append(("thread:created", data, draft.thread.author_id))
                stored.append(result)
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
            name, data, _ = next(events)
            seq = next(seqs)
            if isinstance(seq, Exception):
                results.append(stream_error(seq))  # stored, not in the stream: it fails
                continue
            try:
                await self._published(session_id, seq, name, data)
            except Exception as exc:  # stored and streamed, but its webhook was not queued
                results.append(exc)
                continue
            results.append(Created(stored, data, seq))
        return results


def stream_error(exc: Exception) -> Exception:
    """Why an event did not reach the stream, as the requester should hear it."""
    if isinstance(exc, ClusterRequestError):  # a relay node could not reach the owner
        return Unavailable(f"session stream unavailable, retry: {exc}")
    return exc


def _stamped(draft: Draft, now: float) -> Draft:
    if isinstance(draft, CommentRecord):
        return attrs.evolve(draft, created_at=now)
    thread = attrs.evolve(draft.thread, created_at=now, updated_at=now)
    return NewThread(thread, attrs.evolve(draft.first, created_at=now))


def _as_added(thread: ThreadRecord, first: CommentRecord) -> AddedComment:
    return AddedComment(thread, first, frozenset())


@attrs.frozen
class Appended:
    """Events already appended (one at a time, in order): their seqs are known."""

    results: Sequence[int | Exception]

    async def seqs(self) -> Sequence[int | Exception]:
        return self.results
