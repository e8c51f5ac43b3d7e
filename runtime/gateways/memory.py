"""In-memory stores, and the records, errors and value rules shared with PostgreSQL.

``MemoryEventStore`` and ``MemorySessionRepository`` behave like their PostgreSQL
twins in ``runtime.gateways.postgres`` (one contract suite runs against both):
same errors, same seq rules, and values come back exactly as PostgreSQL returns
them (``encode_json``/``normalize_ts`` below), so a test passing on memory means
the same on PostgreSQL. Share one ``MemoryState`` between the two, as they share
the ``sessions`` table in PostgreSQL.

Cancellation: every method completes atomically or not at all (there is no
await between reading and writing state).
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import attrs
import orjson
import trio

from runtime.gateways.encryption import EncryptionUnavailable, Sealer, row_aad
from runtime.gateways.store import JSON, SessionHead, StoredEvent

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


class StoreError(Exception):
    """Base class of store errors."""


class SeqConflict(StoreError):
    """An append's seqs do not continue the session's head (or have gaps)."""


class UnstorableValue(StoreError, ValueError):
    """A value PostgreSQL cannot store faithfully (NaN, NUL char, huge int, bad time)."""


class SessionExists(StoreError):
    pass


class SessionNotFound(StoreError):
    pass


@attrs.frozen(slots=True)
class SessionRecord:
    id: str
    metadata: JSON
    last_seq: int
    created_at: float  # unix seconds
    updated_at: float
    deleted_at: float | None


@attrs.frozen(slots=True)
class MemberRecord:
    session_id: str
    user_id: str
    role: str
    joined_at: float


# -- value rules ----------------------------------------------------------------------


def _float_fragment(value: float) -> orjson.Fragment:
    # jsonb keeps numbers as numeric and prints them positionally: 1e300 would come
    # back as an int. Writing every float positionally with a '.' keeps it a float.
    if not math.isfinite(value):
        raise UnstorableValue(f"non-finite float {value!r}")
    if value == 0.0:
        return orjson.Fragment(b"0.0")  # numeric has no -0
    text = repr(value)
    if "e" in text:
        text = format(Decimal(text), "f")
        if "." not in text:
            text += ".0"
    return orjson.Fragment(text.encode())


def _prepare(value: Any) -> Any:
    if isinstance(value, str):
        if "\x00" in value:
            raise UnstorableValue("NUL character in string")  # jsonb rejects \u0000
        return value
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise UnstorableValue(f"integer out of int64 range: {value}")
        return value
    if isinstance(value, float):
        return _float_fragment(value)
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str) or "\x00" in key:
                raise UnstorableValue(f"bad object key {key!r}")
            out[key] = _prepare(item)
        return out
    if isinstance(value, list | tuple):
        return [_prepare(item) for item in value]
    raise UnstorableValue(f"not a JSON value: {type(value).__name__}")


def encode_json(value: JSON) -> str:
    """JSON text for a jsonb column; raises ``UnstorableValue``."""
    try:
        return orjson.dumps(_prepare(value)).decode()
    except orjson.JSONEncodeError as exc:  # e.g. lone surrogates, too deep
        raise UnstorableValue(str(exc)) from exc


def decode_json(text: str | bytes) -> JSON:
    return orjson.loads(text)


def ts_to_datetime(ts: float) -> dt.datetime:
    """The timestamptz a unix time is stored as (microsecond precision)."""
    try:
        return dt.datetime.fromtimestamp(ts, dt.UTC)
    except (OverflowError, OSError, ValueError) as exc:
        raise UnstorableValue(f"timestamp out of range: {ts!r}") from exc


def normalize_ts(ts: float) -> float:
    """``ts`` as it reads back from PostgreSQL."""
    return ts_to_datetime(ts).timestamp()


def check_text(*values: str) -> None:
    """PostgreSQL text holds valid UTF-8 without NUL characters."""
    for value in values:
        if "\x00" in value:
            raise UnstorableValue("NUL character in text")
        try:
            value.encode()
        except UnicodeEncodeError as exc:  # lone surrogates
            raise UnstorableValue(str(exc)) from exc


def check_batch(events: Sequence[StoredEvent]) -> dict[str, list[StoredEvent]]:
    """Group an append by session; each group's seqs must be contiguous and > 0."""
    groups: dict[str, list[StoredEvent]] = {}
    for event in events:
        check_text(event.session_id, event.name, event.user_id)
        if not 1 <= event.seq <= _INT64_MAX:
            raise SeqConflict(f"session {event.session_id}: seq {event.seq} out of range")
        group = groups.setdefault(event.session_id, [])
        expected = group[-1].seq + 1 if group else event.seq
        if event.seq != expected:
            raise SeqConflict(f"session {event.session_id}: seq {event.seq}, expected {expected}")
        group.append(event)
    return groups


def trim_boundary(last_seq: int, keep_last: int | None, newest_old_seq: int | None) -> int:
    """Highest seq to delete: trimming always removes a prefix of the stream."""
    if keep_last is not None and keep_last < 0:
        raise ValueError("keep_last must be >= 0")
    boundary = 0
    if keep_last is not None:
        boundary = max(boundary, last_seq - keep_last)
    if newest_old_seq is not None:
        boundary = max(boundary, newest_old_seq)
    return boundary


# -- memory implementations -----------------------------------------------------------


@attrs.define
class _Session:
    record: SessionRecord
    # seq -> (name, encoded data or its sealed envelope, user_id, normalized ts), in seq order
    events: dict[int, tuple[str, str | bytes, str, float]] = attrs.field(factory=dict)
    members: dict[str, MemberRecord] = attrs.field(factory=dict)


@attrs.define
class MemoryState:
    """What the ``sessions``, ``session_members`` and ``session_events`` tables hold."""

    sessions: dict[str, _Session] = attrs.field(factory=dict)

    def new_session(self, session_id: str, metadata: str = "{}") -> _Session:
        now = time.time()
        session = _Session(SessionRecord(session_id, decode_json(metadata), 0, now, now, None))
        self.sessions[session_id] = session
        return session


def event_aad(session_id: str, seq: int) -> bytes:
    """The AAD of a sealed event payload: its row in ``session_events``."""
    return row_aad("session_events", session_id, seq)


def seal_event(sealer: Sealer | None, event: StoredEvent, encoded: str) -> bytes:
    """The envelope stored for a sensitive event; refuses when no keys are configured."""
    if sealer is None:
        raise EncryptionUnavailable()
    return sealer.seal(encoded, event_aad(event.session_id, event.seq))


@attrs.frozen
class RotationReport:
    """What ``rotate_keys`` did: rows re-encrypted under the current key, in batches."""

    rotated: int
    batches: int
    key_id: str


class MemoryEventStore:
    """``EventStore`` in memory; see the module docstring.

    Sensitive events are kept sealed (bytes) exactly as PostgreSQL keeps them.
    """

    def __init__(self, state: MemoryState | None = None, *, sealer: Sealer | None = None) -> None:
        self.state = state if state is not None else MemoryState()
        self.sealer = sealer

    async def load_head(self, session_id: str) -> SessionHead:
        await trio.lowlevel.checkpoint()
        session = self.state.sessions.get(session_id)
        if session is None:
            return SessionHead(0, 1)
        last = session.record.last_seq
        return SessionHead(last, min(session.events, default=last + 1))

    async def append(self, events: Sequence[StoredEvent]) -> None:
        await trio.lowlevel.checkpoint()
        groups = check_batch(events)
        rows: list[tuple[int, tuple[str, str | bytes, str, float]]] = []
        for e in events:
            encoded = encode_json(e.data)
            data = seal_event(self.sealer, e, encoded) if e.sensitive else encoded
            rows.append((e.seq, (e.name, data, e.user_id, normalize_ts(e.ts))))
        for session_id, group in groups.items():
            session = self.state.sessions.get(session_id)
            last = 0 if session is None else session.record.last_seq
            if group[0].seq != last + 1:
                raise SeqConflict(f"session {session_id}: seq {group[0].seq} after {last}")
        # All checks passed: now write everything (no await in between).
        for session_id, group in groups.items():
            session = self.state.sessions.get(session_id) or self.state.new_session(session_id)
            session.record = attrs.evolve(session.record, last_seq=group[-1].seq)
        for event, (seq, row) in zip(events, rows, strict=True):
            self.state.sessions[event.session_id].events[seq] = row

    async def read_since(self, session_id: str, after_seq: int, limit: int) -> list[StoredEvent]:
        await trio.lowlevel.checkpoint()
        session = self.state.sessions.get(session_id)
        if session is None or limit <= 0:
            return []
        out: list[StoredEvent] = []
        for seq in sorted(s for s in session.events if s > after_seq)[:limit]:
            name, data, user_id, ts = session.events[seq]
            if isinstance(data, bytes):
                if self.sealer is None:
                    raise EncryptionUnavailable("a sensitive event is stored but no keys are set")
                text = self.sealer.open(data, event_aad(session_id, seq))
                out.append(StoredEvent(session_id, seq, name, decode_json(text), user_id, ts, True))
            else:
                out.append(StoredEvent(session_id, seq, name, decode_json(data), user_id, ts))
        return out

    async def rotate_keys(self, *, batch_size: int = 500) -> RotationReport:
        """Re-encrypt every sealed event not under the current key (``batch_size`` at a time)."""
        if self.sealer is None:
            raise EncryptionUnavailable()
        sealer = self.sealer
        rotated = batches = 0
        while True:
            await trio.lowlevel.checkpoint()
            todo = [
                (session_id, seq)
                for session_id, session in sorted(self.state.sessions.items())
                for seq, row in sorted(session.events.items())
                if isinstance(row[1], bytes) and sealer.needs_rotation(row[1])
            ][:batch_size]
            if not todo:
                return RotationReport(rotated, batches, sealer.current_key_id)
            for session_id, seq in todo:
                name, data, user_id, ts = self.state.sessions[session_id].events[seq]
                assert isinstance(data, bytes)
                resealed = sealer.reseal(data, event_aad(session_id, seq))
                self.state.sessions[session_id].events[seq] = (name, resealed, user_id, ts)
            rotated += len(todo)
            batches += 1

    async def count_needing_rotation(self) -> int:
        await trio.lowlevel.checkpoint()
        if self.sealer is None:
            return 0
        return sum(
            1
            for session in self.state.sessions.values()
            for row in session.events.values()
            if isinstance(row[1], bytes) and self.sealer.needs_rotation(row[1])
        )

    async def trim(
        self, session_id: str, keep_last: int | None = None, older_than_s: float | None = None
    ) -> int:
        """Delete a prefix of the stream; return how many events went. The head stays."""
        await trio.lowlevel.checkpoint()
        session = self.state.sessions.get(session_id)
        if session is None:
            trim_boundary(0, keep_last, None)  # still validate arguments
            return 0
        newest_old = None
        if older_than_s is not None:
            cutoff = normalize_ts(time.time() - older_than_s)
            old = [seq for seq, row in session.events.items() if row[3] < cutoff]
            newest_old = max(old, default=None)
        boundary = trim_boundary(session.record.last_seq, keep_last, newest_old)
        doomed = [seq for seq in session.events if seq <= boundary]
        for seq in doomed:
            del session.events[seq]
        return len(doomed)


class MemorySessionRepository:
    """``PostgresSessionRepository`` in memory."""

    def __init__(self, state: MemoryState | None = None) -> None:
        self.state = state if state is not None else MemoryState()

    def _live(self, session_id: str) -> _Session:
        session = self.state.sessions.get(session_id)
        if session is None or session.record.deleted_at is not None:
            raise SessionNotFound(session_id)
        return session

    async def create(self, session_id: str, metadata: JSON = None) -> SessionRecord:
        await trio.lowlevel.checkpoint()
        check_text(session_id)
        encoded = encode_json({} if metadata is None else metadata)
        if session_id in self.state.sessions:
            raise SessionExists(session_id)
        return self.state.new_session(session_id, encoded).record

    async def get(self, session_id: str, *, include_deleted: bool = False) -> SessionRecord | None:
        await trio.lowlevel.checkpoint()
        session = self.state.sessions.get(session_id)
        if session is None or (session.record.deleted_at is not None and not include_deleted):
            return None
        return session.record

    async def list_sessions(
        self, *, after: str | None = None, limit: int = 100, include_deleted: bool = False
    ) -> list[SessionRecord]:
        """Sessions ordered by id, starting after the cursor ``after`` (an id)."""
        await trio.lowlevel.checkpoint()
        records = [
            s.record
            for s in self.state.sessions.values()
            if (after is None or s.record.id > after)
            and (include_deleted or s.record.deleted_at is None)
        ]
        return sorted(records, key=lambda r: r.id)[: max(limit, 0)]

    async def update_metadata(self, session_id: str, metadata: JSON) -> SessionRecord:
        await trio.lowlevel.checkpoint()
        encoded = encode_json(metadata)
        session = self._live(session_id)
        session.record = attrs.evolve(
            session.record, metadata=decode_json(encoded), updated_at=time.time()
        )
        return session.record

    async def soft_delete(self, session_id: str) -> bool:
        await trio.lowlevel.checkpoint()
        try:
            session = self._live(session_id)
        except SessionNotFound:
            return False
        now = time.time()
        session.record = attrs.evolve(session.record, deleted_at=now, updated_at=now)
        return True

    async def add_member(self, session_id: str, user_id: str, role: str) -> MemberRecord:
        """Add ``user_id`` or change its role (keeping ``joined_at``)."""
        await trio.lowlevel.checkpoint()
        check_text(user_id, role)
        session = self._live(session_id)
        old = session.members.get(user_id)
        member = MemberRecord(
            session_id, user_id, role, time.time() if old is None else old.joined_at
        )
        session.members[user_id] = member
        return member

    async def remove_member(self, session_id: str, user_id: str) -> bool:
        await trio.lowlevel.checkpoint()
        session = self.state.sessions.get(session_id)
        return session is not None and session.members.pop(user_id, None) is not None

    async def list_members(self, session_id: str) -> list[MemberRecord]:
        await trio.lowlevel.checkpoint()
        session = self.state.sessions.get(session_id)
        return [] if session is None else sorted(session.members.values(), key=lambda m: m.user_id)

    async def get_member_role(self, session_id: str, user_id: str) -> str | None:
        await trio.lowlevel.checkpoint()
        session = self.state.sessions.get(session_id)
        member = None if session is None else session.members.get(user_id)
        return None if member is None else member.role
