"""``GET /v1/audit``: list and filter the audit log (behind the API key, like all of /v1).

Query: ``action``, ``actor`` (exact matches), ``since`` (unix seconds),
``after`` (the ``next`` cursor of the previous page: a seq) and ``limit``.
Records come in seq order (oldest first).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from runtime.api.guard import api_guard
from runtime.gateways.audit_log import AuditLog
from runtime.http import HttpRequest, HttpResponse, HttpRouter, error_response, json_response
from runtime.security.audit import AuditRecord

if TYPE_CHECKING:
    from runtime.node import TandemNode

MAX_PAGE = 500


def audit_json(record: AuditRecord) -> dict[str, Any]:
    return {
        "seq": record.seq,
        "ts": record.ts,
        "actor": record.actor,
        "action": record.action,
        "target": record.target,
        "details": dict(record.details),
        "prevHash": record.prev_hash,
        "hash": record.hash,
    }


class AuditApi:
    def __init__(self, node: TandemNode) -> None:
        self._node = node

    def register(self, router: HttpRouter) -> None:
        router.add("GET", "/v1/audit", api_guard(self._node)(self.list))

    async def list(self, request: HttpRequest) -> HttpResponse:
        log = self._node.audit_log
        if not isinstance(log, AuditLog):
            return error_response(404, "not_found", "no audit log is configured")
        query = request.query
        try:
            limit = min(MAX_PAGE, max(1, int(query.get("limit", "100"))))
            after = max(0, int(query.get("after", "0")))
            since = float(query["since"]) if "since" in query else None
        except ValueError:
            return error_response(
                400, "invalid_message", "after and limit must be integers, since a number"
            )
        records = await log.list(
            action=query.get("action") or None,
            actor=query.get("actor") or None,
            since=since,
            after=after,
            limit=limit,
        )
        page: dict[str, Any] = {"records": [audit_json(r) for r in records]}
        if len(records) == limit:
            page["next"] = str(records[-1].seq)
        return json_response(200, page)
