"""The comment store's contract: threads, comments and reactions.

Two implementations behave the same (``tests/comments/test_store_contract.py``
runs over both): :mod:`comment_store_memory` and :mod:`comment_store_postgres`.
JSON values come back as PostgreSQL returns them, positions in a thread are
1, 2, 3, ... with no gap, a thread's listing cursor is its ``pos``. The service
validates; the stores keep. Each method is atomic.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import attrs

from runtime.comments.model import (
    MAX_DEPTH,
    CommentError,
    CommentRecord,
    Invalid,
    NotFound,
    ThreadFilter,
    ThreadRecord,
)
from runtime.gateways.memory import decode_json, encode_json

JSON = Any
Reactions = dict[str, dict[str, list[str]]]  # comment id -> emoji -> users


def normalize(value: JSON) -> JSON:
    """``value`` as it reads back from a jsonb column."""
    return decode_json(encode_json(value))


@attrs.frozen
class AddedComment:
    """One comment stored by :meth:`CommentStore.add_comments`.

    ``thread`` is the thread as this comment left it (its ``comment_count`` is the
    comment's position); ``participants`` are the thread's writers *before* it, so a
    batch tells each comment the same as one-at-a-time writes would have.
    """

    thread: ThreadRecord
    comment: CommentRecord
    participants: frozenset[str]


def placement(
    draft: CommentRecord, thread: ThreadRecord | None, parent: tuple[str, str, int] | None
) -> int | CommentError:
    """The depth of ``draft`` under ``parent`` (thread id, session id, depth), or why not.

    Shared by both stores so a refused comment reads the same from either.
    """
    if thread is None or thread.session_id != draft.session_id:
        return NotFound(
            f"no thread {draft.thread_id!r} in session {draft.session_id!r}", "$.threadId"
        )
    if draft.parent_id is None:
        return 0
    if parent is None or parent[0] != draft.thread_id or parent[1] != draft.session_id:
        return NotFound(f"no comment {draft.parent_id!r} in this thread", "$.parentId")
    if parent[2] + 1 > MAX_DEPTH:
        return Invalid(f"replies nest at most {MAX_DEPTH} deep", "$.parentId")
    return parent[2] + 1


class CommentStore(Protocol):
    async def create_thread(
        self, thread: ThreadRecord, first: CommentRecord
    ) -> tuple[ThreadRecord, CommentRecord]:
        """Insert a thread with its first comment (position 1)."""

    async def create_threads(
        self, threads: Sequence[tuple[ThreadRecord, CommentRecord]]
    ) -> list[tuple[ThreadRecord, CommentRecord] | Exception]:
        """``create_thread`` for several at once, in one atomic write; one result each.

        A pair whose text cannot be stored gets its exception as its result; the
        others are written. An exception raised instead means none was.
        """

    async def add_comment(self, comment: CommentRecord) -> tuple[ThreadRecord, CommentRecord]:
        """Append to its thread at the next position; None-safe: the thread must exist."""

    async def add_comments(self, drafts: Sequence[CommentRecord]) -> list[AddedComment | Exception]:
        """Append several comments in one atomic write, in order; one result per draft.

        Each draft names its thread and parent (``depth`` and ``position`` are the
        store's to set). A draft whose thread or parent is missing (or nests too
        deep) or whose text cannot be stored gets its exception as its result and
        takes no position; the others are written. An exception raised instead
        (the database failed) means none was.
        """

    async def get_thread(self, session_id: str, thread_id: str) -> ThreadRecord | None: ...

    async def get_comment(self, session_id: str, comment_id: str) -> CommentRecord | None: ...

    async def edit_comment(
        self, session_id: str, comment_id: str, body: str, mentions: Sequence[str], at: float
    ) -> CommentRecord | None: ...

    async def delete_comment(
        self, session_id: str, comment_id: str, by: str, at: float
    ) -> CommentRecord | None: ...

    async def set_resolved(
        self, session_id: str, thread_id: str, resolved: bool, by: str, at: float
    ) -> ThreadRecord | None: ...

    async def update_thread(
        self, session_id: str, thread_id: str, *, metadata: JSON, anchor: JSON, at: float
    ) -> ThreadRecord | None: ...

    async def add_reaction(self, comment_id: str, emoji: str, user_id: str, at: float) -> bool:
        """True if added, False if the user had already reacted with it."""

    async def remove_reaction(self, comment_id: str, emoji: str, user_id: str) -> bool: ...

    async def reactions(self, comment_ids: Sequence[str]) -> Reactions: ...

    async def list_threads(
        self, session_id: str, where: ThreadFilter, after: int, limit: int
    ) -> list[ThreadRecord]:
        """Threads with ``pos > after``, oldest first."""

    async def list_comments(self, session_id: str, thread_id: str) -> list[CommentRecord]:
        """Every comment of the thread (tombstones included), by position."""

    async def participants(self, session_id: str, thread_id: str) -> set[str]:
        """Everyone who wrote in the thread (its author included)."""
