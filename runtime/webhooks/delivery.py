"""Webhook delivery: events into the outbox, one task delivering it with retries.

``publish`` writes one outbox row per interested endpoint (in PostgreSQL, so a
restart loses nothing). The delivery task sends the head of each
(endpoint, ordering key) queue — a session's events go one at a time, oldest
first — signs every request (``runtime.webhooks.signing``), and on failure
retries after ``retry_base * 2**attempts`` seconds (capped at ``retry_cap``, with
up to 10 % jitter). An endpoint failing without a single success for
``disable_after`` seconds is disabled and reported in ``/status``.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import Any

import attrs
import orjson
import trio

from runtime.gateways.webhooks import EndpointRecord, OutboxRow, WebhookStore
from runtime.webhooks.client import DeliveryError, post
from runtime.webhooks.signing import HEADER, sign

logger = logging.getLogger(__name__)

JSON = Any


@attrs.frozen
class WebhookConfig:
    retry_base: float = 1.0
    retry_cap: float = 3600.0
    disable_after: float = 3 * 86400.0
    request_timeout: float = 10.0
    concurrency: int = 16


def retry_delay(attempts: int, config: WebhookConfig, jitter: float = 0.0) -> float:
    """Seconds before the next try after ``attempts`` failed ones (``jitter`` in [0, 1))."""
    delay = min(config.retry_cap, config.retry_base * 2.0 ** min(attempts, 40))
    return float(delay * (1.0 + 0.1 * jitter))


class Webhooks:
    def __init__(
        self, store: WebhookStore, *, config: WebhookConfig, clock: Callable[[], float]
    ) -> None:
        self.store = store
        self.config = config
        self._clock = clock
        self._endpoints: dict[str, EndpointRecord] = {}
        self._wake = trio.Event()
        self._pending: dict[str, int] = {}
        self.delivered = 0
        self.failed = 0

    async def load(self) -> None:
        self._endpoints = {e.id: e for e in await self.store.list_endpoints()}
        self._pending = await self.store.pending()
        self._wake.set()

    # -- endpoints --------------------------------------------------------------------

    async def add_endpoint(self, endpoint: EndpointRecord) -> EndpointRecord:
        record = await self.store.create_endpoint(endpoint)
        self._endpoints[record.id] = record
        return record

    async def remove_endpoint(self, endpoint_id: str) -> bool:
        removed = await self.store.delete_endpoint(endpoint_id)
        self._endpoints.pop(endpoint_id, None)
        return removed

    # -- events -----------------------------------------------------------------------

    async def publish(self, event_type: str, ordering_key: str, event_id: str, data: JSON) -> None:
        """Queue an event for every enabled endpoint that wants it (no-op without any)."""
        targets = [
            e.id for e in self._endpoints.values() if e.disabled_at is None and e.wants(event_type)
        ]
        if not targets:
            return
        now = self._clock()
        payload = orjson.dumps(
            {"id": event_id, "type": event_type, "createdAt": now, "data": data}
        ).decode()
        await self.store.enqueue(event_id, ordering_key, payload, targets, now)
        for target in targets:
            self._pending[target] = self._pending.get(target, 0) + 1
        self._wake.set()

    # -- delivery ---------------------------------------------------------------------

    async def run(self) -> None:
        """Deliver due outbox rows until cancelled; database trouble is retried after a pause."""
        limiter = trio.CapacityLimiter(self.config.concurrency)
        while True:
            self._wake = trio.Event()  # before reading: a publish from now on wakes us
            try:
                rows = await self.store.due(self._clock(), self.config.concurrency * 4)
                if rows:
                    async with trio.open_nursery() as nursery:
                        for row in rows:
                            nursery.start_soon(self._deliver, row, limiter)
                    continue
                next_due = await self.store.next_due()
                self._pending = await self.store.pending()
            except Exception as exc:  # the store is down: try again shortly
                logger.warning("webhook delivery paused: %s", exc)
                await trio.sleep(1.0)
                continue
            wait = 60.0 if next_due is None else max(0.01, next_due - self._clock())
            with trio.move_on_after(min(wait, 60.0)):
                await self._wake.wait()

    async def _deliver(self, row: OutboxRow, limiter: trio.CapacityLimiter) -> None:
        endpoint = self._endpoints.get(row.endpoint_id)
        if endpoint is None or endpoint.disabled_at is not None:
            return
        async with limiter:
            body = row.payload.encode()
            headers = [
                (HEADER, sign(endpoint.secret, body, int(self._clock()))),
                ("Tandem-Event-Id", row.event_id),
            ]
            try:
                status = await post(
                    endpoint.url, body, headers, limit_s=self.config.request_timeout
                )
                error = None if 200 <= status < 300 else f"HTTP {status}"
            except DeliveryError as exc:
                error = str(exc)
        now = self._clock()
        if error is None:
            self.delivered += 1
            await self.store.delivered(row.pos, row.endpoint_id)
            self._pending[row.endpoint_id] = max(0, self._pending.get(row.endpoint_id, 1) - 1)
            self._endpoints[endpoint.id] = attrs.evolve(
                endpoint, failing_since=None, last_error=None
            )
            return
        self.failed += 1
        retry_at = now + retry_delay(row.attempts, self.config, random.random())
        await self.store.failed(row, error, retry_at, now)
        failing_since = endpoint.failing_since if endpoint.failing_since is not None else now
        endpoint = attrs.evolve(endpoint, failing_since=failing_since, last_error=error)
        if now - failing_since >= self.config.disable_after:
            reason = f"failing since {failing_since:.0f} (last error: {error})"
            await self.store.disable(endpoint.id, now, reason)
            endpoint = attrs.evolve(endpoint, disabled_at=now, disabled_reason=reason)
            logger.warning("webhook endpoint %s disabled: %s", endpoint.id, reason)
        self._endpoints[endpoint.id] = endpoint

    # -- status -----------------------------------------------------------------------

    def status(self) -> dict[str, JSON]:
        endpoints = sorted(self._endpoints.values(), key=lambda e: e.id)
        return {
            "endpoints": len(endpoints),
            "pending": sum(self._pending.values()),
            "delivered": self.delivered,
            "failedAttempts": self.failed,
            "failing": [
                {"id": e.id, "url": e.url, "since": e.failing_since, "lastError": e.last_error}
                for e in endpoints
                if e.failing_since is not None and e.disabled_at is None
            ],
            "disabled": [
                {"id": e.id, "url": e.url, "at": e.disabled_at, "reason": e.disabled_reason}
                for e in endpoints
                if e.disabled_at is not None
            ],
        }


def endpoint_json(e: EndpointRecord, *, with_secret: bool = False) -> dict[str, JSON]:
    out: dict[str, JSON] = {
        "id": e.id,
        "url": e.url,
        "events": list(e.events),
        "createdAt": e.created_at,
        "failingSince": e.failing_since,
        "lastError": e.last_error,
        "disabled": e.disabled_at is not None,
        "disabledAt": e.disabled_at,
        "disabledReason": e.disabled_reason,
    }
    if with_secret:
        out["secret"] = e.secret
    return out
