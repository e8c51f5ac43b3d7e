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

from runtime.comments.model import CommentRecord, ThreadFilter, ThreadRecord
from runtime.gateways.memory import decode_json, encode_json

JSON = Any
Reactions = dict[str, dict[str, list[str]]]  # comment id -> emoji -> users


def normalize(value: JSON) -> JSON:
    """``value`` as it reads back from a jsonb column."""
    return decode_json(encode_json(value))


class CommentStore(Protocol):
    async def create_thread(
        self, thread: ThreadRecord, first: CommentRecord
    ) -> tuple[ThreadRecord, CommentRecord]:
        """Insert a thread with its first comment (position 1)."""

    async def add_comment(self, comment: CommentRecord) -> tuple[ThreadRecord, CommentRecord]:
        """Append to its thread at the next position; None-safe: the thread must exist."""

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
