"""Tamper-evident audit chain (pure part): records hash their content and predecessor.

Each record's ``hash`` is SHA-256 over a canonical JSON encoding of its fields
and the previous record's hash, so editing, removing, reordering or inserting a
record breaks the chain at a specific ``seq``. A chain re-hashed from the edit
onwards is only caught against a head hash kept elsewhere (``expected_head``),
which is also what detects truncation of the newest records.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

GENESIS_HASH = "0" * 64
FIRST_SEQ = 1


def _ts_micros(ts: float) -> int:
    # Hash whole microseconds: that survives a round trip through a SQL timestamp
    # column, where the float's last bits would not.
    return round(ts * 1_000_000)


def chain_hash(
    prev_hash: str,
    *,
    seq: int,
    ts: float,
    actor: str,
    action: str,
    target: str,
    details: Mapping[str, Any],
) -> str:
    """Hex SHA-256 of the canonical JSON (sorted keys, compact, UTF-8) of the fields."""
    body = {
        "prev_hash": prev_hash,
        "seq": seq,
        "ts_us": _ts_micros(ts),
        "actor": actor,
        "action": action,
        "target": target,
        "details": details,
    }
    canonical = json.dumps(
        body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@attrs.frozen
class AuditRecord:
    """One audit entry; build with :func:`append` so ``hash`` is right."""

    seq: int
    ts: float
    actor: str
    action: str
    target: str
    details: Mapping[str, Any]
    prev_hash: str
    hash: str

    def expected_hash(self) -> str:
        """The hash this record's current contents should have."""
        return chain_hash(
            self.prev_hash,
            seq=self.seq,
            ts=self.ts,
            actor=self.actor,
            action=self.action,
            target=self.target,
            details=self.details,
        )


def append(
    prev: AuditRecord | None,
    *,
    ts: float,
    actor: str,
    action: str,
    target: str,
    details: Mapping[str, Any] | None = None,
) -> AuditRecord:
    """The record that follows ``prev`` (or starts a chain when ``prev`` is None).

    ``details`` must be JSON-serialisable with string keys; it is copied.
    """
    details = dict(details or {})
    if any(not isinstance(k, str) for k in details):
        # json.dumps would silently turn 1 into "1", making two records hash alike.
        raise TypeError("audit details keys must be strings")
    seq = FIRST_SEQ if prev is None else prev.seq + 1
    prev_hash = GENESIS_HASH if prev is None else prev.hash
    digest = chain_hash(
        prev_hash, seq=seq, ts=ts, actor=actor, action=action, target=target, details=details
    )
    return AuditRecord(
        seq=seq,
        ts=ts,
        actor=actor,
        action=action,
        target=target,
        details=details,
        prev_hash=prev_hash,
        hash=digest,
    )


@attrs.frozen
class VerifyResult:
    """Outcome of :func:`verify`. On failure ``first_bad_seq`` is the ``seq`` field of
    the first record that does not fit (``index`` its position in the input)."""

    ok: bool
    checked: int
    head_hash: str
    first_bad_seq: int | None = None
    index: int | None = None
    reason: str | None = None


def verify(
    records: Iterable[AuditRecord],
    *,
    after: AuditRecord | None = None,
    expected_head: str | None = None,
) -> VerifyResult:
    """Check that ``records`` form an unbroken chain.

    Starts from genesis, or continues from a trusted ``after`` record (to verify
    a window of a long log). With ``expected_head``, the last hash must equal it.
    """
    prev_seq = FIRST_SEQ - 1 if after is None else after.seq
    prev_hash = GENESIS_HASH if after is None else after.hash
    checked = 0
    for index, record in enumerate(records):
        reason = _why_broken(record, prev_seq, prev_hash)
        if reason is not None:
            return VerifyResult(False, checked, prev_hash, record.seq, index, reason)
        prev_seq, prev_hash = record.seq, record.hash
        checked += 1
    if expected_head is not None and prev_hash != expected_head:
        return VerifyResult(
            False,
            checked,
            prev_hash,
            prev_seq + 1,
            checked,
            "chain does not end at the expected head: records after "
            f"seq {prev_seq} are missing or the chain was rewritten",
        )
    return VerifyResult(True, checked, prev_hash)


def _why_broken(record: AuditRecord, prev_seq: int, prev_hash: str) -> str | None:
    if record.seq > prev_seq + 1:
        return f"seq {record.seq} follows {prev_seq}: records are missing"
    if record.seq != prev_seq + 1:
        return f"seq {record.seq} follows {prev_seq}: out of order or duplicated"
    if record.prev_hash != prev_hash:
        return f"prev_hash does not match the hash of seq {prev_seq}"
    try:
        expected = record.expected_hash()
    except (TypeError, ValueError):
        return "contents are not canonically encodable"
    if record.hash != expected:
        return "hash does not match the record's contents"
    return None
