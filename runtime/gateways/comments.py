"""Comment stores: threads, comments and reactions, in memory and in PostgreSQL.

Both implementations behave the same (``tests/comments/test_store_contract.py``
runs over both): JSON values come back as PostgreSQL returns them, positions in
a thread are 1, 2, 3, ... with no gap, a thread's listing cursor is its ``pos``.
The service validates; the stores keep. Each method is atomic.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any, Protocol

import attrs
import psycopg

from runtime.comments.model import CommentRecord, ThreadFilter, ThreadRecord
from runtime.gateways.database import DatabaseGateway, Row
from runtime.gateways.memory import check_text, decode_json, encode_json

JSON = Any
Conn = psycopg.Connection[Any]
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


# -- memory ----------------------------------------------------------------------------


class MemoryCommentStore:
    def __init__(self) -> None:
        self._threads: dict[str, ThreadRecord] = {}
        self._comments: dict[str, CommentRecord] = {}
        self._by_thread: dict[str, list[str]] = {}
        self._reactions: dict[str, dict[str, dict[str, float]]] = {}
        self._pos = itertools.count(1)

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
        self._threads[thread.id] = thread
        self._comments[first.id] = first
        self._by_thread[thread.id] = [first.id]
        return thread, first

    async def add_comment(self, comment: CommentRecord) -> tuple[ThreadRecord, CommentRecord]:
        check_text(comment.id, comment.body, *comment.mentions)
        thread = self._threads[comment.thread_id]
        thread = attrs.evolve(
            thread, comment_count=thread.comment_count + 1, updated_at=comment.created_at
        )
        comment = attrs.evolve(comment, position=thread.comment_count)
        self._threads[thread.id] = thread
        self._comments[comment.id] = comment
        self._by_thread[thread.id].append(comment.id)
        return thread, comment

    async def get_thread(self, session_id: str, thread_id: str) -> ThreadRecord | None:
        thread = self._threads.get(thread_id)
        return thread if thread is not None and thread.session_id == session_id else None

    async def get_comment(self, session_id: str, comment_id: str) -> CommentRecord | None:
        comment = self._comments.get(comment_id)
        return comment if comment is not None and comment.session_id == session_id else None

    async def edit_comment(
        self, session_id: str, comment_id: str, body: str, mentions: Sequence[str], at: float
    ) -> CommentRecord | None:
        check_text(body, *mentions)
        comment = await self.get_comment(session_id, comment_id)
        if comment is None or comment.deleted_at is not None:
            return None
        comment = attrs.evolve(comment, body=body, mentions=tuple(mentions), edited_at=at)
        self._comments[comment_id] = comment
        return comment

    async def delete_comment(
        self, session_id: str, comment_id: str, by: str, at: float
    ) -> CommentRecord | None:
        comment = await self.get_comment(session_id, comment_id)
        if comment is None or comment.deleted_at is not None:
            return None
        comment = attrs.evolve(comment, deleted_at=at, deleted_by=by)
        self._comments[comment_id] = comment
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
        self._threads[thread_id] = thread
        return thread

    async def update_thread(
        self, session_id: str, thread_id: str, *, metadata: JSON, anchor: JSON, at: float
    ) -> ThreadRecord | None:
        thread = await self.get_thread(session_id, thread_id)
        if thread is None:
            return None
        thread = attrs.evolve(
            thread, metadata=normalize(metadata), anchor=normalize(anchor), updated_at=at
        )
        self._threads[thread_id] = thread
        return thread

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
        return [self._comments[cid] for cid in self._by_thread.get(thread_id, [])]

    async def participants(self, session_id: str, thread_id: str) -> set[str]:
        return {c.author_id for c in await self.list_comments(session_id, thread_id)}


# -- PostgreSQL --------------------------------------------------------------------------

_THREAD = (
    "id, session_id, author_id, anchor::text, metadata::text, resolved, resolved_by,"
    " resolved_at, comment_count, created_at, updated_at, pos"
)
_COMMENT = (
    "id, thread_id, session_id, parent_id, depth, position, author_id, body, mentions,"
    " created_at, edited_at, deleted_at, deleted_by"
)


def _thread(row: Row) -> ThreadRecord:
    (tid, sid, author, anchor, metadata, resolved, rby, rat, count, created, updated, pos) = row
    return ThreadRecord(
        id=tid,
        session_id=sid,
        author_id=author,
        anchor=None if anchor is None else decode_json(anchor),
        metadata=decode_json(metadata),
        resolved=bool(resolved),
        resolved_by=rby,
        resolved_at=rat,
        comment_count=int(count),
        created_at=float(created),
        updated_at=float(updated),
        pos=int(pos),
    )


def _comment(row: Row) -> CommentRecord:
    (cid, tid, sid, parent, depth, pos, author, body, mentions, created, edited, deleted, by) = row
    return CommentRecord(
        id=cid,
        thread_id=tid,
        session_id=sid,
        parent_id=parent,
        depth=int(depth),
        position=int(pos),
        author_id=author,
        body=body,
        mentions=tuple(mentions or ()),
        created_at=float(created),
        edited_at=edited,
        deleted_at=deleted,
        deleted_by=by,
    )


def _insert_comment(conn: Conn, c: CommentRecord) -> CommentRecord:
    row = conn.execute(
        "INSERT INTO comments (id, thread_id, session_id, parent_id, depth, position,"
        " author_id, body, mentions, created_at) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)"
        " RETURNING " + _COMMENT,
        (
            c.id,
            c.thread_id,
            c.session_id,
            c.parent_id,
            c.depth,
            c.position,
            c.author_id,
            c.body,
            list(c.mentions),
            c.created_at,
        ),
    ).fetchone()
    assert row is not None
    return _comment(row)


class PostgresCommentStore:
    def __init__(self, db: DatabaseGateway) -> None:
        self._db = db

    async def create_thread(
        self, thread: ThreadRecord, first: CommentRecord
    ) -> tuple[ThreadRecord, CommentRecord]:
        check_text(thread.id, first.id, first.body, *first.mentions)
        anchor = None if thread.anchor is None else encode_json(thread.anchor)
        metadata = encode_json(thread.metadata)

        def work(conn: Conn) -> tuple[ThreadRecord, CommentRecord]:
            row = conn.execute(
                "INSERT INTO comment_threads (id, session_id, author_id, anchor, metadata,"
                " comment_count, created_at, updated_at)"
                " VALUES (%s, %s, %s, %s::jsonb, %s::jsonb, 1, %s, %s) RETURNING " + _THREAD,
                (
                    thread.id,
                    thread.session_id,
                    thread.author_id,
                    anchor,
                    metadata,
                    thread.created_at,
                    thread.updated_at,
                ),
            ).fetchone()
            assert row is not None
            return _thread(row), _insert_comment(conn, attrs.evolve(first, position=1))

        return await self._db.run_in_transaction(work)

    async def add_comment(self, comment: CommentRecord) -> tuple[ThreadRecord, CommentRecord]:
        check_text(comment.id, comment.body, *comment.mentions)

        def work(conn: Conn) -> tuple[ThreadRecord, CommentRecord]:
            # The row lock taken by this UPDATE serialises positions within the thread.
            row = conn.execute(
                "UPDATE comment_threads SET comment_count = comment_count + 1, updated_at = %s"
                " WHERE id = %s AND session_id = %s RETURNING " + _THREAD,
                (comment.created_at, comment.thread_id, comment.session_id),
            ).fetchone()
            if row is None:
                raise KeyError(comment.thread_id)
            thread = _thread(row)
            stored = _insert_comment(conn, attrs.evolve(comment, position=thread.comment_count))
            return thread, stored

        return await self._db.run_in_transaction(work)

    async def get_thread(self, session_id: str, thread_id: str) -> ThreadRecord | None:
        row = await self._db.fetch_one(
            "SELECT " + _THREAD + " FROM comment_threads WHERE id = %s AND session_id = %s",
            (thread_id, session_id),
        )
        return None if row is None else _thread(row)

    async def get_comment(self, session_id: str, comment_id: str) -> CommentRecord | None:
        row = await self._db.fetch_one(
            "SELECT " + _COMMENT + " FROM comments WHERE id = %s AND session_id = %s",
            (comment_id, session_id),
        )
        return None if row is None else _comment(row)

    async def edit_comment(
        self, session_id: str, comment_id: str, body: str, mentions: Sequence[str], at: float
    ) -> CommentRecord | None:
        check_text(body, *mentions)

        def work(conn: Conn) -> CommentRecord | None:
            row = conn.execute(
                "UPDATE comments SET body = %s, mentions = %s, edited_at = %s"
                " WHERE id = %s AND session_id = %s AND deleted_at IS NULL RETURNING " + _COMMENT,
                (body, list(mentions), at, comment_id, session_id),
            ).fetchone()
            return None if row is None else _comment(row)

        return await self._db.run_in_transaction(work)

    async def delete_comment(
        self, session_id: str, comment_id: str, by: str, at: float
    ) -> CommentRecord | None:
        def work(conn: Conn) -> CommentRecord | None:
            row = conn.execute(
                "UPDATE comments SET deleted_at = %s, deleted_by = %s"
                " WHERE id = %s AND session_id = %s AND deleted_at IS NULL RETURNING " + _COMMENT,
                (at, by, comment_id, session_id),
            ).fetchone()
            if row is None:
                return None
            conn.execute("DELETE FROM comment_reactions WHERE comment_id = %s", (comment_id,))
            return _comment(row)

        return await self._db.run_in_transaction(work)

    async def set_resolved(
        self, session_id: str, thread_id: str, resolved: bool, by: str, at: float
    ) -> ThreadRecord | None:
        def work(conn: Conn) -> ThreadRecord | None:
            row = conn.execute(
                "UPDATE comment_threads SET resolved = %s, resolved_by = %s, resolved_at = %s,"
                " updated_at = %s WHERE id = %s AND session_id = %s RETURNING " + _THREAD,
                (
                    resolved,
                    by if resolved else None,
                    at if resolved else None,
                    at,
                    thread_id,
                    session_id,
                ),
            ).fetchone()
            return None if row is None else _thread(row)

        return await self._db.run_in_transaction(work)

    async def update_thread(
        self, session_id: str, thread_id: str, *, metadata: JSON, anchor: JSON, at: float
    ) -> ThreadRecord | None:
        encoded_anchor = None if anchor is None else encode_json(anchor)
        encoded_metadata = encode_json(metadata)

        def work(conn: Conn) -> ThreadRecord | None:
            row = conn.execute(
                "UPDATE comment_threads SET metadata = %s::jsonb, anchor = %s::jsonb,"
                " updated_at = %s WHERE id = %s AND session_id = %s RETURNING " + _THREAD,
                (encoded_metadata, encoded_anchor, at, thread_id, session_id),
            ).fetchone()
            return None if row is None else _thread(row)

        return await self._db.run_in_transaction(work)

    async def add_reaction(self, comment_id: str, emoji: str, user_id: str, at: float) -> bool:
        check_text(emoji)
        added = await self._db.execute(
            "INSERT INTO comment_reactions (comment_id, emoji, user_id, created_at)"
            " VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
            (comment_id, emoji, user_id, at),
        )
        return added == 1

    async def remove_reaction(self, comment_id: str, emoji: str, user_id: str) -> bool:
        removed = await self._db.execute(
            "DELETE FROM comment_reactions WHERE comment_id = %s AND emoji = %s AND user_id = %s",
            (comment_id, emoji, user_id),
        )
        return removed == 1

    async def reactions(self, comment_ids: Sequence[str]) -> Reactions:
        if not comment_ids:
            return {}
        rows = await self._db.fetch_all(
            "SELECT comment_id, emoji, array_agg(user_id ORDER BY user_id)"
            " FROM comment_reactions WHERE comment_id = ANY(%s) GROUP BY comment_id, emoji",
            (list(comment_ids),),
        )
        out: Reactions = {}
        for cid, emoji, users in rows:
            out.setdefault(cid, {})[emoji] = list(users)
        return out

    async def list_threads(
        self, session_id: str, where: ThreadFilter, after: int, limit: int
    ) -> list[ThreadRecord]:
        clauses = ["session_id = %s", "pos > %s"]
        params: list[Any] = [session_id, after]
        if where.resolved is not None:
            clauses.append("resolved = %s")
            params.append(where.resolved)
        if where.author_id is not None:
            clauses.append("author_id = %s")
            params.append(where.author_id)
        if where.match_anchor:
            if where.anchor is None:
                clauses.append("anchor IS NULL")
            else:
                clauses.append("anchor = %s::jsonb")
                params.append(encode_json(where.anchor))
        for key, value in where.metadata.items():
            clauses.append("metadata -> %s = %s::jsonb")
            params.extend([key, encode_json(value)])
        params.append(limit)
        sql = psycopg.sql.SQL(
            "SELECT " + _THREAD + " FROM comment_threads WHERE {} ORDER BY pos LIMIT %s"
        ).format(psycopg.sql.SQL(" AND ".join(clauses)))  # fixed clauses; values are params
        rows = await self._db.fetch_all(sql, params)
        return [_thread(r) for r in rows]

    async def list_comments(self, session_id: str, thread_id: str) -> list[CommentRecord]:
        rows = await self._db.fetch_all(
            "SELECT " + _COMMENT + " FROM comments WHERE thread_id = %s AND session_id = %s"
            " ORDER BY position",
            (thread_id, session_id),
        )
        return [_comment(r) for r in rows]

    async def participants(self, session_id: str, thread_id: str) -> set[str]:
        rows = await self._db.fetch_all(
            "SELECT DISTINCT author_id FROM comments WHERE thread_id = %s AND session_id = %s",
            (thread_id, session_id),
        )
        return {r[0] for r in rows}
