"""The HTTP JSON API for the app's backend: sessions and their members (``/v1/sessions``).

Handlers take an :class:`~runtime.http.HttpRequest` and return a response;
bodies are decoded with the protocol's cattrs rules (unknown fields refused,
errors with a JSON path). Listing pages by id with an opaque ``after`` cursor.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

from runtime.api.guard import api_guard
from runtime.cluster.requests import ClusterRequestError
from runtime.gateways.memory import MemberRecord, SessionExists, SessionNotFound, SessionRecord
from runtime.http import HttpRequest, HttpResponse, HttpRouter, error_response, json_response
from runtime.protocol.codec import DecodeError, decode_body
from runtime.protocol.messages import FieldError, id_validator
from runtime.security.validation import valid_id

if TYPE_CHECKING:
    from runtime.node import TandemNode

ROLES = ("owner", "editor", "commenter", "viewer")
MAX_PAGE = 200


def _role(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    if value not in ROLES:
        raise FieldError(attribute, f"must be one of {', '.join(ROLES)}")


_id = id_validator


def _metadata(_: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, dict):
        raise FieldError(attribute, "must be a JSON object")


@attrs.frozen
class CreateSession:
    id: str = attrs.field(validator=_id)
    metadata: Any = attrs.field(factory=dict, validator=_metadata)


@attrs.frozen
class UpdateSession:
    metadata: Any = attrs.field(validator=_metadata)


@attrs.frozen
class PutMember:
    role: str = attrs.field(validator=_role)


def session_json(record: SessionRecord) -> dict[str, Any]:
    out = {
        "id": record.id,
        "metadata": record.metadata,
        "seq": record.last_seq,
        "createdAt": record.created_at,
        "updatedAt": record.updated_at,
    }
    if record.deleted_at is not None:
        out["deletedAt"] = record.deleted_at
    return out


def member_json(record: MemberRecord) -> dict[str, Any]:
    return {"userId": record.user_id, "role": record.role, "joinedAt": record.joined_at}


def _invalid(problem: DecodeError) -> HttpResponse:
    body = {"error": {"code": str(problem.code), "message": problem.message, "path": problem.path}}
    return json_response(400, body)


class SessionsApi:
    def __init__(self, node: TandemNode) -> None:
        self._node = node
        self._repo = node.sessions

    def register(self, router: HttpRouter) -> None:
        guard = api_guard(self._node)
        for method, path, handler in [
            ("POST", "/v1/sessions", self.create),
            ("GET", "/v1/sessions", self.list),
            ("GET", "/v1/sessions/{id}", self.get),
            ("PATCH", "/v1/sessions/{id}", self.update),
            ("DELETE", "/v1/sessions/{id}", self.delete),
            ("GET", "/v1/sessions/{id}/members", self.members),
            ("PUT", "/v1/sessions/{id}/members/{user}", self.put_member),
            ("DELETE", "/v1/sessions/{id}/members/{user}", self.remove_member),
            ("GET", "/v1/sessions/{id}/participants", self.participants),
            ("GET", "/v1/sessions/{id}/events", self.events),
        ]:
            router.add(method, path, guard(handler))

    async def create(self, request: HttpRequest) -> HttpResponse:
        body = decode_body(request.body, CreateSession, self._node.limits)
        if isinstance(body, DecodeError):
            return _invalid(body)
        try:
            record = await self._repo.create(body.id, body.metadata)
        except SessionExists:
            return error_response(409, "conflict", f"session {body.id!r} exists")
        return json_response(201, session_json(record))

    async def list(self, request: HttpRequest) -> HttpResponse:
        query = request.query
        try:
            limit = min(MAX_PAGE, max(1, int(query.get("limit", "50"))))
        except ValueError:
            return error_response(400, "invalid_message", "limit must be an integer")
        after = query.get("after")
        records = await self._repo.list_sessions(after=after, limit=limit)
        page: dict[str, Any] = {"sessions": [session_json(r) for r in records]}
        if len(records) == limit:
            page["next"] = records[-1].id
        return json_response(200, page)

    async def get(self, request: HttpRequest) -> HttpResponse:
        record = await self._repo.get(request.params["id"])
        if record is None:
            return _not_found(request.params["id"])
        return json_response(200, session_json(record))

    async def update(self, request: HttpRequest) -> HttpResponse:
        body = decode_body(request.body, UpdateSession, self._node.limits)
        if isinstance(body, DecodeError):
            return _invalid(body)
        try:
            record = await self._repo.update_metadata(request.params["id"], body.metadata)
        except SessionNotFound:
            return _not_found(request.params["id"])
        return json_response(200, session_json(record))

    async def delete(self, request: HttpRequest) -> HttpResponse:
        if not await self._repo.soft_delete(request.params["id"]):
            return _not_found(request.params["id"])
        await self._node.session_deleted(request.params["id"])
        return HttpResponse(204)

    async def members(self, request: HttpRequest) -> HttpResponse:
        if await self._repo.get(request.params["id"]) is None:
            return _not_found(request.params["id"])
        records = await self._repo.list_members(request.params["id"])
        return json_response(200, {"members": [member_json(r) for r in records]})

    async def put_member(self, request: HttpRequest) -> HttpResponse:
        body = decode_body(request.body, PutMember, self._node.limits)
        if isinstance(body, DecodeError):
            return _invalid(body)
        if not valid_id(request.params["user"]):
            return error_response(
                400, "invalid_message", "user id must be 1-128 of [A-Za-z0-9_.:@-]"
            )
        previous = await self._repo.get_member_role(request.params["id"], request.params["user"])
        try:
            record = await self._repo.add_member(
                request.params["id"], request.params["user"], body.role
            )
        except SessionNotFound:
            return _not_found(request.params["id"])
        await self._node.audit(
            "member.added" if previous is None else "member.role_changed",
            "api",
            f"{record.session_id}/{record.user_id}",
            {"role": record.role, **({} if previous is None else {"previous_role": previous})},
        )
        return json_response(200, member_json(record))

    async def remove_member(self, request: HttpRequest) -> HttpResponse:
        role = await self._repo.get_member_role(request.params["id"], request.params["user"])
        if not await self._repo.remove_member(request.params["id"], request.params["user"]):
            return error_response(404, "not_found", "no such member")
        await self._node.audit(
            "member.removed",
            "api",
            f"{request.params['id']}/{request.params['user']}",
            {"role": role},
        )
        return HttpResponse(204)

    async def participants(self, request: HttpRequest) -> HttpResponse:
        try:
            participants = await self._node.participants(request.params["id"])
        except ClusterRequestError as exc:  # the owner node did not answer: not "nobody"
            return error_response(503, "overloaded", f"participants unavailable: {exc}")
        return json_response(200, {"participants": participants})

    async def events(self, request: HttpRequest) -> HttpResponse:
        query = request.query
        try:
            after = int(query.get("after", "0"))
            limit = min(1000, max(1, int(query.get("limit", "100"))))
        except ValueError:
            return error_response(400, "invalid_message", "after and limit must be integers")
        events = await self._node.store.read_since(request.params["id"], after, limit)
        return json_response(
            200,
            {
                "events": [
                    {"seq": e.seq, "name": e.name, "data": e.data, "userId": e.user_id, "ts": e.ts}
                    for e in events
                ]
            },
        )


def _not_found(session_id: str) -> HttpResponse:
    return error_response(404, "not_found", f"no session {session_id!r}")
