"""PostgreSQL implementations of the stores (tables from ``migrations/0001_core.sql``).

Values follow the rules in ``runtime.gateways.memory`` (``encode_json``,
``normalize_ts``, ``check_batch``) so both implementations behave the same.

Cancellation: each method is one transaction on a worker thread of the
``DatabaseGateway``; a cancelled call returns at once and its transaction is
cancelled server-side and rolled back, unless it had already committed (the
caller cannot tell which, see ``EventStore``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import psycopg

from runtime.gateways.database import DatabaseGateway, Row
from runtime.gateways.encryption import EncryptionUnavailable, Sealer
from runtime.gateways.memory import (
    MemberRecord,
    RotationReport,
    SeqConflict,
    SessionExists,
    SessionNotFound,
    SessionRecord,
    check_batch,
    check_text,
    decode_json,
    encode_json,
    event_aad,
    seal_event,
    trim_boundary,
    ts_to_datetime,
)
from runtime.gateways.store import JSON, SessionHead, StoredEvent

Conn = psycopg.Connection[Any]


class PostgresEventStore:
    """``EventStore`` over ``session_events``; the head lives in ``sessions.last_seq``.

    A sensitive event's payload is sealed with ``sealer`` into ``data_enc`` (with
    its ``key_id``; ``data`` stays NULL) and opened again on read.
    """

    def __init__(self, db: DatabaseGateway, *, sealer: Sealer | None = None) -> None:
        self._db = db
        self.sealer = sealer

    async def load_head(self, session_id: str) -> SessionHead:
        row = await self._db.fetch_one(
            "SELECT s.last_seq,"
            " (SELECT min(e.seq) FROM session_events e WHERE e.session_id = s.id)"
            " FROM sessions s WHERE s.id = %s",
            (session_id,),
        )
        if row is None:
            return SessionHead(0, 1)
        last_seq = int(row[0])
        return SessionHead(last_seq, last_seq + 1 if row[1] is None else int(row[1]))

    async def append(self, events: Sequence[StoredEvent]) -> None:
        """Write ``events`` in one transaction (all or none).

        Raises ``SeqConflict`` if a session's first seq is not its head + 1 (e.g. a
        second actor for the same session won the race), ``UnstorableValue`` for
        data PostgreSQL cannot keep. The head moves in the same transaction.
        """
        if not events:
            return
        groups = check_batch(events)
        columns: tuple[list[Any], ...] = ([], [], [], [], [], [], [], [])
        for e in events:
            encoded: str | None = encode_json(e.data)
            sealed: bytes | None = None
            key_id: str | None = None
            if e.sensitive:
                assert encoded is not None
                sealed = seal_event(self.sealer, e, encoded)
                key_id = Sealer.key_id_of(sealed)
                encoded = None
            for column, value in zip(
                columns,
                (
                    e.session_id,
                    e.seq,
                    e.name,
                    encoded,
                    e.user_id,
                    ts_to_datetime(e.ts),
                    sealed,
                    key_id,
                ),
                strict=True,
            ):
                column.append(value)
        heads = [(sid, g[0].seq - 1, g[-1].seq) for sid, g in groups.items()]
        if len(heads) == 1:  # a session actor's batch: one statement, one round trip
            session_id, prev, last = heads[0]
            # Committed on its own: no BEGIN and COMMIT round trips, and the row lock on
            # the head serialises appends as in ``_advance_head``. Nothing is written
            # unless the head is at ``prev``.
            [(added,)] = await self._db.write_returning(
                _APPEND_AT_HEAD, (last, session_id, prev, *columns)
            )
            if added > 0:
                return
            # The head is not at prev (nothing was written): the session's first
            # append, or another writer moved it. The full path below says which.

        def work(conn: Conn) -> None:
            for session_id, prev, last in heads:
                _advance_head(conn, session_id, prev, last)
            # One statement for the whole batch, whatever its size.
            conn.execute("INSERT INTO session_events" + _EVENT_COLUMNS + _EVENT_ROWS, columns)

        await self._db.run_in_transaction(work)

    async def read_since(self, session_id: str, after_seq: int, limit: int) -> list[StoredEvent]:
        if limit <= 0:
            return []
        rows = await self._db.fetch_all(
            "SELECT seq, name, data::text, user_id, ts, data_enc FROM session_events"
            " WHERE session_id = %s AND seq > %s ORDER BY seq LIMIT %s",
            (session_id, after_seq, limit),
        )
        out: list[StoredEvent] = []
        for seq, name, data, user_id, ts, sealed in rows:
            sensitive = sealed is not None
            if sensitive:
                if self.sealer is None:
                    raise EncryptionUnavailable("a sensitive event is stored but no keys are set")
                data = self.sealer.open(sealed, event_aad(session_id, int(seq)))
            out.append(
                StoredEvent(
                    session_id,
                    int(seq),
                    name,
                    decode_json(data),
                    user_id,
                    ts.timestamp(),
                    sensitive,
                )
            )
        return out

    async def rotate_keys(self, *, batch_size: int = 500) -> RotationReport:
        """Re-encrypt sealed events not under the current key, ``batch_size`` per transaction.

        Online: each batch locks only its own rows, briefly; appends and reads go on.
        Idempotent: run it again after an interruption. Raises ``DecryptionError`` if
        a row is sealed with a key that is no longer configured.
        """
        if self.sealer is None:
            raise EncryptionUnavailable()
        if batch_size <= 0:
            raise ValueError("batch_size must be > 0")
        sealer = self.sealer
        current = sealer.current_key_id

        def batch(conn: Conn) -> int:
            rows = conn.execute(
                "SELECT session_id, seq, data_enc FROM session_events"
                " WHERE key_id IS NOT NULL AND key_id <> %s"
                " ORDER BY key_id, session_id, seq LIMIT %s FOR UPDATE",
                (current, batch_size),
            ).fetchall()
            if not rows:
                return 0
            sids, seqs, sealed = [], [], []
            for session_id, seq, envelope in rows:
                sids.append(session_id)
                seqs.append(seq)
                sealed.append(sealer.reseal(envelope, event_aad(session_id, int(seq))))
            conn.execute(
                "UPDATE session_events e SET data_enc = u.data_enc, key_id = %s"
                " FROM unnest(%s::text[], %s::bigint[], %s::bytea[])"
                " AS u(session_id, seq, data_enc)"
                " WHERE e.session_id = u.session_id AND e.seq = u.seq",
                (current, sids, seqs, sealed),
            )
            return len(rows)

        rotated = batches = 0
        while True:
            done = await self._db.run_in_transaction(batch, idempotent=True)
            if done == 0:
                return RotationReport(rotated, batches, current)
            rotated += done
            batches += 1

    async def count_needing_rotation(self) -> int:
        """Sealed events not under the current key (0 without keys)."""
        if self.sealer is None:
            return 0
        row = await self._db.fetch_one(
            "SELECT count(*) FROM session_events WHERE key_id IS NOT NULL AND key_id <> %s",
            (self.sealer.current_key_id,),
        )
        return 0 if row is None else int(row[0])

    async def trim(
        self, session_id: str, keep_last: int | None = None, older_than_s: float | None = None
    ) -> int:
        """Delete a prefix of the stream; return how many events went.

        Events go if more than ``keep_last`` newer ones exist, or if they are at or
        before the newest event older than ``older_than_s`` seconds (either rule
        suffices). The head (``last_seq``) never moves back, so seqs are not reused.
        """
        trim_boundary(0, keep_last, None)  # validate before touching the database
        cutoff = None if older_than_s is None else ts_to_datetime(time.time() - older_than_s)

        def work(conn: Conn) -> int:
            row = conn.execute(
                "SELECT last_seq FROM sessions WHERE id = %s FOR UPDATE", (session_id,)
            ).fetchone()
            if row is None:
                return 0
            newest_old = None
            if cutoff is not None:
                found = conn.execute(
                    "SELECT max(seq) FROM session_events WHERE session_id = %s AND ts < %s",
                    (session_id, cutoff),
                ).fetchone()
                newest_old = None if found is None or found[0] is None else int(found[0])
            boundary = trim_boundary(int(row[0]), keep_last, newest_old)
            if boundary <= 0:
                return 0
            return conn.execute(
                "DELETE FROM session_events WHERE session_id = %s AND seq <= %s",
                (session_id, boundary),
            ).rowcount

        return await self._db.run_in_transaction(work)


_EVENT_COLUMNS = " (session_id, seq, name, data, user_id, ts, data_enc, key_id)"
# %b: arrays go in binary (psycopg dumps a text array element by element through a
# regex, ~25x the CPU, and every comment and published event waits for this write).
_EVENT_ROWS = (
    " SELECT * FROM unnest(%b::text[], %b::bigint[], %b::text[], %b::text[]::jsonb[],"
    " %b::text[], %b::timestamptz[], %b::bytea[], %b::text[])"
)
_APPEND_AT_HEAD = (
    "WITH head AS (UPDATE sessions SET last_seq = %s WHERE id = %s AND last_seq = %s"
    " RETURNING id),"
    " added AS (INSERT INTO session_events"
    + _EVENT_COLUMNS
    + _EVENT_ROWS
    + " WHERE EXISTS (SELECT FROM head) RETURNING 1)"
    " SELECT count(*) FROM added"
)


def _advance_head(conn: Conn, session_id: str, prev: int, last: int) -> None:
    """Move ``sessions.last_seq`` from ``prev`` to ``last`` or raise ``SeqConflict``.

    The row lock taken here serialises concurrent appends to one session.
    """
    moved = conn.execute(
        "UPDATE sessions SET last_seq = %s WHERE id = %s AND last_seq = %s",
        (last, session_id, prev),
    ).rowcount
    if moved == 1:
        return
    if prev == 0:
        # A session's first append may come before anyone created its row.
        created = conn.execute(
            "INSERT INTO sessions (id, last_seq) VALUES (%s, %s) ON CONFLICT (id) DO NOTHING",
            (session_id, last),
        ).rowcount
        if created == 1:
            return
    head = conn.execute("SELECT last_seq FROM sessions WHERE id = %s", (session_id,)).fetchone()
    current = 0 if head is None else int(head[0])
    raise SeqConflict(f"session {session_id}: seq {prev + 1} after {current}")


_SESSION_COLUMNS = (
    "id, metadata::text, last_seq, created_at, updated_at, deleted_at"  # keep in _session()
)


def _session(row: Row) -> SessionRecord:
    sid, metadata, last_seq, created, updated, deleted = row
    return SessionRecord(
        id=sid,
        metadata=decode_json(metadata),
        last_seq=int(last_seq),
        created_at=created.timestamp(),
        updated_at=updated.timestamp(),
        deleted_at=None if deleted is None else deleted.timestamp(),
    )


def _member(row: Row) -> MemberRecord:
    session_id, user_id, role, joined = row
    return MemberRecord(session_id, user_id, role, joined.timestamp())


class PostgresSessionRepository:
    """Sessions and their members. Soft-deleted sessions are hidden unless asked for."""

    def __init__(self, db: DatabaseGateway) -> None:
        self._db = db

    async def create(self, session_id: str, metadata: JSON = None) -> SessionRecord:
        """Raises ``SessionExists`` if the id was ever used (soft-deleted included)."""
        check_text(session_id)
        encoded = encode_json({} if metadata is None else metadata)

        def work(conn: Conn) -> Row | None:
            row: Row | None = conn.execute(
                "INSERT INTO sessions (id, metadata) VALUES (%s, %s::jsonb)"
                " ON CONFLICT (id) DO NOTHING RETURNING " + _SESSION_COLUMNS,
                (session_id, encoded),
            ).fetchone()
            return row

        row = await self._db.run_in_transaction(work)
        if row is None:
            raise SessionExists(session_id)
        return _session(row)

    async def get(self, session_id: str, *, include_deleted: bool = False) -> SessionRecord | None:
        row = await self._db.fetch_one(
            "SELECT " + _SESSION_COLUMNS + " FROM sessions"
            " WHERE id = %s AND (%s OR deleted_at IS NULL)",
            (session_id, include_deleted),
        )
        return None if row is None else _session(row)

    async def list_sessions(
        self, *, after: str | None = None, limit: int = 100, include_deleted: bool = False
    ) -> list[SessionRecord]:
        """Sessions ordered by id, starting after the cursor ``after`` (an id)."""
        if limit <= 0:
            return []
        rows = await self._db.fetch_all(
            "SELECT " + _SESSION_COLUMNS + " FROM sessions"
            " WHERE (%s::text IS NULL OR id > %s) AND (%s OR deleted_at IS NULL)"
            " ORDER BY id LIMIT %s",
            (after, after, include_deleted, limit),
        )
        return [_session(r) for r in rows]

    async def update_metadata(self, session_id: str, metadata: JSON) -> SessionRecord:
        """Replace the metadata; raises ``SessionNotFound`` if missing or deleted."""
        encoded = encode_json(metadata)

        def work(conn: Conn) -> Row | None:
            row: Row | None = conn.execute(
                "UPDATE sessions SET metadata = %s::jsonb, updated_at = now()"
                " WHERE id = %s AND deleted_at IS NULL RETURNING " + _SESSION_COLUMNS,
                (encoded, session_id),
            ).fetchone()
            return row

        row = await self._db.run_in_transaction(work)
        if row is None:
            raise SessionNotFound(session_id)
        return _session(row)

    async def soft_delete(self, session_id: str) -> bool:
        """Hide the session (its events and members stay); False if already gone."""
        count = await self._db.execute(
            "UPDATE sessions SET deleted_at = now(), updated_at = now()"
            " WHERE id = %s AND deleted_at IS NULL",
            (session_id,),
        )
        return count == 1

    async def add_member(self, session_id: str, user_id: str, role: str) -> MemberRecord:
        """Add ``user_id`` or change its role (keeping ``joined_at``)."""
        check_text(user_id, role)

        def work(conn: Conn) -> Row | None:
            row: Row | None = conn.execute(
                "INSERT INTO session_members (session_id, user_id, role)"
                " SELECT id, %s, %s FROM sessions WHERE id = %s AND deleted_at IS NULL"
                " ON CONFLICT (session_id, user_id) DO UPDATE SET role = EXCLUDED.role"
                " RETURNING session_id, user_id, role, joined_at",
                (user_id, role, session_id),
            ).fetchone()
            return row

        row = await self._db.run_in_transaction(work)
        if row is None:
            raise SessionNotFound(session_id)
        return _member(row)

    async def remove_member(self, session_id: str, user_id: str) -> bool:
        count = await self._db.execute(
            "DELETE FROM session_members WHERE session_id = %s AND user_id = %s",
            (session_id, user_id),
        )
        return count == 1

    async def list_members(self, session_id: str) -> list[MemberRecord]:
        rows = await self._db.fetch_all(
            "SELECT session_id, user_id, role, joined_at FROM session_members"
            " WHERE session_id = %s ORDER BY user_id",
            (session_id,),
        )
        return [_member(r) for r in rows]

    async def get_member_role(self, session_id: str, user_id: str) -> str | None:
        row = await self._db.fetch_one(
            "SELECT role FROM session_members WHERE session_id = %s AND user_id = %s",
            (session_id, user_id),
        )
        return None if row is None else str(row[0])
