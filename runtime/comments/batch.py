"""Writing a batch of new comments for one session: the session writer's job.

The batch is stored in one transaction (``CommentStore.add_comments``), then its
``comment:created`` events are appended in one go, in position order, under the
session's lock, so the stream keeps the store's order. Every comment is answered
only once its event is durable. A comment the store refuses (missing thread or
parent, too deep) fails alone; if the transaction itself fails on one bad row,
the batch is written again one comment at a time so that row fails alone too.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import attrs

from runtime.comments.locks import SessionLocks
from runtime.comments.model import CommentRecord, comment_json
from runtime.gateways.comment_store import AddedComment, CommentStore
from runtime.gateways.database import DatabaseError

logger = logging.getLogger(__name__)

JSON = Any
#: ``(session, [(name, data, user), ...]) -> [seq or exception, ...]``, appended in order.
AppendMany = Callable[[str, Sequence[tuple[str, JSON, str]]], Awaitable[Sequence[int | Exception]]]
Published = Callable[[str, int, str, JSON], Awaitable[None]]  # (session, seq, name, data)

EVENT = "comment:created"


@attrs.frozen
class Created:
    """A new comment, stored and in the stream as ``seq``."""

    added: AddedComment
    data: dict[str, JSON]
    seq: int


class CommentBatches:
    def __init__(
        self,
        store: CommentStore,
        *,
        locks: SessionLocks,
        append_many: AppendMany,
        published: Published,
        clock: Callable[[], float],
    ) -> None:
        self._store = store
        self._locks = locks
        self._append_many = append_many
        self._published = published
        self._clock = clock

    async def write(
        self, session_id: str, drafts: Sequence[CommentRecord]
    ) -> list[Created | Exception]:
        """One result per draft, in order; never raises (but is cancellable)."""
        async with self._locks.hold(session_id):
            # Stamped here, under the lock, so creation times follow positions.
            now = self._clock()
            stored = await self._store_all([attrs.evolve(d, created_at=now) for d in drafts])
            added = [(i, r) for i, r in enumerate(stored) if isinstance(r, AddedComment)]
            # Refused ones keep their exception; the added ones are filled in below.
            results: list[Created | Exception | None] = [
                r if isinstance(r, Exception) else None for r in stored
            ]
            if added:
                events = [
                    (EVENT, comment_json(a.comment, {}), a.comment.author_id) for _, a in added
                ]
                try:
                    seqs = await self._append_many(session_id, events)
                except Exception as exc:  # the session could not take them: none is acked
                    seqs = [exc] * len(events)
                for (i, a), (_, data, _), seq in zip(added, events, seqs, strict=True):
                    results[i] = await self._publish(session_id, a, data, seq)
        assert None not in results
        return [r for r in results if r is not None]

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

    async def _publish(
        self, session_id: str, added: AddedComment, data: dict[str, JSON], seq: int | Exception
    ) -> Created | Exception:
        if isinstance(seq, Exception):
            return seq
        try:
            await self._published(session_id, seq, EVENT, data)
        except Exception as exc:  # stored and streamed, but its webhook was not queued
            return exc
        return Created(added, data, seq)
