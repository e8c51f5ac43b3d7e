"""The comment store in PostgreSQL (migrations 0003 and later).

Positions are allocated under the thread's row lock, so a thread's comments are
1, 2, 3, ... with no gap even when writers race.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
import psycopg

from runtime.comments.model import CommentRecord, ThreadFilter, ThreadRecord
from runtime.gateways.comment_sealing import (
    filter_digests,
    metadata_digests,
    open_body,
    open_thread,
    seal_body,
    seal_thread,
)
from runtime.gateways.comment_store import JSON, AddedComment, Reactions, placement
from runtime.gateways.database import DatabaseGateway, LentConnection, Row, Statement
from runtime.gateways.encryption import EncryptionUnavailable, Sealer
from runtime.gateways.memory import check_text, decode_json, encode_json

Conn = psycopg.Connection[Any]


_THREAD = (
    "id, session_id, author_id, anchor::text, metadata::text, resolved, resolved_by,"
    " resolved_at, comment_count, created_at, updated_at, pos, metadata_enc"
)
_COMMENT = (
    "id, thread_id, session_id, parent_id, depth, position, author_id, body, mentions,"
    " created_at, edited_at, deleted_at, deleted_by, body_enc"
)


def _thread(row: Row, sealer: Sealer | None = None) -> ThreadRecord:
    (tid, sid, author, anchor, metadata, resolved, rby, rat, count, created, updated, pos, enc) = (
        row
    )
    if enc is not None:  # sealed (keys configured when it was written)
        if sealer is None:
            raise EncryptionUnavailable("thread metadata is encrypted but no keys are configured")
        meta, anch = open_thread(sealer, sid, tid, enc)
    else:
        meta = decode_json(metadata)
        anch = None if anchor is None else decode_json(anchor)
    return ThreadRecord(
        id=tid,
        session_id=sid,
        author_id=author,
        anchor=anch,
        metadata=meta,
        resolved=bool(resolved),
        resolved_by=rby,
        resolved_at=rat,
        comment_count=int(count),
        created_at=float(created),
        updated_at=float(updated),
        pos=int(pos),
    )


def _comment(row: Row, sealer: Sealer | None = None) -> CommentRecord:
    (cid, tid, sid, parent, depth, pos, author, body, mentions, created, edited, deleted, by) = row[
        :13
    ]
    enc = row[13]
    if enc is not None:  # sealed (keys configured when it was written)
        if sealer is None:
            raise EncryptionUnavailable("comment body is encrypted but no keys are configured")
        body = open_body(sealer, sid, cid, enc)
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


def _sealed_body(
    sealer: Sealer | None, c: CommentRecord
) -> tuple[str | None, bytes | None, str | None]:
    """``(body, body_enc, key_id)`` to store: plaintext without keys, else sealed."""
    if sealer is None:
        return c.body, None, None
    enc = seal_body(sealer, c.session_id, c.id, c.body)
    return None, enc, Sealer.key_id_of(enc)


_SealedThread = tuple[str | None, str | None, bytes | None, list[str] | None, str | None]


def _sealed_thread(
    sealer: Sealer | None, session_id: str, thread_id: str, metadata: JSON, anchor: JSON
) -> _SealedThread:
    """``(anchor, metadata, metadata_enc, metadata_idx, key_id)`` to store."""
    if sealer is None:
        return (
            None if anchor is None else encode_json(anchor),
            encode_json(metadata),
            None,
            None,
            None,
        )
    enc = seal_thread(sealer, session_id, thread_id, metadata, anchor)
    key_id = Sealer.key_id_of(enc)
    return None, None, enc, metadata_digests(sealer, key_id, metadata, anchor), key_id


_INSERT_COMMENTS = (
    "INSERT INTO comments (id, thread_id, session_id, parent_id, depth, position,"
    " author_id, body, mentions, created_at, body_enc, key_id) VALUES "
)
_COMMENT_VALUES = "(%s,%s,%s,%s,%s,%s,%s,%s,%s::text[],%s,%s,%s)"


def _comment_values(
    c: CommentRecord, sealed: tuple[str | None, bytes | None, str | None]
) -> tuple[Any, ...]:
    """One row of ``_COMMENT_VALUES`` (with its body as ``_sealed_body`` gave it)."""
    body, body_enc, key_id = sealed
    return (
        c.id,
        c.thread_id,
        c.session_id,
        c.parent_id,
        c.depth,
        c.position,
        c.author_id,
        body,
        list(c.mentions),
        c.created_at,
        body_enc,
        key_id,
    )


def _insert_comment(conn: Conn, c: CommentRecord, sealer: Sealer | None = None) -> CommentRecord:
    row = conn.execute(
        _INSERT_COMMENTS + _COMMENT_VALUES + " RETURNING " + _COMMENT,
        _comment_values(c, _sealed_body(sealer, c)),
    ).fetchone()
    assert row is not None
    return _comment(row, sealer)


def _thread_insert(thread: ThreadRecord, sealed: _SealedThread) -> Statement:
    anchor, metadata, enc, idx, key_id = sealed
    return (
        "INSERT INTO comment_threads (id, session_id, author_id, anchor, metadata,"
        " comment_count, created_at, updated_at, metadata_enc, metadata_idx, key_id)"
        " VALUES (%s, %s, %s, %s::jsonb, %s::jsonb, 1, %s, %s, %s, %s::text[], %s)"
        " RETURNING " + _THREAD,
        (
            thread.id,
            thread.session_id,
            thread.author_id,
            anchor,
            metadata,
            thread.created_at,
            thread.updated_at,
            enc,
            idx,
            key_id,
        ),
    )


def _comment_insert(values: tuple[Any, ...]) -> Statement:
    return (_INSERT_COMMENTS + _COMMENT_VALUES + " RETURNING " + _COMMENT, values)


class PostgresCommentStore:
    """With ``sealer``, bodies and thread metadata/anchors are stored sealed (see
    :mod:`runtime.gateways.comment_sealing`); rows stored in clear stay readable."""

    def __init__(self, db: DatabaseGateway, *, sealer: Sealer | None = None) -> None:
        self._db = db
        self.sealer = sealer

    async def create_thread(
        self, thread: ThreadRecord, first: CommentRecord
    ) -> tuple[ThreadRecord, CommentRecord]:
        [made] = await self.create_threads([(thread, first)])
        if isinstance(made, Exception):
            raise made
        return made

    async def create_threads(
        self, threads: Sequence[tuple[ThreadRecord, CommentRecord]]
    ) -> list[tuple[ThreadRecord, CommentRecord] | Exception]:
        """One transaction for the whole batch, sent as one message with its BEGIN and
        COMMIT: one round trip however many threads."""
        results: list[tuple[ThreadRecord, CommentRecord] | Exception | None] = [None] * len(threads)
        todo: list[tuple[int, Statement, Statement]] = []
        for i, (thread, first) in enumerate(threads):
            try:
                check_text(thread.id, first.id, first.body, *first.mentions)
                sealed = _sealed_thread(
                    self.sealer, thread.session_id, thread.id, thread.metadata, thread.anchor
                )
                first = attrs.evolve(first, position=1)
                comment = _comment_values(first, _sealed_body(self.sealer, first))
                todo.append((i, _thread_insert(thread, sealed), _comment_insert(comment)))
            except Exception as exc:
                results[i] = exc

        if todo:
            statements = [s for _, thread, first in todo for s in (thread, first)]
            rows = (await self._db.exchange([("BEGIN", ()), *statements, ("COMMIT", ())]))[1:-1]
            for k, (i, _, _) in enumerate(todo):
                [thread_row], [first_row] = rows[2 * k], rows[2 * k + 1]
                results[i] = (_thread(thread_row, self.sealer), _comment(first_row, self.sealer))
        return [r for r in results if r is not None]

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
            thread = _thread(row, self.sealer)
            stored = _insert_comment(
                conn, attrs.evolve(comment, position=thread.comment_count), self.sealer
            )
            return thread, stored

        return await self._db.run_in_transaction(work)

    async def add_comments(self, drafts: Sequence[CommentRecord]) -> list[AddedComment | Exception]:
        """One transaction for the whole batch in two round trips however many comments:
        BEGIN, lock its threads, read its parents and the threads' writers (one message);
        insert every comment, move each thread's count, COMMIT (another). Round trips
        are what a batch waits for, so both are sent from the Trio thread (the
        gateway's lane)."""
        results: list[AddedComment | Exception | None] = [None] * len(drafts)
        todo: list[tuple[int, CommentRecord, tuple[str | None, bytes | None, str | None]]] = []
        for i, draft in enumerate(drafts):
            try:
                check_text(draft.id, draft.body, *draft.mentions)
                todo.append((i, draft, _sealed_body(self.sealer, draft)))  # sealed off-thread
            except Exception as exc:
                results[i] = exc
        if todo:
            async with self._db.connection() as conn:
                done = await self._add_all(conn, todo)
            for i, result in done.items():
                results[i] = result
        assert all(r is not None for r in results)
        return [r for r in results if r is not None]

    async def _add_all(
        self,
        conn: LentConnection,
        todo: Sequence[tuple[int, CommentRecord, tuple[str | None, bytes | None, str | None]]],
    ) -> dict[int, AddedComment | Exception]:
        thread_ids = sorted({draft.thread_id for _, draft, _ in todo})
        parent_ids = sorted({d.parent_id for _, d, _ in todo if d.parent_id is not None})
        # The first message: BEGIN, then lock the threads (row locks serialise positions
        # within each thread, other nodes included; taken in id order so two batches
        # never wait on each other in a cycle), read the parents, and read the threads'
        # writers once the locks are held (the server runs them in order).
        _, locked, parent_rows, writer_rows = await conn.exchange(
            [
                ("BEGIN", ()),
                (
                    "SELECT " + _THREAD + " FROM comment_threads WHERE id = ANY(%s::text[])"
                    " ORDER BY id FOR UPDATE",
                    (thread_ids,),
                ),
                (
                    "SELECT id, thread_id, session_id, depth FROM comments"
                    " WHERE id = ANY(%s::text[])",
                    (parent_ids,),
                ),
                (
                    "SELECT DISTINCT thread_id, author_id FROM comments"
                    " WHERE thread_id = ANY(%s::text[])",
                    (thread_ids,),
                ),
            ],
        )
        threads = {row[0]: _thread(row, self.sealer) for row in locked}
        parents = {cid: (tid, sid, int(depth)) for cid, tid, sid, depth in parent_rows}
        writers: dict[str, set[str]] = {tid: set() for tid in threads}
        for tid, author in writer_rows:
            writers[tid].add(author)
        out: dict[int, AddedComment | Exception] = {}
        inserts: list[tuple[Any, ...]] = []
        for i, draft, sealed in todo:
            thread = threads.get(draft.thread_id)
            depth = placement(draft, thread, parents.get(draft.parent_id or ""))
            if isinstance(depth, Exception):
                out[i] = depth
                continue
            assert thread is not None
            position = thread.comment_count + 1
            comment = attrs.evolve(draft, depth=depth, position=position)
            thread = threads[thread.id] = attrs.evolve(
                thread, comment_count=position, updated_at=draft.created_at
            )
            out[i] = AddedComment(thread, comment, frozenset(writers[thread.id]))
            writers[thread.id].add(draft.author_id)
            parents[comment.id] = (thread.id, draft.session_id, depth)
            inserts.append(_comment_values(comment, sealed))
        # The second: the inserts, each thread's count, and COMMIT.
        writes: list[Statement] = []
        if inserts:
            touched = {row[1] for row in inserts}
            moved = [t for t in threads.values() if t.id in touched]
            writes.append(
                (
                    _INSERT_COMMENTS + ", ".join([_COMMENT_VALUES] * len(inserts)),
                    [value for row in inserts for value in row],
                )
            )
            writes.append(
                (
                    "UPDATE comment_threads t SET comment_count = u.n, updated_at = u.at"
                    " FROM unnest(%s::text[], %s::int[], %s::float8[]) AS u(id, n, at)"
                    " WHERE t.id = u.id",
                    (
                        [t.id for t in moved],
                        [t.comment_count for t in moved],
                        [t.updated_at for t in moved],
                    ),
                )
            )
        await conn.exchange([*writes, ("COMMIT", ())])
        return out

    async def get_thread(self, session_id: str, thread_id: str) -> ThreadRecord | None:
        row = await self._db.fetch_one(
            "SELECT " + _THREAD + " FROM comment_threads WHERE id = %s AND session_id = %s",
            (thread_id, session_id),
        )
        return None if row is None else _thread(row, self.sealer)

    async def get_comment(self, session_id: str, comment_id: str) -> CommentRecord | None:
        row = await self._db.fetch_one(
            "SELECT " + _COMMENT + " FROM comments WHERE id = %s AND session_id = %s",
            (comment_id, session_id),
        )
        return None if row is None else _comment(row, self.sealer)

    async def edit_comment(
        self, session_id: str, comment_id: str, body: str, mentions: Sequence[str], at: float
    ) -> CommentRecord | None:
        check_text(body, *mentions)
        sealer = self.sealer
        plain: str | None = body
        body_enc = key_id = None
        if sealer is not None:
            plain, body_enc = None, seal_body(sealer, session_id, comment_id, body)
            key_id = Sealer.key_id_of(body_enc)

        def work(conn: Conn) -> CommentRecord | None:
            row = conn.execute(
                "UPDATE comments SET body = %s, mentions = %s, edited_at = %s, body_enc = %s,"
                " key_id = %s"
                " WHERE id = %s AND session_id = %s AND deleted_at IS NULL RETURNING " + _COMMENT,
                (plain, list(mentions), at, body_enc, key_id, comment_id, session_id),
            ).fetchone()
            return None if row is None else _comment(row, sealer)

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
            return _comment(row, self.sealer)

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
            return None if row is None else _thread(row, self.sealer)

        return await self._db.run_in_transaction(work)

    async def update_thread(
        self, session_id: str, thread_id: str, *, metadata: JSON, anchor: JSON, at: float
    ) -> ThreadRecord | None:
        sealer = self.sealer
        encoded_anchor, encoded_metadata, enc, idx, key_id = _sealed_thread(
            sealer, session_id, thread_id, metadata, anchor
        )

        def work(conn: Conn) -> ThreadRecord | None:
            row = conn.execute(
                "UPDATE comment_threads SET metadata = %s::jsonb, anchor = %s::jsonb,"
                " metadata_enc = %s, metadata_idx = %s, key_id = %s,"
                " updated_at = %s WHERE id = %s AND session_id = %s RETURNING " + _THREAD,
                (encoded_metadata, encoded_anchor, enc, idx, key_id, at, thread_id, session_id),
            ).fetchone()
            return None if row is None else _thread(row, sealer)

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
        plain: list[str] = []  # on rows stored in clear
        plain_params: list[Any] = []
        if where.match_anchor:
            if where.anchor is None:
                plain.append("anchor IS NULL")
            else:
                plain.append("anchor = %s::jsonb")
                plain_params.append(encode_json(where.anchor))
        for key, value in where.metadata.items():
            plain.append("metadata -> %s = %s::jsonb")
            plain_params.extend([key, encode_json(value)])
        sealer = self.sealer
        if plain and sealer is None:
            clauses.extend(plain)
            params.extend(plain_params)
        elif plain and sealer is not None:
            # Sealed rows: match the keyed digests under the row's key (one set per key).
            either = ["(metadata_enc IS NULL AND " + " AND ".join(plain) + ")"]
            params.extend(plain_params)
            for key_id, digests in filter_digests(
                sealer, where.metadata, where.anchor, where.match_anchor
            ):
                either.append("(key_id = %s AND metadata_idx @> %s::text[])")
                params.extend([key_id, digests])
            clauses.append("(" + " OR ".join(either) + ")")
        params.append(limit)
        sql = psycopg.sql.SQL(
            "SELECT " + _THREAD + " FROM comment_threads WHERE {} ORDER BY pos LIMIT %s"
        ).format(psycopg.sql.SQL(" AND ".join(clauses)))  # fixed clauses; values are params
        rows = await self._db.fetch_all(sql, params)
        return [_thread(r, self.sealer) for r in rows]

    async def list_comments(self, session_id: str, thread_id: str) -> list[CommentRecord]:
        rows = await self._db.fetch_all(
            "SELECT " + _COMMENT + " FROM comments WHERE thread_id = %s AND session_id = %s"
            " ORDER BY position",
            (thread_id, session_id),
        )
        return [_comment(r, self.sealer) for r in rows]

    async def participants(self, session_id: str, thread_id: str) -> set[str]:
        rows = await self._db.fetch_all(
            "SELECT DISTINCT author_id FROM comments WHERE thread_id = %s AND session_id = %s",
            (thread_id, session_id),
        )
        return {r[0] for r in rows}

    async def rotate_keys(self, *, batch_size: int = 500) -> tuple[int, int]:
        """Re-encrypt sealed threads and comments not under the current key.

        ``batch_size`` rows per transaction (threads first, then comments), online and
        idempotent like ``PostgresEventStore.rotate_keys``; a thread's index digests are
        recomputed under the new key with its envelope. Returns ``(rows, batches)``.
        """
        if self.sealer is None:
            raise EncryptionUnavailable()
        if batch_size <= 0:
            raise ValueError("batch_size must be > 0")
        sealer = self.sealer
        current = sealer.current_key_id

        def threads(conn: Conn) -> int:
            rows = conn.execute(
                "SELECT id, session_id, metadata_enc FROM comment_threads"
                " WHERE key_id IS NOT NULL AND key_id <> %s ORDER BY key_id, id LIMIT %s"
                " FOR UPDATE",
                (current, batch_size),
            ).fetchall()
            ids, encs, idxs = [], [], []
            for tid, sid, envelope in rows:
                metadata, anchor = open_thread(sealer, sid, tid, envelope)
                ids.append(tid)
                encs.append(seal_thread(sealer, sid, tid, metadata, anchor))
                # stored as text[]; a Postgres array literal keeps the unnest 1-dimensional
                digests = metadata_digests(sealer, current, metadata, anchor)
                idxs.append("{" + ",".join(digests) + "}")
            if ids:
                conn.execute(
                    "UPDATE comment_threads t SET metadata_enc = u.enc,"
                    " metadata_idx = u.idx::text[], key_id = %s"
                    " FROM unnest(%s::text[], %s::bytea[], %s::text[]) AS u(id, enc, idx)"
                    " WHERE t.id = u.id",
                    (current, ids, encs, idxs),
                )
            return len(rows)

        def comments(conn: Conn) -> int:
            rows = conn.execute(
                "SELECT id, session_id, body_enc FROM comments"
                " WHERE key_id IS NOT NULL AND key_id <> %s ORDER BY key_id, id LIMIT %s"
                " FOR UPDATE",
                (current, batch_size),
            ).fetchall()
            ids = [cid for cid, _, _ in rows]
            encs = [
                seal_body(sealer, sid, cid, open_body(sealer, sid, cid, envelope))
                for cid, sid, envelope in rows
            ]
            if ids:
                conn.execute(
                    "UPDATE comments c SET body_enc = u.enc, key_id = %s"
                    " FROM unnest(%s::text[], %s::bytea[]) AS u(id, enc) WHERE c.id = u.id",
                    (current, ids, encs),
                )
            return len(rows)

        rotated = batches = 0
        for batch in (threads, comments):
            while done := await self._db.run_in_transaction(batch, idempotent=True):
                rotated += done
                batches += 1
        return rotated, batches

    async def count_needing_rotation(self) -> int:
        """Sealed threads and comments not under the current key (0 without keys)."""
        if self.sealer is None:
            return 0
        row = await self._db.fetch_one(
            "SELECT (SELECT count(*) FROM comment_threads WHERE key_id IS NOT NULL"
            " AND key_id <> %s) + (SELECT count(*) FROM comments WHERE key_id IS NOT NULL"
            " AND key_id <> %s)",
            (self.sealer.current_key_id, self.sealer.current_key_id),
        )
        return 0 if row is None else int(row[0])
