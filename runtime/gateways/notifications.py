"""Notification stores: per-user inboxes, in memory and in PostgreSQL (same behaviour).

A notification's ``pos`` orders a user's inbox (newest activity first) and is
the listing cursor; a grouped notification takes a new ``pos`` when it grows,
so it rises to the top like a fresh one.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any, Protocol

import attrs
import psycopg

from runtime.gateways.comment_store import normalize
from runtime.gateways.database import DatabaseGateway, Row
from runtime.gateways.memory import check_text, decode_json, encode_json

JSON = Any
Conn = psycopg.Connection[Any]
MAX_ACTORS = 10  # actor ids kept on a grouped notification (latest last)


@attrs.frozen(slots=True)
class NotificationRecord:
    id: str
    user_id: str
    kind: str
    group_key: str | None
    session_id: str | None
    thread_id: str | None
    actor_ids: tuple[str, ...]
    data: JSON
    count: int
    created_at: float
    updated_at: float
    read_at: float | None
    pos: int = 0


def notification_json(n: NotificationRecord) -> dict[str, JSON]:
    return {
        "id": n.id,
        "kind": n.kind,
        "userId": n.user_id,
        "sessionId": n.session_id,
        "threadId": n.thread_id,
        "actorIds": list(n.actor_ids),
        "data": n.data,
        "count": n.count,
        "read": n.read_at is not None,
        "readAt": n.read_at,
        "createdAt": n.created_at,
        "updatedAt": n.updated_at,
        "cursor": n.pos,
    }


@attrs.frozen
class InboxWrite:
    """One inbox's batch (the arguments of ``add_batch``), for ``add_batches``."""

    user_id: str
    records: Sequence[NotificationRecord]
    since: float | None
    at: float


#: One inbox's batch as stored (records, unread count), or why it was not.
Written = tuple[list[NotificationRecord], int]


def merged_actors(actors: Sequence[str], actor_id: str | None) -> tuple[str, ...]:
    if actor_id is None:
        return tuple(actors)
    kept = [a for a in actors if a != actor_id] + [actor_id]
    return tuple(kept[-MAX_ACTORS:])


class NotificationStore(Protocol):
    async def insert(self, record: NotificationRecord) -> NotificationRecord: ...

    async def find_group(
        self, user_id: str, group_key: str, since: float
    ) -> NotificationRecord | None:
        """The newest unread notification of the group touched at or after ``since``."""

    async def bump(
        self, notification_id: str, actor_id: str | None, data: JSON, at: float, *, times: int = 1
    ) -> NotificationRecord:
        """``times`` more occurrences: count + times, actor appended, data replaced, new ``pos``."""

    async def add_batch(
        self, user_id: str, records: Sequence[NotificationRecord], since: float | None, at: float
    ) -> tuple[list[NotificationRecord], int]:
        """Store a batch of occurrences for one user; returns them as stored and the unread count.

        Each record is ``count`` occurrences of one group (group keys distinct within a
        batch; None never groups). A record whose group has an unread notification touched
        at or after ``since`` (None: never) grows it: count + n, its ``actor_ids`` appended
        (latest ``MAX_ACTORS`` kept), data replaced, ``updated_at = at``, a new ``pos``;
        any other is inserted as it is.
        """

    async def add_batches(self, writes: Sequence[InboxWrite]) -> list[Written | Exception]:
        """``add_batch`` for several inboxes at once (distinct users): one result each.

        A write refused on its own (bad text) fails alone; the store's trouble
        (``DatabaseError``) is raised.
        """

    async def list(
        self, user_id: str, *, before: int | None, limit: int, unread_only: bool
    ) -> list[NotificationRecord]:
        """Newest first, ``pos < before`` when given."""

    async def mark_read(
        self, user_id: str, notification_id: str, at: float
    ) -> NotificationRecord | None: ...

    async def mark_all_read(self, user_id: str, at: float) -> int: ...

    async def unread_count(self, user_id: str) -> int: ...


class MemoryNotificationStore:
    def __init__(self) -> None:
        self._items: dict[str, NotificationRecord] = {}
        self._pos = itertools.count(1)

    async def insert(self, record: NotificationRecord) -> NotificationRecord:
        check_text(record.id, record.user_id, record.kind, *record.actor_ids)
        record = attrs.evolve(record, data=normalize(record.data), pos=next(self._pos))
        self._items[record.id] = record
        return record

    async def find_group(
        self, user_id: str, group_key: str, since: float
    ) -> NotificationRecord | None:
        found = [
            n
            for n in self._items.values()
            if n.user_id == user_id
            and n.group_key == group_key
            and n.read_at is None
            and n.updated_at >= since
        ]
        return max(found, key=lambda n: n.pos, default=None)

    async def bump(
        self, notification_id: str, actor_id: str | None, data: JSON, at: float, *, times: int = 1
    ) -> NotificationRecord:
        n = self._items[notification_id]
        n = attrs.evolve(
            n,
            count=n.count + times,
            actor_ids=merged_actors(n.actor_ids, actor_id),
            data=normalize(data),
            updated_at=at,
            pos=next(self._pos),
        )
        self._items[n.id] = n
        return n

    async def add_batch(
        self, user_id: str, records: Sequence[NotificationRecord], since: float | None, at: float
    ) -> tuple[list[NotificationRecord], int]:
        out = []
        for record in records:
            existing = None
            if since is not None and record.group_key is not None:
                existing = await self.find_group(user_id, record.group_key, since)
            if existing is None:
                out.append(await self.insert(record))
                continue
            actors = existing.actor_ids
            for actor in record.actor_ids:
                actors = merged_actors(actors, actor)
            grown = attrs.evolve(
                existing,
                count=existing.count + record.count,
                actor_ids=actors,
                data=normalize(record.data),
                updated_at=at,
                pos=next(self._pos),
            )
            self._items[grown.id] = grown
            out.append(grown)
        return out, await self.unread_count(user_id)

    async def add_batches(self, writes: Sequence[InboxWrite]) -> list[Written | Exception]:
        results: list[Written | Exception] = []
        for w in writes:
            try:
                results.append(await self.add_batch(w.user_id, w.records, w.since, w.at))
            except Exception as exc:
                results.append(exc)
        return results

    async def list(
        self, user_id: str, *, before: int | None, limit: int, unread_only: bool
    ) -> list[NotificationRecord]:
        mine = [
            n
            for n in self._items.values()
            if n.user_id == user_id
            and (before is None or n.pos < before)
            and (not unread_only or n.read_at is None)
        ]
        return sorted(mine, key=lambda n: n.pos, reverse=True)[:limit]

    async def mark_read(
        self, user_id: str, notification_id: str, at: float
    ) -> NotificationRecord | None:
        n = self._items.get(notification_id)
        if n is None or n.user_id != user_id:
            return None
        if n.read_at is None:
            n = attrs.evolve(n, read_at=at)
            self._items[n.id] = n
        return n

    async def mark_all_read(self, user_id: str, at: float) -> int:
        changed = 0
        for n in list(self._items.values()):
            if n.user_id == user_id and n.read_at is None:
                self._items[n.id] = attrs.evolve(n, read_at=at)
                changed += 1
        return changed

    async def unread_count(self, user_id: str) -> int:
        return sum(1 for n in self._items.values() if n.user_id == user_id and n.read_at is None)


_COLUMNS = (
    "id, user_id, kind, group_key, session_id, thread_id, actor_ids, data::text, count,"
    " created_at, updated_at, read_at, pos"
)


def _record(row: Row, decoded: dict[str, JSON] | None = None) -> NotificationRecord:
    """A row of ``_COLUMNS`` as a record; ``decoded`` caches data texts seen before
    (the records then share one data object: records are never changed in place)."""
    (nid, user, kind, group, sid, tid, actors, text, count, created, updated, read, pos) = row
    if decoded is None:
        data = decode_json(text)
    else:
        data = decoded.get(text)
        if data is None:
            data = decoded[text] = decode_json(text)
    return NotificationRecord(
        id=nid,
        user_id=user,
        kind=kind,
        group_key=group,
        session_id=sid,
        thread_id=tid,
        actor_ids=tuple(actors or ()),
        data=data,
        count=int(count),
        created_at=float(created),
        updated_at=float(updated),
        read_at=read,
        pos=int(pos),
    )


_RETURNED = (
    "n.id, n.user_id, n.kind, n.group_key, n.session_id, n.thread_id, n.actor_ids, n.data::text,"
    " n.count, n.created_at, n.updated_at, n.read_at, n.pos"
)
# One statement for the batches of several inboxes (distinct users): grow each
# occurrence's open group (unread, touched since its window began), insert the
# others, and count each user's unread: the count before the statement (its
# snapshot) plus the rows it inserted for that user. The input comes as one array
# per column, so the text is the same for any batch (parsed once, prepared), in
# binary (%b: psycopg dumps a text array element by element through a regex).
_ADD_BATCHES = (
    "WITH input AS (SELECT t.ord, t.user_id, t.since, t.at, t.id, t.kind, t.group_key,"
    "  t.session_id, t.thread_id, t.data, t.count, ARRAY(SELECT a FROM"
    "   jsonb_array_elements_text(t.actors) WITH ORDINALITY e(a, o) ORDER BY o) AS actor_ids"
    "  FROM unnest(%b::int[], %b::text[], %b::double precision[], %b::double precision[],"
    "   %b::text[], %b::text[], %b::text[], %b::text[], %b::text[], %b::text[]::jsonb[],"
    "   %b::text[]::jsonb[], %b::int[])"
    "  AS t(ord, user_id, since, at, id, kind, group_key, session_id, thread_id, actors, data,"
    "   count)),"
    " open AS (SELECT DISTINCT ON (n.user_id, n.group_key) n.id, n.user_id, n.group_key"
    "  FROM notifications n JOIN input i ON n.user_id = i.user_id AND n.group_key = i.group_key"
    "  WHERE n.read_at IS NULL AND n.updated_at >= i.since"
    "  ORDER BY n.user_id, n.group_key, n.pos DESC),"
    " grown AS (UPDATE notifications n SET count = n.count + i.count,"
    "  actor_ids = (SELECT coalesce(array_agg(a ORDER BY last), '{}') FROM"
    "   (SELECT a, max(o) AS last FROM unnest(n.actor_ids || i.actor_ids) WITH ORDINALITY t(a, o)"
    f"    GROUP BY a ORDER BY max(o) DESC LIMIT {MAX_ACTORS}) latest),"
    "  data = i.data, updated_at = i.at,"
    "  pos = nextval(pg_get_serial_sequence('notifications', 'pos'))"
    "  FROM open o JOIN input i ON i.user_id = o.user_id AND i.group_key = o.group_key"
    "  WHERE n.id = o.id RETURNING i.ord, " + _RETURNED + "),"
    " added AS (INSERT INTO notifications (id, user_id, kind, group_key, session_id, thread_id,"
    "  actor_ids, data, count, created_at, updated_at, read_at)"
    "  SELECT i.id, i.user_id, i.kind, i.group_key, i.session_id, i.thread_id, i.actor_ids,"
    "  i.data, i.count, i.at, i.at, NULL FROM input i"
    "  WHERE i.group_key IS NULL OR NOT EXISTS (SELECT 1 FROM open o"
    "   WHERE o.user_id = i.user_id AND o.group_key = i.group_key)"
    "  ORDER BY i.ord RETURNING *),"
    " unread AS (SELECT u.user_id, (SELECT count(*) FROM notifications n"
    "  WHERE n.user_id = u.user_id AND n.read_at IS NULL) AS c"
    "  FROM (SELECT DISTINCT user_id FROM input) u),"
    " fresh AS (SELECT user_id, count(*) AS c FROM added GROUP BY user_id)"
    " SELECT r.*, coalesce(u.c, 0) + coalesce(f.c, 0) FROM ("
    "  SELECT * FROM grown UNION ALL"
    "  SELECT i.ord, " + _RETURNED + " FROM added n JOIN input i ON i.id = n.id) r"
    " LEFT JOIN unread u ON u.user_id = r.user_id LEFT JOIN fresh f ON f.user_id = r.user_id"
    " ORDER BY r.ord"
)


def _input_row(
    ord_: int, w: InboxWrite, r: NotificationRecord, encoded: dict[int, str]
) -> tuple[Any, ...]:
    """One row of ``_ADD_BATCHES``'s input (raises ``UnstorableValue``). ``encoded``:
    data already encoded in this statement, by the identity of its object (which
    the caller keeps alive for as long as the dict)."""
    check_text(r.id, r.user_id, r.kind, *r.actor_ids)
    data = encoded.get(id(r.data))
    if data is None:
        data = encoded[id(r.data)] = encode_json(r.data)
    return (
        ord_,
        w.user_id,
        w.since,
        w.at,
        r.id,
        r.kind,
        r.group_key,
        r.session_id,
        r.thread_id,
        encode_json(list(r.actor_ids[-MAX_ACTORS:])),
        data,
        r.count,
    )


class PostgresNotificationStore:
    def __init__(self, db: DatabaseGateway) -> None:
        self._db = db

    async def insert(self, record: NotificationRecord) -> NotificationRecord:
        check_text(record.id, record.user_id, record.kind, *record.actor_ids)
        r = record

        def work(conn: Conn) -> NotificationRecord:
            row = conn.execute(
                "INSERT INTO notifications (id, user_id, kind, group_key, session_id, thread_id,"
                " actor_ids, data, count, created_at, updated_at, read_at)"
                " VALUES (%s,%s,%s,%s,%s,%s,%s,%s::jsonb,%s,%s,%s,%s) RETURNING " + _COLUMNS,
                (
                    r.id,
                    r.user_id,
                    r.kind,
                    r.group_key,
                    r.session_id,
                    r.thread_id,
                    list(r.actor_ids),
                    encode_json(r.data),
                    r.count,
                    r.created_at,
                    r.updated_at,
                    r.read_at,
                ),
            ).fetchone()
            assert row is not None
            return _record(row)

        return await self._db.run_in_transaction(work)

    async def find_group(
        self, user_id: str, group_key: str, since: float
    ) -> NotificationRecord | None:
        row = await self._db.fetch_one(
            "SELECT " + _COLUMNS + " FROM notifications WHERE user_id = %s AND group_key = %s"
            " AND read_at IS NULL AND updated_at >= %s ORDER BY pos DESC LIMIT 1",
            (user_id, group_key, since),
        )
        return None if row is None else _record(row)

    async def bump(
        self, notification_id: str, actor_id: str | None, data: JSON, at: float, *, times: int = 1
    ) -> NotificationRecord:
        encoded = encode_json(data)

        def work(conn: Conn) -> NotificationRecord:
            row = conn.execute(
                "SELECT actor_ids FROM notifications WHERE id = %s FOR UPDATE",
                (notification_id,),
            ).fetchone()
            if row is None:
                raise KeyError(notification_id)
            actors = list(merged_actors(row[0] or (), actor_id))
            updated = conn.execute(
                "UPDATE notifications SET count = count + %s, actor_ids = %s, data = %s::jsonb,"
                " updated_at = %s, pos = nextval(pg_get_serial_sequence('notifications', 'pos'))"
                " WHERE id = %s RETURNING " + _COLUMNS,
                (times, actors, encoded, at, notification_id),
            ).fetchone()
            assert updated is not None
            return _record(updated)

        return await self._db.run_in_transaction(work)

    async def add_batch(
        self, user_id: str, records: Sequence[NotificationRecord], since: float | None, at: float
    ) -> tuple[list[NotificationRecord], int]:
        [result] = await self.add_batches([InboxWrite(user_id, records, since, at)])
        if isinstance(result, Exception):
            raise result
        return result

    async def add_batches(self, writes: Sequence[InboxWrite]) -> list[Written | Exception]:
        """One statement for every write (users distinct), so one commit for them all."""
        results: dict[int, Written | Exception] = {}
        columns: tuple[list[Any], ...] = tuple([] for _ in range(12))
        owner: list[int] = []  # input row (its ord) -> the write it belongs to
        # A comment's notifications share one data object (its excerpt), so each
        # distinct one is encoded once, and each distinct text returned decoded once.
        encoded: dict[int, str] = {}
        for i, w in enumerate(writes):
            try:
                rows = [
                    _input_row(o, w, r, encoded) for o, r in enumerate(w.records, start=len(owner))
                ]
            except Exception as exc:
                results[i] = exc
                continue
            for row in rows:
                for column, value in zip(columns, row, strict=True):
                    column.append(value)
            owner += [i] * len(rows)
        if owner:
            got = await self._db.write_returning(_ADD_BATCHES, columns)
            stored: dict[int, list[NotificationRecord]] = {}
            unread: dict[int, int] = {}
            decoded: dict[str, JSON] = {}
            for row in got:  # in input order
                i = owner[row[0]]
                stored.setdefault(i, []).append(_record(row[1:-1], decoded))
                unread[i] = int(row[-1])
            for i, records in stored.items():
                results[i] = (records, unread[i])
        for i, w in enumerate(writes):
            if i not in results:  # nothing to store: only the count
                results[i] = ([], await self.unread_count(w.user_id))
        return [results[i] for i in range(len(writes))]

    async def list(
        self, user_id: str, *, before: int | None, limit: int, unread_only: bool
    ) -> list[NotificationRecord]:
        rows = await self._db.fetch_all(
            "SELECT " + _COLUMNS + " FROM notifications WHERE user_id = %s"
            " AND (%s::bigint IS NULL OR pos < %s::bigint)"
            " AND (NOT %s OR read_at IS NULL) ORDER BY pos DESC LIMIT %s",
            (user_id, before, before, unread_only, limit),
        )
        return [_record(r) for r in rows]

    async def mark_read(
        self, user_id: str, notification_id: str, at: float
    ) -> NotificationRecord | None:
        def work(conn: Conn) -> NotificationRecord | None:
            conn.execute(
                "UPDATE notifications SET read_at = %s"
                " WHERE id = %s AND user_id = %s AND read_at IS NULL",
                (at, notification_id, user_id),
            )
            row = conn.execute(
                "SELECT " + _COLUMNS + " FROM notifications WHERE id = %s AND user_id = %s",
                (notification_id, user_id),
            ).fetchone()
            return None if row is None else _record(row)

        return await self._db.run_in_transaction(work)

    async def mark_all_read(self, user_id: str, at: float) -> int:
        return await self._db.execute(
            "UPDATE notifications SET read_at = %s WHERE user_id = %s AND read_at IS NULL",
            (at, user_id),
        )

    async def unread_count(self, user_id: str) -> int:
        row = await self._db.fetch_one(
            "SELECT count(*) FROM notifications WHERE user_id = %s AND read_at IS NULL",
            (user_id,),
        )
        return 0 if row is None else int(row[0])
