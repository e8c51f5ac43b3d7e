"""Comments and notifications over the WebSocket: client messages and their handlers.

Every message is registered with the dispatcher, whose gate checks identity,
the session role for the route's operation and the rate limits before the
handler runs. A handler answers with ``<type>:ok`` (``result``; ``seq`` of the
event a change appended, None when nothing changed) or an ``error``, always
carrying the request's ``ref``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

from runtime.comments.model import CommentError, ThreadFilter
from runtime.dispatcher import Route
from runtime.protocol import messages as wire
from runtime.protocol.codec import register_client_type
from runtime.protocol.messages import FieldError, Ref, id_validator, ref_validator
from runtime.security.permissions import Op, Role
from runtime.security.ratelimit import Kind
from runtime.transport.connection import ClientConnection

if TYPE_CHECKING:
    from runtime.comments.feature import Collaboration

JSON = Any


_ref = ref_validator


def _id(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    """The protocol's id rule; None passes (a comment's optional parent)."""
    if value is not None:
        id_validator(instance, attribute, value)


def _limit(_: object, attribute: attrs.Attribute[int], value: int) -> None:
    if not 1 <= value <= 200:
        raise FieldError(attribute, "must be 1-200")


@attrs.frozen
class ThreadCreate:
    session_id: str = attrs.field(validator=_id)
    body: str = ""
    anchor: JSON = None
    metadata: JSON = None
    mentions: list[str] = attrs.field(factory=list)
    ref: Ref = attrs.field(default=None, validator=_ref)


@attrs.frozen
class ThreadUpdate:
    session_id: str = attrs.field(validator=_id)
    thread_id: str = attrs.field(validator=_id)
    metadata: JSON = None
    anchor: JSON = None
    ref: Ref = attrs.field(default=None, validator=_ref)


@attrs.frozen
class CommentCreate:
    session_id: str = attrs.field(validator=_id)
    thread_id: str = attrs.field(validator=_id)
    body: str = ""
    parent_id: str | None = attrs.field(default=None, validator=_id)
    mentions: list[str] = attrs.field(factory=list)
    ref: Ref = attrs.field(default=None, validator=_ref)


@attrs.frozen
class CommentEdit:
    session_id: str = attrs.field(validator=_id)
    comment_id: str = attrs.field(validator=_id)
    body: str = ""
    mentions: list[str] | None = None
    ref: Ref = attrs.field(default=None, validator=_ref)


@attrs.frozen
class CommentDelete:
    session_id: str = attrs.field(validator=_id)
    comment_id: str = attrs.field(validator=_id)
    ref: Ref = attrs.field(default=None, validator=_ref)


@attrs.frozen
class ReactionAdd:
    session_id: str = attrs.field(validator=_id)
    comment_id: str = attrs.field(validator=_id)
    emoji: str = ""
    ref: Ref = attrs.field(default=None, validator=_ref)


@attrs.frozen
class ReactionRemove:
    session_id: str = attrs.field(validator=_id)
    comment_id: str = attrs.field(validator=_id)
    emoji: str = ""
    ref: Ref = attrs.field(default=None, validator=_ref)


@attrs.frozen
class ThreadResolve:
    session_id: str = attrs.field(validator=_id)
    thread_id: str = attrs.field(validator=_id)
    ref: Ref = attrs.field(default=None, validator=_ref)


@attrs.frozen
class ThreadReopen:
    session_id: str = attrs.field(validator=_id)
    thread_id: str = attrs.field(validator=_id)
    ref: Ref = attrs.field(default=None, validator=_ref)


@attrs.frozen
class ThreadList:
    session_id: str = attrs.field(validator=_id)
    resolved: bool | None = None
    author_id: str | None = attrs.field(default=None, validator=_id)
    metadata: JSON = None  # {key: value}: threads whose metadata has these top-level values
    anchor: JSON = None  # threads anchored exactly here
    after: str | None = None
    limit: int = attrs.field(default=50, validator=_limit)
    ref: Ref = attrs.field(default=None, validator=_ref)


@attrs.frozen
class ThreadGet:
    session_id: str = attrs.field(validator=_id)
    thread_id: str = attrs.field(validator=_id)
    ref: Ref = attrs.field(default=None, validator=_ref)


@attrs.frozen
class NotificationsList:
    before: int | None = None
    limit: int = attrs.field(default=50, validator=_limit)
    unread_only: bool = False
    ref: Ref = attrs.field(default=None, validator=_ref)


@attrs.frozen
class NotificationRead:
    id: str = attrs.field(validator=_id)
    ref: Ref = attrs.field(default=None, validator=_ref)


@attrs.frozen
class NotificationsReadAll:
    ref: Ref = attrs.field(default=None, validator=_ref)


TYPES: dict[str, type] = {
    "thread:create": ThreadCreate,
    "thread:update": ThreadUpdate,
    "comment:create": CommentCreate,
    "comment:edit": CommentEdit,
    "comment:delete": CommentDelete,
    "reaction:add": ReactionAdd,
    "reaction:remove": ReactionRemove,
    "thread:resolve": ThreadResolve,
    "thread:reopen": ThreadReopen,
    "thread:list": ThreadList,
    "thread:get": ThreadGet,
    "notifications:list": NotificationsList,
    "notification:read": NotificationRead,
    "notifications:read_all": NotificationsReadAll,
}
_TAG = {cls: tag for tag, cls in TYPES.items()}
for _tag, _cls in TYPES.items():
    register_client_type(_tag, _cls)


def ok(message: Any, result: JSON, seq: int | None = None) -> dict[str, JSON]:
    out: dict[str, JSON] = {"type": f"{_TAG[type(message)]}:ok", "result": result}
    if hasattr(message, "session_id"):
        out["sessionId"] = message.session_id
        out["seq"] = seq
    if message.ref is not None:
        out["ref"] = message.ref
    return out


class CommentHandlers:
    """The WebSocket side of comments and notifications."""

    def __init__(self, collab: Collaboration) -> None:
        self._collab = collab
        self._comments = collab.comments

    def register(self, register: Any) -> None:
        create = (Kind.COMMENT_PER_USER,)
        for cls, handler, op, rate in [
            (ThreadCreate, self.thread_create, Op.COMMENT, create),
            (ThreadUpdate, self.thread_update, Op.COMMENT, ()),
            (CommentCreate, self.comment_create, Op.COMMENT, create),
            (CommentEdit, self.comment_edit, Op.COMMENT, ()),
            (CommentDelete, self.comment_delete, Op.COMMENT, ()),
            (ReactionAdd, self.reaction_add, Op.REACT, create),
            (ReactionRemove, self.reaction_remove, Op.REACT, ()),
            (ThreadResolve, self.thread_resolve, Op.RESOLVE, ()),
            (ThreadReopen, self.thread_reopen, Op.RESOLVE, ()),
            (ThreadList, self.thread_list, Op.READ_HISTORY, ()),
            (ThreadGet, self.thread_get, Op.READ_HISTORY, ()),
            (NotificationsList, self.notifications_list, None, ()),
            (NotificationRead, self.notification_read, None, ()),
            (NotificationsReadAll, self.notifications_read_all, None, ()),
        ]:
            register(cls, Route(self._guarded(handler), op, rate=rate))

    def _guarded(self, handler: Any) -> Any:
        async def run(conn: ClientConnection, message: Any) -> None:
            try:
                await handler(conn, message)
            except CommentError as exc:
                conn.send(
                    wire.error(
                        exc.code,
                        exc.message,
                        message.ref,
                        path=exc.path,
                        session_id=getattr(message, "session_id", None),
                    )
                )

        return run

    async def thread_create(self, conn: ClientConnection, m: ThreadCreate) -> None:
        change = await self._comments.create_thread(
            conn.user_id,
            m.session_id,
            body=m.body,
            anchor=m.anchor,
            metadata=m.metadata,
            mentions=m.mentions,
        )
        conn.send(ok(m, change.result, change.seq))

    async def thread_update(self, conn: ClientConnection, m: ThreadUpdate) -> None:
        change = await self._comments.update_thread(
            conn.user_id,
            conn.roles.get(m.session_id, Role.NONE),
            m.session_id,
            m.thread_id,
            metadata=m.metadata,
            anchor=m.anchor,
            set_anchor=m.anchor is not None,
        )
        conn.send(ok(m, change.result, change.seq))

    async def comment_create(self, conn: ClientConnection, m: CommentCreate) -> None:
        change = await self._comments.create_comment(
            conn.user_id,
            m.session_id,
            m.thread_id,
            body=m.body,
            parent_id=m.parent_id,
            mentions=m.mentions,
        )
        conn.send(ok(m, change.result, change.seq))

    async def comment_edit(self, conn: ClientConnection, m: CommentEdit) -> None:
        change = await self._comments.edit_comment(
            conn.user_id, m.session_id, m.comment_id, body=m.body, mentions=m.mentions
        )
        conn.send(ok(m, change.result, change.seq))

    async def comment_delete(self, conn: ClientConnection, m: CommentDelete) -> None:
        role = conn.roles.get(m.session_id, Role.NONE)
        change = await self._comments.delete_comment(conn.user_id, role, m.session_id, m.comment_id)
        conn.send(ok(m, change.result, change.seq))

    async def reaction_add(self, conn: ClientConnection, m: ReactionAdd) -> None:
        change = await self._comments.react(
            conn.user_id, m.session_id, m.comment_id, m.emoji, add=True
        )
        conn.send(ok(m, change.result, change.seq))

    async def reaction_remove(self, conn: ClientConnection, m: ReactionRemove) -> None:
        change = await self._comments.react(
            conn.user_id, m.session_id, m.comment_id, m.emoji, add=False
        )
        conn.send(ok(m, change.result, change.seq))

    async def thread_resolve(self, conn: ClientConnection, m: ThreadResolve) -> None:
        change = await self._comments.resolve(
            conn.user_id, m.session_id, m.thread_id, resolved=True
        )
        conn.send(ok(m, change.result, change.seq))

    async def thread_reopen(self, conn: ClientConnection, m: ThreadReopen) -> None:
        change = await self._comments.resolve(
            conn.user_id, m.session_id, m.thread_id, resolved=False
        )
        conn.send(ok(m, change.result, change.seq))

    async def thread_list(self, conn: ClientConnection, m: ThreadList) -> None:
        if m.metadata is not None and not isinstance(m.metadata, dict):
            conn.send(wire.error("invalid_message", "must be an object", m.ref, path="$.metadata"))
            return
        where = ThreadFilter(
            resolved=m.resolved,
            author_id=m.author_id,
            metadata=m.metadata or {},
            anchor=m.anchor,
            match_anchor=m.anchor is not None,
        )
        page = await self._comments.list_threads(m.session_id, where, m.after, m.limit)
        conn.send(ok(m, page))

    async def thread_get(self, conn: ClientConnection, m: ThreadGet) -> None:
        conn.send(ok(m, await self._comments.get_thread(m.session_id, m.thread_id)))

    async def notifications_list(self, conn: ClientConnection, m: NotificationsList) -> None:
        page = await self._collab.notification_page(
            conn.user_id, before=m.before, limit=m.limit, unread_only=m.unread_only
        )
        conn.send(ok(m, page))

    async def notification_read(self, conn: ClientConnection, m: NotificationRead) -> None:
        result = await self._collab.mark_read(conn.user_id, m.id)
        if result is None:
            conn.send(wire.error("not_found", f"no notification {m.id!r}", m.ref, path="$.id"))
            return
        conn.send(ok(m, result))

    async def notifications_read_all(self, conn: ClientConnection, m: NotificationsReadAll) -> None:
        conn.send(ok(m, await self._collab.mark_all_read(conn.user_id)))
