"""The comment store in memory (tests, and the embedded default's dev runs).

With a sealer, bodies and thread metadata/anchors are kept sealed, as in PostgreSQL.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import attrs

from runtime.comments.model import CommentRecord, ThreadFilter, ThreadRecord
from runtime.gateways.comment_sealing import open_body, open_thread, seal_body, seal_thread
from runtime.gateways.comment_store import JSON, AddedComment, Reactions, normalize, placement
from runtime.gateways.encryption import Sealer
from runtime.gateways.memory import check_text


class MemoryCommentStore:
    """With ``sealer``, bodies and thread metadata/anchors are kept sealed, as in PostgreSQL."""

    def __init__(self, *, sealer: Sealer | None = None) -> None:
        self._threads: dict[str, ThreadRecord] = {}
        self._comments: dict[str, CommentRecord] = {}
        self._by_thread: dict[str, list[str]] = {}
        self._reactions: dict[str, dict[str, dict[str, float]]] = {}
        self._pos = itertools.count(1)
        self.sealer = sealer
        self._sealed: dict[str, bytes] = {}  # thread or comment id -> envelope

    def _put_thread(self, thread: ThreadRecord) -> ThreadRecord:
        if self.sealer is not None:
            self._sealed[thread.id] = seal_thread(
                self.sealer, thread.session_id, thread.id, thread.metadata, thread.anchor
            )
            self._threads[thread.id] = attrs.evolve(thread, metadata={}, anchor=None)
        else:
            self._threads[thread.id] = thread
        return thread

    def _open_thread(self, thread: ThreadRecord) -> ThreadRecord:
        envelope = self._sealed.get(thread.id)
        if envelope is None or self.sealer is None:
            return thread
        metadata, anchor = open_thread(self.sealer, thread.session_id, thread.id, envelope)
        return attrs.evolve(thread, metadata=metadata, anchor=anchor)

    def _put_comment(self, comment: CommentRecord) -> CommentRecord:
        if self.sealer is not None:
            self._sealed[comment.id] = seal_body(
                self.sealer, comment.session_id, comment.id, comment.body
            )
            self._comments[comment.id] = attrs.evolve(comment, body="")
        else:
            self._comments[comment.id] = comment
        return comment

    def _open_comment(self, comment: CommentRecord) -> CommentRecord:
        envelope = self._sealed.get(comment.id)
        if envelope is None or self.sealer is None:
            return comment
        body = open_body(self.sealer, comment.session_id, comment.id, envelope)
        return attrs.evolve(comment, body=body)

    async def create_thread(
        self, thread: ThreadRecord, first: CommentRecord
    ) -> tuple[ThreadRecord, CommentRecord]:
        check_text(thread.id, first.id, first.body, *first.mentions)
        thread = attrs.evolve(
            thread,
            anchor=normalize(thread.anchor),
            metadata=normalize(thread.metadata),
            comment_count=1,
            pos=next(self._pos),
        )
        first = attrs.evolve(first, position=1, mentions=tuple(first.mentions))
        self._put_thread(thread)
        self._put_comment(first)
        self._by_thread[thread.id] = [first.id]
        return thread, first

    async def create_threads(
        self, threads: Sequence[tuple[ThreadRecord, CommentRecord]]
    ) -> list[tuple[ThreadRecord, CommentRecord] | Exception]:
        # create_thread never yields: the whole batch is one atomic step.
        results: list[tuple[ThreadRecord, CommentRecord] | Exception] = []
        for thread, first in threads:
            try:
                results.append(await self.create_thread(thread, first))
            except Exception as exc:
                results.append(exc)
        return results

    async def add_comment(self, comment: CommentRecord) -> tuple[ThreadRecord, CommentRecord]:
        check_text(comment.id, comment.body, *comment.mentions)
        return self._append(comment)

    def _append(self, comment: CommentRecord) -> tuple[ThreadRecord, CommentRecord]:
        thread = self._threads[comment.thread_id]
        thread = attrs.evolve(
            thread, comment_count=thread.comment_count + 1, updated_at=comment.created_at
        )
        comment = attrs.evolve(comment, position=thread.comment_count)
        self._threads[thread.id] = thread  # sealed fields unchanged
        thread = self._open_thread(thread)
        self._put_comment(comment)
        self._by_thread[thread.id].append(comment.id)
        return thread, comment

    async def add_comments(self, drafts: Sequence[CommentRecord]) -> list[AddedComment | Exception]:
        # No checkpoint inside: the whole batch is one atomic step, like one transaction.
        results: list[AddedComment | Exception] = []
        for draft in drafts:
            try:
                check_text(draft.id, draft.body, *draft.mentions)
            except Exception as exc:
                results.append(exc)
                continue
            thread = self._threads.get(draft.thread_id)
            parent = None if draft.parent_id is None else self._comments.get(draft.parent_id)
            depth = placement(
                draft,
                thread,
                None if parent is None else (parent.thread_id, parent.session_id, parent.depth),
            )
            if isinstance(depth, Exception):
                results.append(depth)
                continue
            assert thread is not None
            writers = frozenset(self._comments[c].author_id for c in self._by_thread[thread.id])
            stored, comment = self._append(attrs.evolve(draft, depth=depth))
            results.append(AddedComment(stored, comment, writers))
        return results

    async def get_thread(self, session_id: str, thread_id: str) -> ThreadRecord | None:
        thread = self._threads.get(thread_id)
        if thread is None or thread.session_id != session_id:
            return None
        return self._open_thread(thread)

    async def get_comment(self, session_id: str, comment_id: str) -> CommentRecord | None:
        comment = self._comments.get(comment_id)
        if comment is None or comment.session_id != session_id:
            return None
        return self._open_comment(comment)

    async def edit_comment(
        self, session_id: str, comment_id: str, body: str, mentions: Sequence[str], at: float
    ) -> CommentRecord | None:
        check_text(body, *mentions)
        comment = await self.get_comment(session_id, comment_id)
        if comment is None or comment.deleted_at is not None:
            return None
        comment = attrs.evolve(comment, body=body, mentions=tuple(mentions), edited_at=at)
        return self._put_comment(comment)

    async def delete_comment(
        self, session_id: str, comment_id: str, by: str, at: float
    ) -> CommentRecord | None:
        comment = await self.get_comment(session_id, comment_id)
        if comment is None or comment.deleted_at is not None:
            return None
        comment = attrs.evolve(comment, deleted_at=at, deleted_by=by)
        self._put_comment(comment)
        self._reactions.pop(comment_id, None)
        return comment

    async def set_resolved(
        self, session_id: str, thread_id: str, resolved: bool, by: str, at: float
    ) -> ThreadRecord | None:
        thread = await self.get_thread(session_id, thread_id)
        if thread is None:
            return None
        thread = attrs.evolve(
            thread,
            resolved=resolved,
            resolved_by=by if resolved else None,
            resolved_at=at if resolved else None,
            updated_at=at,
        )
        return self._put_thread(thread)

    async def update_thread(
        self, session_id: str, thread_id: str, *, metadata: JSON, anchor: JSON, at: float
    ) -> ThreadRecord | None:
        thread = await self.get_thread(session_id, thread_id)
        if thread is None:
            return None
        thread = attrs.evolve(
            thread, metadata=normalize(metadata), anchor=normalize(anchor), updated_at=at
        )
        return self._put_thread(thread)

    async def add_reaction(self, comment_id: str, emoji: str, user_id: str, at: float) -> bool:
        check_text(emoji)
        users = self._reactions.setdefault(comment_id, {}).setdefault(emoji, {})
        if user_id in users:
            return False
        users[user_id] = at
        return True

    async def remove_reaction(self, comment_id: str, emoji: str, user_id: str) -> bool:
        users = self._reactions.get(comment_id, {}).get(emoji, {})
        if user_id not in users:
            return False
        del users[user_id]
        return True

    async def reactions(self, comment_ids: Sequence[str]) -> Reactions:
        out: Reactions = {}
        for cid in comment_ids:
            for emoji, users in self._reactions.get(cid, {}).items():
                if users:
                    out.setdefault(cid, {})[emoji] = sorted(users)
        return out

    async def list_threads(
        self, session_id: str, where: ThreadFilter, after: int, limit: int
    ) -> list[ThreadRecord]:
        anchor = normalize(where.anchor) if where.match_anchor else None
        metadata = {k: normalize(v) for k, v in where.metadata.items()}
        found = []
        for thread in sorted(self._threads.values(), key=lambda t: t.pos):
            if thread.session_id != session_id or thread.pos <= after:
                continue
            thread = self._open_thread(thread)
            if where.resolved is not None and thread.resolved != where.resolved:
                continue
            if where.author_id is not None and thread.author_id != where.author_id:
                continue
            if where.match_anchor and thread.anchor != anchor:
                continue
            if any(
                k not in thread.metadata or thread.metadata[k] != v for k, v in metadata.items()
            ):
                continue
            found.append(thread)
            if len(found) >= limit:
                break
        return found

    async def list_comments(self, session_id: str, thread_id: str) -> list[CommentRecord]:
        if await self.get_thread(session_id, thread_id) is None:
            return []
        return [
            self._open_comment(self._comments[cid]) for cid in self._by_thread.get(thread_id, [])
        ]

    async def participants(self, session_id: str, thread_id: str) -> set[str]:
        return {c.author_id for c in await self.list_comments(session_id, thread_id)}
