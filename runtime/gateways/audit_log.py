"""The audit log: an append-only, hash-chained record of security-relevant actions.

Both implementations satisfy :class:`runtime.audit_sink.AuditSink` (what the node
writes through) and add ``list`` (filters, seq cursor) and ``verify``. Hashes are
computed by the pure chain in :mod:`runtime.security.audit`.

PostgreSQL (tables from ``migrations/0004_audit_log.sql``): an append locks the
one ``audit_head`` row (``SELECT ... FOR UPDATE``), inserts the record that
follows it and moves the head, all in one transaction — so concurrent writers,
on one node or many, queue up and the chain never forks. ``verify`` reads the
log and the head in one REPEATABLE READ snapshot and checks the chain window
by window (constant memory), ending at the head: an edited, removed, inserted
or reordered record — or removed newest records — is reported by seq.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol, runtime_checkable

import psycopg
import trio

from runtime.gateways.database import DatabaseGateway, Row
from runtime.gateways.memory import decode_json, encode_json, normalize_ts, ts_to_datetime
from runtime.security.audit import (
    FIRST_SEQ,
    GENESIS_HASH,
    AuditRecord,
    VerifyResult,
    chain_hash,
    verify,
)

Conn = psycopg.Connection[Any]
VERIFY_WINDOW = 2000
MAX_LIST = 1000


@runtime_checkable
class AuditLog(Protocol):
    async def record(
        self, *, action: str, actor: str, target: str, details: dict[str, Any]
    ) -> None: ...

    async def list(
        self,
        *,
        action: str | None = None,
        actor: str | None = None,
        since: float | None = None,
        after: int = 0,
        limit: int = 100,
    ) -> list[AuditRecord]: ...

    async def verify(self) -> VerifyResult: ...


def _next_record(
    head_seq: int,
    head_hash: str,
    *,
    ts: float,
    actor: str,
    action: str,
    target: str,
    details: Mapping[str, Any],
) -> AuditRecord:
    """The record after the head, with its values as they read back from storage."""
    if any(not isinstance(k, str) for k in details):
        raise TypeError("audit details keys must be strings")
    # Hash the details exactly as jsonb gives them back (floats, key order aside).
    stored_details = decode_json(encode_json(dict(details)))
    ts = normalize_ts(ts)
    seq = head_seq + 1
    digest = chain_hash(
        head_hash,
        seq=seq,
        ts=ts,
        actor=actor,
        action=action,
        target=target,
        details=stored_details,
    )
    return AuditRecord(seq, ts, actor, action, target, stored_details, head_hash, digest)


def _matches(
    record: AuditRecord, action: str | None, actor: str | None, since: float | None, after: int
) -> bool:
    return (
        record.seq > after
        and (action is None or record.action == action)
        and (actor is None or record.actor == actor)
        and (since is None or record.ts >= since)
    )


class MemoryAuditLog:
    """The audit log in memory (tests, and the in-memory stores)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.records: list[AuditRecord] = []
        self.head: tuple[int, str] = (FIRST_SEQ - 1, GENESIS_HASH)
        self._clock = clock

    async def record(
        self, *, action: str, actor: str, target: str, details: dict[str, Any]
    ) -> None:
        await trio.lowlevel.checkpoint()
        # No await between reading the head and moving it: appends cannot interleave.
        record = _next_record(
            *self.head,
            ts=self._clock(),
            actor=actor,
            action=action,
            target=target,
            details=details,
        )
        self.records.append(record)
        self.head = (record.seq, record.hash)

    async def list(
        self,
        *,
        action: str | None = None,
        actor: str | None = None,
        since: float | None = None,
        after: int = 0,
        limit: int = 100,
    ) -> list[AuditRecord]:
        await trio.lowlevel.checkpoint()
        found = [r for r in self.records if _matches(r, action, actor, since, after)]
        return found[: max(0, min(limit, MAX_LIST))]

    async def verify(self) -> VerifyResult:
        await trio.lowlevel.checkpoint()
        return verify(self.records, expected_head=self.head[1])


_COLUMNS = "seq, ts, actor, action, target, details::text, prev_hash, hash"


def _record(row: Row) -> AuditRecord:
    seq, ts, actor, action, target, details, prev_hash, digest = row
    return AuditRecord(
        int(seq), ts.timestamp(), actor, action, target, decode_json(details), prev_hash, digest
    )


class PostgresAuditLog:
    """The audit log in ``audit_log``, its head in ``audit_head``; see the module docstring."""

    def __init__(self, db: DatabaseGateway, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._clock = clock

    async def record(
        self, *, action: str, actor: str, target: str, details: dict[str, Any]
    ) -> None:
        ts = self._clock()

        def work(conn: Conn) -> None:
            head = conn.execute("SELECT seq, hash FROM audit_head FOR UPDATE").fetchone()
            if head is None:
                raise RuntimeError("audit_head has no row: the audit log was tampered with")
            record = _next_record(
                int(head[0]),
                str(head[1]),
                ts=ts,
                actor=actor,
                action=action,
                target=target,
                details=details,
            )
            conn.execute(
                "INSERT INTO audit_log (" + _COLUMNS.replace("::text", "") + ")"
                " VALUES (%s, %s, %s, %s, %s, %s::jsonb, %s, %s)",
                (
                    record.seq,
                    ts_to_datetime(record.ts),
                    record.actor,
                    record.action,
                    record.target,
                    encode_json(dict(record.details)),
                    record.prev_hash,
                    record.hash,
                ),
            )
            conn.execute("UPDATE audit_head SET seq = %s, hash = %s", (record.seq, record.hash))

        await self._db.run_in_transaction(work)

    async def list(
        self,
        *,
        action: str | None = None,
        actor: str | None = None,
        since: float | None = None,
        after: int = 0,
        limit: int = 100,
    ) -> list[AuditRecord]:
        """Records with ``seq > after`` matching every filter given, in seq order."""
        limit = max(0, min(limit, MAX_LIST))
        if limit == 0:
            return []
        rows = await self._db.fetch_all(
            "SELECT " + _COLUMNS + " FROM audit_log WHERE seq > %s"
            " AND (%s::text IS NULL OR action = %s)"
            " AND (%s::text IS NULL OR actor = %s)"
            " AND (%s::timestamptz IS NULL OR ts >= %s)"
            " ORDER BY seq LIMIT %s",
            (
                after,
                action,
                action,
                actor,
                actor,
                None if since is None else ts_to_datetime(since),
                None if since is None else ts_to_datetime(since),
                limit,
            ),
        )
        return [_record(r) for r in rows]

    async def verify(self) -> VerifyResult:
        """Check the whole chain and that it ends at ``audit_head``, in one snapshot."""

        def work(conn: Conn) -> VerifyResult:
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            head = conn.execute("SELECT seq, hash FROM audit_head").fetchone()
            if head is None:
                return VerifyResult(False, 0, GENESIS_HASH, FIRST_SEQ, 0, "audit_head is missing")
            return verify_windows(
                lambda after: [
                    _record(r)
                    for r in conn.execute(
                        "SELECT " + _COLUMNS + " FROM audit_log WHERE seq > %s"
                        " ORDER BY seq LIMIT %s",
                        (after, VERIFY_WINDOW),
                    ).fetchall()
                ],
                expected_head=str(head[1]),
            )

        return await self._db.run_in_transaction(work, idempotent=True)


def verify_windows(
    fetch_after: Callable[[int], Iterable[AuditRecord]], *, expected_head: str
) -> VerifyResult:
    """Verify a long chain a window at a time: ``fetch_after(seq)`` gives the next window.

    ``fetch_after`` pages by ``seq > cursor``; a record removed in the middle shows up
    as a gap in seqs, one appended with a duplicate seq cannot exist (primary key).
    """
    last: AuditRecord | None = None
    checked = 0
    cursor = FIRST_SEQ - 1
    while True:
        window = list(fetch_after(cursor))
        if not window:
            break
        result = verify(window, after=last)
        if not result.ok:
            return VerifyResult(
                False,
                checked + result.checked,
                result.head_hash,
                result.first_bad_seq,
                None if result.index is None else checked + result.index,
                result.reason,
            )
        checked += result.checked
        last = window[-1]
        cursor = last.seq
    final = verify([], after=last, expected_head=expected_head)
    if not final.ok:
        return VerifyResult(
            False, checked, final.head_hash, final.first_bad_seq, checked, final.reason
        )
    return VerifyResult(True, checked, final.head_hash)
