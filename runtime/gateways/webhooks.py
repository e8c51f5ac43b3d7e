"""Webhook stores: endpoints and the outbox of undelivered events (memory and PostgreSQL).

The outbox keeps one row per (event, endpoint) until it is delivered; rows of one
``ordering_key`` (a session, or a user's inbox) go out one at a time, oldest
first, so only the head of each (endpoint, key) queue is ever due.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any, Protocol

import attrs
import psycopg

from runtime.gateways.database import DatabaseGateway, Row
from runtime.gateways.memory import check_text

Conn = psycopg.Connection[Any]


@attrs.frozen(slots=True)
class EndpointRecord:
    id: str
    url: str
    secret: str
    events: tuple[str, ...]  # empty: every event
    created_at: float
    failing_since: float | None = None
    last_error: str | None = None
    disabled_at: float | None = None
    disabled_reason: str | None = None

    def wants(self, event_type: str) -> bool:
        return not self.events or event_type in self.events


@attrs.frozen(slots=True)
class OutboxRow:
    pos: int
    event_id: str
    endpoint_id: str
    ordering_key: str
    payload: str
    attempts: int
    next_attempt_at: float
    last_error: str | None = None


class WebhookStore(Protocol):
    async def create_endpoint(self, endpoint: EndpointRecord) -> EndpointRecord: ...

    async def list_endpoints(self) -> list[EndpointRecord]: ...

    async def delete_endpoint(self, endpoint_id: str) -> bool: ...

    async def enqueue(
        self,
        event_id: str,
        ordering_key: str,
        payload: str,
        endpoint_ids: Sequence[str],
        at: float,
    ) -> None:
        """One row per endpoint; an (event, endpoint) already queued is not queued twice."""

    async def due(self, now: float, limit: int) -> list[OutboxRow]:
        """Heads of (endpoint, key) queues of enabled endpoints due at ``now``, oldest first."""

    async def next_due(self) -> float | None:
        """When the earliest queue head of an enabled endpoint is due (None: nothing queued)."""

    async def delivered(self, pos: int, endpoint_id: str) -> None:
        """Drop the row and mark the endpoint healthy."""

    async def failed(self, row: OutboxRow, error: str, retry_at: float, now: float) -> None:
        """Count an attempt; the endpoint is failing since its first failure in a row."""

    async def disable(self, endpoint_id: str, at: float, reason: str) -> None: ...

    async def pending(self) -> dict[str, int]:
        """Undelivered rows per endpoint."""


class MemoryWebhookStore:
    def __init__(self) -> None:
        self._endpoints: dict[str, EndpointRecord] = {}
        self._rows: dict[int, OutboxRow] = {}
        self._pos = itertools.count(1)

    async def create_endpoint(self, endpoint: EndpointRecord) -> EndpointRecord:
        check_text(endpoint.id, endpoint.url, endpoint.secret, *endpoint.events)
        self._endpoints[endpoint.id] = endpoint
        return endpoint

    async def list_endpoints(self) -> list[EndpointRecord]:
        return sorted(self._endpoints.values(), key=lambda e: (e.created_at, e.id))

    async def delete_endpoint(self, endpoint_id: str) -> bool:
        if self._endpoints.pop(endpoint_id, None) is None:
            return False
        for pos in [p for p, r in self._rows.items() if r.endpoint_id == endpoint_id]:
            del self._rows[pos]
        return True

    async def enqueue(
        self,
        event_id: str,
        ordering_key: str,
        payload: str,
        endpoint_ids: Sequence[str],
        at: float,
    ) -> None:
        check_text(event_id, ordering_key, payload)
        queued = {(r.event_id, r.endpoint_id) for r in self._rows.values()}
        for endpoint_id in endpoint_ids:
            if endpoint_id in self._endpoints and (event_id, endpoint_id) not in queued:
                pos = next(self._pos)
                self._rows[pos] = OutboxRow(
                    pos, event_id, endpoint_id, ordering_key, payload, 0, at
                )

    def _heads(self) -> list[OutboxRow]:
        heads: dict[tuple[str, str], OutboxRow] = {}
        for pos in sorted(self._rows):
            row = self._rows[pos]
            endpoint = self._endpoints.get(row.endpoint_id)
            if endpoint is None or endpoint.disabled_at is not None:
                continue
            heads.setdefault((row.endpoint_id, row.ordering_key), row)
        return sorted(heads.values(), key=lambda r: r.pos)

    async def due(self, now: float, limit: int) -> list[OutboxRow]:
        return [r for r in self._heads() if r.next_attempt_at <= now][:limit]

    async def next_due(self) -> float | None:
        return min((r.next_attempt_at for r in self._heads()), default=None)

    async def delivered(self, pos: int, endpoint_id: str) -> None:
        self._rows.pop(pos, None)
        endpoint = self._endpoints.get(endpoint_id)
        if endpoint is not None:
            self._endpoints[endpoint_id] = attrs.evolve(
                endpoint, failing_since=None, last_error=None
            )

    async def failed(self, row: OutboxRow, error: str, retry_at: float, now: float) -> None:
        current = self._rows.get(row.pos)
        if current is not None:
            self._rows[row.pos] = attrs.evolve(
                current, attempts=current.attempts + 1, next_attempt_at=retry_at, last_error=error
            )
        endpoint = self._endpoints.get(row.endpoint_id)
        if endpoint is not None:
            self._endpoints[row.endpoint_id] = attrs.evolve(
                endpoint,
                failing_since=endpoint.failing_since if endpoint.failing_since else now,
                last_error=error,
            )

    async def disable(self, endpoint_id: str, at: float, reason: str) -> None:
        endpoint = self._endpoints.get(endpoint_id)
        if endpoint is not None:
            self._endpoints[endpoint_id] = attrs.evolve(
                endpoint, disabled_at=at, disabled_reason=reason
            )

    async def pending(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for row in self._rows.values():
            out[row.endpoint_id] = out.get(row.endpoint_id, 0) + 1
        return out


_ENDPOINT = (
    "id, url, secret, events, created_at, failing_since, last_error, disabled_at, disabled_reason"
)
_ROW = "pos, event_id, endpoint_id, ordering_key, payload, attempts, next_attempt_at, last_error"
_HEADS = (
    "SELECT DISTINCT ON (o.endpoint_id, o.ordering_key) o.pos, o.event_id, o.endpoint_id,"
    " o.ordering_key, o.payload, o.attempts, o.next_attempt_at, o.last_error"
    " FROM webhook_outbox o JOIN webhook_endpoints e ON e.id = o.endpoint_id"
    " WHERE e.disabled_at IS NULL ORDER BY o.endpoint_id, o.ordering_key, o.pos"
)


def _endpoint(row: Row) -> EndpointRecord:
    eid, url, secret, events, created, failing, error, disabled, reason = row
    return EndpointRecord(
        eid, url, secret, tuple(events or ()), float(created), failing, error, disabled, reason
    )


def _row(row: Row) -> OutboxRow:
    pos, event_id, endpoint_id, key, payload, attempts, next_at, error = row
    return OutboxRow(
        int(pos), event_id, endpoint_id, key, payload, int(attempts), float(next_at), error
    )


class PostgresWebhookStore:
    def __init__(self, db: DatabaseGateway) -> None:
        self._db = db

    async def create_endpoint(self, endpoint: EndpointRecord) -> EndpointRecord:
        e = endpoint
        check_text(e.id, e.url, e.secret, *e.events)
        await self._db.execute(
            "INSERT INTO webhook_endpoints (id, url, secret, events, created_at)"
            " VALUES (%s, %s, %s, %s, %s)",
            (e.id, e.url, e.secret, list(e.events), e.created_at),
        )
        return endpoint

    async def list_endpoints(self) -> list[EndpointRecord]:
        rows = await self._db.fetch_all(
            "SELECT " + _ENDPOINT + " FROM webhook_endpoints ORDER BY created_at, id"
        )
        return [_endpoint(r) for r in rows]

    async def delete_endpoint(self, endpoint_id: str) -> bool:
        return (
            await self._db.execute("DELETE FROM webhook_endpoints WHERE id = %s", (endpoint_id,))
            == 1
        )

    async def enqueue(
        self,
        event_id: str,
        ordering_key: str,
        payload: str,
        endpoint_ids: Sequence[str],
        at: float,
    ) -> None:
        check_text(event_id, ordering_key, payload)
        if not endpoint_ids:
            return
        await self._db.execute(
            "INSERT INTO webhook_outbox (event_id, endpoint_id, ordering_key, payload,"
            " next_attempt_at) SELECT %s, e.id, %s, %s, %s FROM webhook_endpoints e"
            " WHERE e.id = ANY(%s) ORDER BY e.id ON CONFLICT (event_id, endpoint_id) DO NOTHING",
            (event_id, ordering_key, payload, at, list(endpoint_ids)),
        )

    async def due(self, now: float, limit: int) -> list[OutboxRow]:
        rows = await self._db.fetch_all(
            "SELECT * FROM (" + _HEADS + ") h WHERE h.next_attempt_at <= %s ORDER BY h.pos"
            " LIMIT %s",
            (now, limit),
        )
        return [_row(r) for r in rows]

    async def next_due(self) -> float | None:
        row = await self._db.fetch_one("SELECT min(h.next_attempt_at) FROM (" + _HEADS + ") h")
        return None if row is None or row[0] is None else float(row[0])

    async def delivered(self, pos: int, endpoint_id: str) -> None:
        def work(conn: Conn) -> None:
            conn.execute("DELETE FROM webhook_outbox WHERE pos = %s", (pos,))
            conn.execute(
                "UPDATE webhook_endpoints SET failing_since = NULL, last_error = NULL"
                " WHERE id = %s AND failing_since IS NOT NULL",
                (endpoint_id,),
            )

        await self._db.run_in_transaction(work)

    async def failed(self, row: OutboxRow, error: str, retry_at: float, now: float) -> None:
        def work(conn: Conn) -> None:
            conn.execute(
                "UPDATE webhook_outbox SET attempts = attempts + 1, next_attempt_at = %s,"
                " last_error = %s WHERE pos = %s",
                (retry_at, error, row.pos),
            )
            conn.execute(
                "UPDATE webhook_endpoints SET failing_since = coalesce(failing_since, %s),"
                " last_error = %s WHERE id = %s",
                (now, error, row.endpoint_id),
            )

        await self._db.run_in_transaction(work)

    async def disable(self, endpoint_id: str, at: float, reason: str) -> None:
        await self._db.execute(
            "UPDATE webhook_endpoints SET disabled_at = %s, disabled_reason = %s WHERE id = %s",
            (at, reason, endpoint_id),
        )

    async def pending(self) -> dict[str, int]:
        rows = await self._db.fetch_all(
            "SELECT endpoint_id, count(*) FROM webhook_outbox GROUP BY endpoint_id"
        )
        return {eid: int(n) for eid, n in rows}
