"""HTTP API for comment threads (``/v1/sessions/{id}/threads...``), for the app's backend.

Requests act for a user named in the body (``userId``) or the query (``?userId=``):
that user's role in the session is checked for the operation like on the
WebSocket (403 ``forbidden``), then the same service runs, so the same events
reach the session's members. Errors: 400 ``invalid_message`` with ``path``, 403,
404 ``not_found``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import attrs
import orjson

from runtime.comments.model import CommentError, ThreadFilter
from runtime.comments.service import Change
from runtime.http import HttpRequest, HttpResponse, HttpRouter, error_response, json_response
from runtime.protocol.codec import DecodeError, decode_body
from runtime.protocol.messages import FieldError
from runtime.security.permissions import Op, Role, allowed
from runtime.security.tokens import Identity
from runtime.security.validation import valid_id

if TYPE_CHECKING:
    from runtime.comments.feature import Collaboration
    from runtime.node import TandemNode

JSON = Any
_STATUS = {"not_found": 404, "forbidden": 403, "invalid_message": 400, "overloaded": 503}


def _user(_: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not valid_id(value):
        raise FieldError(attribute, "must be 1-128 characters of [A-Za-z0-9_.:@-]")


@attrs.frozen
class NewThread:
    user_id: str = attrs.field(validator=_user)
    body: str = ""
    anchor: JSON = None
    metadata: JSON = None
    mentions: list[str] = attrs.field(factory=list)


@attrs.frozen
class ThreadPatch:
    user_id: str = attrs.field(validator=_user)
    metadata: JSON = None
    anchor: JSON = None


@attrs.frozen
class NewComment:
    user_id: str = attrs.field(validator=_user)
    body: str = ""
    parent_id: str | None = attrs.field(default=None, validator=_user)
    mentions: list[str] = attrs.field(factory=list)


@attrs.frozen
class CommentPatch:
    user_id: str = attrs.field(validator=_user)
    body: str = ""
    mentions: list[str] | None = None


@attrs.frozen
class Actor:
    user_id: str = attrs.field(validator=_user)


@attrs.frozen
class Reaction:
    user_id: str = attrs.field(validator=_user)
    emoji: str = ""


def invalid(problem: DecodeError) -> HttpResponse:
    body = {"error": {"code": str(problem.code), "message": problem.message, "path": problem.path}}
    return json_response(400, body)


def refused(exc: CommentError) -> HttpResponse:
    error: dict[str, JSON] = {"code": exc.code, "message": exc.message}
    if exc.path is not None:
        error["path"] = exc.path
    return json_response(_STATUS.get(exc.code, 500), {"error": error})


def changed(change: Change, status: int = 200) -> HttpResponse:
    return json_response(status, {**change.result, "seq": change.seq})


class CommentsApi:
    def __init__(self, node: TandemNode, collab: Collaboration) -> None:
        self._node = node
        self._service = collab.comments

    def register(self, router: HttpRouter) -> None:
        from runtime.api.guard import api_guard

        guard = api_guard(self._node)
        base = "/v1/sessions/{id}"
        for method, path, handler in [
            ("POST", f"{base}/threads", self.create_thread),
            ("GET", f"{base}/threads", self.list_threads),
            ("GET", f"{base}/threads/{{thread}}", self.get_thread),
            ("PATCH", f"{base}/threads/{{thread}}", self.update_thread),
            ("POST", f"{base}/threads/{{thread}}/resolve", self.resolve),
            ("POST", f"{base}/threads/{{thread}}/reopen", self.reopen),
            ("POST", f"{base}/threads/{{thread}}/comments", self.create_comment),
            ("PATCH", f"{base}/comments/{{comment}}", self.edit_comment),
            ("DELETE", f"{base}/comments/{{comment}}", self.delete_comment),
            ("POST", f"{base}/comments/{{comment}}/reactions", self.add_reaction),
            ("DELETE", f"{base}/comments/{{comment}}/reactions/{{emoji}}", self.remove_reaction),
        ]:
            router.add(method, path, guard(self._errors(handler)))

    def _errors(self, handler: Any) -> Any:
        async def run(request: HttpRequest) -> HttpResponse:
            try:
                response: HttpResponse = await handler(request)
                return response
            except CommentError as exc:
                return refused(exc)

        return run

    async def _role(self, user_id: str, session_id: str, op: Op) -> Role:
        role = await self._node.access.role(Identity(user_id, user_id, False), session_id)
        if not allowed(role, op):
            raise _Forbidden(f"role {role.value!r} of {user_id!r} may not {op.value}")
        return role

    async def create_thread(self, request: HttpRequest) -> HttpResponse:
        body = decode_body(request.body, NewThread, self._node.limits)
        if isinstance(body, DecodeError):
            return invalid(body)
        sid = request.params["id"]
        await self._role(body.user_id, sid, Op.COMMENT)
        change = await self._service.create_thread(
            body.user_id,
            sid,
            body=body.body,
            anchor=body.anchor,
            metadata=body.metadata,
            mentions=body.mentions,
        )
        return changed(change, 201)

    async def list_threads(self, request: HttpRequest) -> HttpResponse:
        query = request.query
        where: dict[str, Any] = {"metadata": {}}
        try:
            limit = int(query.get("limit", "50"))
            if "resolved" in query:
                where["resolved"] = query["resolved"].lower() in ("1", "true", "yes")
            if "author" in query:
                where["author_id"] = query["author"]
            if "anchor" in query:
                where["anchor"] = orjson.loads(query["anchor"])
                where["match_anchor"] = True
            for key, value in query.items():
                if key.startswith("metadata."):
                    where["metadata"][key.removeprefix("metadata.")] = _json_or_text(value)
        except (ValueError, orjson.JSONDecodeError) as exc:
            return error_response(400, "invalid_message", f"bad query: {exc}")
        page = await self._service.list_threads(
            request.params["id"], ThreadFilter(**where), query.get("after"), limit
        )
        return json_response(200, page)

    async def get_thread(self, request: HttpRequest) -> HttpResponse:
        result = await self._service.get_thread(request.params["id"], request.params["thread"])
        return json_response(200, result)

    async def update_thread(self, request: HttpRequest) -> HttpResponse:
        body = decode_body(request.body, ThreadPatch, self._node.limits)
        if isinstance(body, DecodeError):
            return invalid(body)
        sid = request.params["id"]
        role = await self._role(body.user_id, sid, Op.COMMENT)
        change = await self._service.update_thread(
            body.user_id,
            role,
            sid,
            request.params["thread"],
            metadata=body.metadata,
            anchor=body.anchor,
            set_anchor=body.anchor is not None,
        )
        return changed(change)

    async def _resolve(self, request: HttpRequest, resolved: bool) -> HttpResponse:
        body = decode_body(request.body, Actor, self._node.limits)
        if isinstance(body, DecodeError):
            return invalid(body)
        sid = request.params["id"]
        await self._role(body.user_id, sid, Op.RESOLVE)
        change = await self._service.resolve(
            body.user_id, sid, request.params["thread"], resolved=resolved
        )
        return changed(change)

    async def resolve(self, request: HttpRequest) -> HttpResponse:
        return await self._resolve(request, True)

    async def reopen(self, request: HttpRequest) -> HttpResponse:
        return await self._resolve(request, False)

    async def create_comment(self, request: HttpRequest) -> HttpResponse:
        body = decode_body(request.body, NewComment, self._node.limits)
        if isinstance(body, DecodeError):
            return invalid(body)
        sid = request.params["id"]
        await self._role(body.user_id, sid, Op.COMMENT)
        change = await self._service.create_comment(
            body.user_id,
            sid,
            request.params["thread"],
            body=body.body,
            parent_id=body.parent_id,
            mentions=body.mentions,
        )
        return changed(change, 201)

    async def edit_comment(self, request: HttpRequest) -> HttpResponse:
        body = decode_body(request.body, CommentPatch, self._node.limits)
        if isinstance(body, DecodeError):
            return invalid(body)
        sid = request.params["id"]
        await self._role(body.user_id, sid, Op.COMMENT)
        change = await self._service.edit_comment(
            body.user_id, sid, request.params["comment"], body=body.body, mentions=body.mentions
        )
        return changed(change)

    async def delete_comment(self, request: HttpRequest) -> HttpResponse:
        user_id = request.query.get("userId", "")
        if not valid_id(user_id):
            return error_response(400, "invalid_message", "?userId= names the acting user")
        sid = request.params["id"]
        role = await self._role(user_id, sid, Op.COMMENT)
        change = await self._service.delete_comment(user_id, role, sid, request.params["comment"])
        return changed(change)

    async def add_reaction(self, request: HttpRequest) -> HttpResponse:
        body = decode_body(request.body, Reaction, self._node.limits)
        if isinstance(body, DecodeError):
            return invalid(body)
        sid = request.params["id"]
        await self._role(body.user_id, sid, Op.REACT)
        change = await self._service.react(
            body.user_id, sid, request.params["comment"], body.emoji, add=True
        )
        return changed(change)

    async def remove_reaction(self, request: HttpRequest) -> HttpResponse:
        user_id = request.query.get("userId", "")
        if not valid_id(user_id):
            return error_response(400, "invalid_message", "?userId= names the acting user")
        sid = request.params["id"]
        await self._role(user_id, sid, Op.REACT)
        change = await self._service.react(
            user_id, sid, request.params["comment"], unquote(request.params["emoji"]), add=False
        )
        return changed(change)


class _Forbidden(CommentError):
    code = "forbidden"


def _json_or_text(value: str) -> JSON:
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        return value
