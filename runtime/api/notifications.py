"""HTTP API for notifications (``/v1/users/{user}/notifications``) and webhooks (``/v1/webhooks``).

The app's backend posts its own notification kinds to a user's inbox (grouped and
delivered live like Tandem's own), reads inboxes, and registers webhook endpoints.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

import attrs

from actors.inbox.state import Incoming
from runtime.api.comments import invalid
from runtime.gateways.webhooks import EndpointRecord
from runtime.http import HttpRequest, HttpResponse, HttpRouter, error_response, json_response
from runtime.protocol.codec import DecodeError, decode_body
from runtime.protocol.messages import FieldError
from runtime.security.validation import valid_id
from runtime.webhooks.delivery import endpoint_json

if TYPE_CHECKING:
    from runtime.comments.feature import Collaboration
    from runtime.node import TandemNode

JSON = Any


def _opt_id(_: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not valid_id(value):
        raise FieldError(attribute, "must be 1-128 characters of [A-Za-z0-9_.:@-]")


def _kind(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not valid_id(value):
        raise FieldError(attribute, "must be 1-128 characters of [A-Za-z0-9_.:@-]")


def _object(_: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, dict):
        raise FieldError(attribute, "must be a JSON object")


def _url(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not value.startswith(("http://", "https://")) or len(value) > 2048:
        raise FieldError(attribute, "must be an http:// or https:// URL (at most 2048 chars)")


def _secret(_: object, attribute: attrs.Attribute[str | None], value: str | None) -> None:
    if value is not None and not 16 <= len(value) <= 256:
        raise FieldError(attribute, "must be 16-256 characters")


@attrs.frozen
class PostNotification:
    kind: str = attrs.field(validator=_kind)
    data: JSON = attrs.field(factory=dict, validator=_object)
    session_id: str | None = attrs.field(default=None, validator=_opt_id)
    thread_id: str | None = attrs.field(default=None, validator=_opt_id)
    actor_id: str | None = attrs.field(default=None, validator=_opt_id)
    group_key: str | None = attrs.field(default=None, validator=_opt_id)


@attrs.frozen
class PostWebhook:
    url: str = attrs.field(validator=_url)
    secret: str | None = attrs.field(default=None, validator=_secret)
    events: list[str] = attrs.field(factory=list)


class NotificationsApi:
    def __init__(self, node: TandemNode, collab: Collaboration) -> None:
        self._node = node
        self._collab = collab

    def register(self, router: HttpRouter) -> None:
        from runtime.api.guard import api_guard

        guard = api_guard(self._node)
        router.add("POST", "/v1/users/{user}/notifications", guard(self.post))
        router.add("GET", "/v1/users/{user}/notifications", guard(self.list))
        router.add("POST", "/v1/users/{user}/notifications/read-all", guard(self.read_all))

    async def post(self, request: HttpRequest) -> HttpResponse:
        user = request.params["user"]
        if not valid_id(user):
            return error_response(
                400, "invalid_message", "user id must be 1-128 of [A-Za-z0-9_.:@-]"
            )
        body = decode_body(request.body, PostNotification, self._node.limits)
        if isinstance(body, DecodeError):
            return invalid(body)
        record = await self._collab.deliver(
            user,
            Incoming(
                kind=body.kind,
                session_id=body.session_id,
                thread_id=body.thread_id,
                actor_id=body.actor_id,
                data=body.data,
                group_key=body.group_key,
            ),
        )
        if record is None:
            return error_response(403, "forbidden", "the user may not read that session")
        from runtime.gateways.notifications import notification_json

        return json_response(201, notification_json(record))

    async def list(self, request: HttpRequest) -> HttpResponse:
        query = request.query
        try:
            before = int(query["before"]) if "before" in query else None
            limit = min(200, max(1, int(query.get("limit", "50"))))
        except ValueError:
            return error_response(400, "invalid_message", "before and limit must be integers")
        page = await self._collab.notification_page(
            request.params["user"],
            before=before,
            limit=limit,
            unread_only=query.get("unread", "") in ("1", "true"),
        )
        return json_response(200, page)

    async def read_all(self, request: HttpRequest) -> HttpResponse:
        return json_response(200, await self._collab.mark_all_read(request.params["user"]))


class WebhooksApi:
    def __init__(self, node: TandemNode, collab: Collaboration) -> None:
        self._node = node
        self._webhooks = collab.webhooks

    def register(self, router: HttpRouter) -> None:
        from runtime.api.guard import api_guard

        guard = api_guard(self._node)
        router.add("POST", "/v1/webhooks", guard(self.create))
        router.add("GET", "/v1/webhooks", guard(self.list))
        router.add("DELETE", "/v1/webhooks/{id}", guard(self.delete))

    async def create(self, request: HttpRequest) -> HttpResponse:
        body = decode_body(request.body, PostWebhook, self._node.limits)
        if isinstance(body, DecodeError):
            return invalid(body)
        record = await self._webhooks.add_endpoint(
            EndpointRecord(
                id=f"wh_{secrets.token_hex(8)}",
                url=body.url,
                secret=body.secret or secrets.token_urlsafe(32),
                events=tuple(body.events),
                created_at=self._node.wall_clock(),
            )
        )
        return json_response(201, endpoint_json(record, with_secret=True))

    async def list(self, request: HttpRequest) -> HttpResponse:
        endpoints = await self._webhooks.store.list_endpoints()
        pending = await self._webhooks.store.pending()
        return json_response(
            200,
            {
                "webhooks": [
                    {**endpoint_json(e), "pending": pending.get(e.id, 0)} for e in endpoints
                ]
            },
        )

    async def delete(self, request: HttpRequest) -> HttpResponse:
        if not await self._webhooks.remove_endpoint(request.params["id"]):
            return error_response(404, "not_found", "no such webhook")
        return HttpResponse(204)
