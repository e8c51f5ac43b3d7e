"""Dispatcher: the one place a client request is checked and turned into actor messages.

Every decoded message passes the same gate, in this order, before its handler
runs — so no handler repeats a check:

1. rate limit on messages per connection (``rate_limited`` with ``retryAfter``);
2. identity: everything but ``ping``/``auth`` needs one (``auth_required``);
3. the operation the message needs (the ``HANDLERS`` table) against the
   connection's role in the session, resolved at join from the token's grants,
   the stored membership and the default access (``forbidden``/``not_joined``);
4. rate limits of that operation (events per connection and per user; presence
   updates over their limit are coalesced — the newest is kept and sent when the
   bucket allows — never failed).

Sends to a session mailbox wait for room up to ``mailbox_timeout`` — that wait
is the backpressure that slows a flooding client's reads — then ``overloaded``.
Other modules add message types with :meth:`Dispatcher.register`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import attrs
import trio

from actors.messages import JoinSession, LeaveSession, PublishEvent, SetPresence
from runtime.access import RateGate, SessionAccess
from runtime.mailbox import MailboxClosed
from runtime.observability.logs import bind_user
from runtime.protocol import messages as wire
from runtime.protocol.codec import DecodeError, decode
from runtime.protocol.errors import CloseCode, ErrorCode
from runtime.protocol.messages import (
    Auth,
    AuthRefresh,
    ClientMessage,
    Join,
    Leave,
    Ping,
    PresenceUpdate,
    Publish,
)
from runtime.registry import SpawnFailed
from runtime.security.permissions import Op, Role, allowed
from runtime.security.ratelimit import Kind
from runtime.security.tokens import AuthError, TokenVerifier
from runtime.security.validation import Limits
from runtime.transport.connection import ClientConnection

if TYPE_CHECKING:
    from runtime.node import TandemNode

logger = logging.getLogger(__name__)

_AUTH_CLOSE = {
    "auth_required": CloseCode.AUTH_REQUIRED,
    "token_invalid": CloseCode.TOKEN_INVALID,
    "token_expired": CloseCode.TOKEN_EXPIRED,
}

Handler = Callable[[ClientConnection, Any], Awaitable[None]]


@attrs.frozen
class Route:
    handler: Handler
    op: Op | None  # the operation on ``message.session_id`` it needs; None: not session-bound
    needs_identity: bool = True
    rate: tuple[Kind, ...] = ()  # extra buckets charged per message (per connection/user)


class Dispatcher:
    def __init__(
        self,
        node: TandemNode,
        *,
        verifier: TokenVerifier,
        limits: Limits,
        access: SessionAccess,
        rates: RateGate,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._node = node
        self._verifier = verifier
        self._limits = limits
        self._access = access
        self._rates = rates
        self._wall_clock = wall_clock
        self.routes: dict[type, Route] = {
            Ping: Route(self._ping, None, needs_identity=False),
            Auth: Route(self._auth, None, needs_identity=False),
            AuthRefresh: Route(self._refresh, None),
            Join: Route(self._join, Op.JOIN),
            Leave: Route(self._leave, None),
            Publish: Route(
                self._publish, Op.PUBLISH, rate=(Kind.EVENT_PER_CONNECTION, Kind.EVENT_PER_USER)
            ),
            PresenceUpdate: Route(self._presence, Op.PRESENCE),
        }
        # Connections with a presence update held back by its rate limit.
        self._held_presence: dict[str, tuple[ClientConnection, dict[str, Any]]] = {}

    def register(self, message_type: type, route: Route) -> None:
        """Add a client message type (its codec entry lives in runtime.protocol.messages)."""
        self.routes[message_type] = route

    async def on_text(self, conn: ClientConnection, payload: str) -> None:
        for message in decode(payload, self._limits):
            if conn.closed:
                return
            if isinstance(message, DecodeError):
                conn.send(wire.error(message.code, message.message, message.ref, path=message.path))
                continue
            await self.handle(conn, message)

    async def handle(self, conn: ClientConnection, message: ClientMessage) -> None:
        route = self.routes[type(message)]
        ref = message.ref
        wait = self._rates.retry_after(Kind.MESSAGE_PER_CONNECTION, conn.id)
        if wait:
            conn.send(
                wire.error(ErrorCode.RATE_LIMITED, "too many messages", ref, retry_after=wait)
            )
            return
        if route.needs_identity and conn.identity is None:
            conn.send(wire.error(ErrorCode.AUTH_REQUIRED, "send `auth` with a token first", ref))
            return
        if route.op is not None and route.op is not Op.JOIN:
            session_id: str = message.session_id  # type: ignore[union-attr]
            if not self._permitted(conn, session_id, route.op, ref):
                return
        for kind in route.rate:
            assert conn.identity is not None
            key = conn.id if kind is Kind.EVENT_PER_CONNECTION else conn.identity.user_id
            wait = await self._rates.check(kind, key)
            if wait:
                conn.send(
                    wire.error(
                        ErrorCode.RATE_LIMITED, f"rate limit: {kind.value}", ref, retry_after=wait
                    )
                )
                return
        await route.handler(conn, message)

    def _permitted(self, conn: ClientConnection, session_id: str, op: Op, ref: wire.Ref) -> bool:
        role = conn.roles.get(session_id) if session_id in conn.joined else None
        if role is None:
            conn.send(
                wire.error(
                    ErrorCode.NOT_JOINED, "join the session first", ref, session_id=session_id
                )
            )
            return False
        if not allowed(role, op):
            conn.send(
                wire.error(
                    ErrorCode.FORBIDDEN,
                    f"role {role.value!r} may not {op.value}",
                    ref,
                    session_id=session_id,
                )
            )
            return False
        return True

    # -- identity -----------------------------------------------------------------

    async def _ping(self, conn: ClientConnection, message: Ping) -> None:
        conn.send(wire.pong(message.ref))

    async def _auth(self, conn: ClientConnection, message: Auth) -> None:
        if conn.joined:
            conn.send(
                wire.error(
                    ErrorCode.ALREADY_AUTHENTICATED,
                    "leave every session before changing identity",
                    message.ref,
                )
            )
            return
        try:
            identity = self._verifier.verify(message.token, now=self._wall_clock())
        except AuthError as exc:
            await self._node.audit(
                "auth.failed",
                conn.address,
                "connection",
                {"code": exc.code, "connection": conn.id},
            )
            conn.send(wire.error(exc.code, exc.message, message.ref))
            if conn.identity is None:
                conn.close(_AUTH_CLOSE[exc.code], exc.message)
            return
        conn.identity = identity
        bind_user(identity.user_id)
        conn.send(wire.authenticated(identity.user_id, identity.name, message.ref))
        self._node.collab.connected(conn)  # unread notifications after `auth:ok`

    async def _refresh(self, conn: ClientConnection, message: AuthRefresh) -> None:
        assert conn.identity is not None
        try:
            identity = self._verifier.verify(message.token, now=self._wall_clock())
        except AuthError as exc:
            conn.send(wire.error(exc.code, exc.message, message.ref))
            return
        if identity.user_id != conn.identity.user_id:
            conn.send(
                wire.error(
                    ErrorCode.FORBIDDEN, "a refreshed token must be for the same user", message.ref
                )
            )
            return
        conn.identity = identity
        conn.send(wire.authenticated(identity.user_id, identity.name, message.ref))
        for session_id in list(conn.joined):  # grants may have changed with the token
            await self.revalidate(conn, session_id)

    # -- sessions -----------------------------------------------------------------

    async def _join(self, conn: ClientConnection, message: Join) -> None:
        assert conn.identity is not None
        session_id = message.session_id
        if session_id not in conn.joined and len(conn.joined) >= conn.limits.max_sessions:
            conn.send(
                wire.error(
                    ErrorCode.TOO_MANY_SESSIONS,
                    f"at most {conn.limits.max_sessions} sessions per connection",
                    message.ref,
                    session_id=session_id,
                )
            )
            return
        if await self._access.is_deleted(session_id):
            conn.send(
                wire.error(
                    ErrorCode.NOT_FOUND,
                    "this session was deleted",
                    message.ref,
                    session_id=session_id,
                )
            )
            return
        role = await self._access.role(conn.identity, session_id)
        if not allowed(role, Op.JOIN) or (
            message.since is not None and not allowed(role, Op.READ_HISTORY)
        ):
            conn.send(
                wire.error(
                    ErrorCode.FORBIDDEN,
                    f"role {role.value!r} may not join",
                    message.ref,
                    session_id=session_id,
                )
            )
            return
        conn.roles[session_id] = role
        # Counted as joined before the join is queued, not after: the session actor may
        # handle it — and, stopping, refuse it (`join_failed` discards it again) — before
        # this task runs on. Publishes sent behind the join are let through to the actor,
        # which checks membership itself.
        rejoin = session_id in conn.joined
        conn.joined.add(session_id)
        if not await self._to_session(
            conn, session_id, JoinSession(conn, message.since, message.ref), message.ref
        ):
            if not rejoin:
                conn.joined.discard(session_id)  # never queued: not joined

    async def _leave(self, conn: ClientConnection, message: Leave) -> None:
        if message.session_id not in conn.joined:
            conn.send(
                wire.error(
                    ErrorCode.NOT_JOINED,
                    "not a member of this session",
                    message.ref,
                    session_id=message.session_id,
                )
            )
            return
        conn.joined.discard(message.session_id)
        conn.roles.pop(message.session_id, None)
        await self._to_session(
            conn, message.session_id, LeaveSession(conn, message.ref), message.ref
        )

    async def _publish(self, conn: ClientConnection, message: Publish) -> None:
        if message.sensitive and not self._node.settings.encryption_keys:
            # Refuse rather than store a payload marked sensitive in plaintext.
            conn.send(
                wire.error(
                    ErrorCode.INVALID_MESSAGE,
                    "no encryption keys configured",
                    message.ref,
                    path="$.sensitive",
                )
            )
            return
        await self._to_session(
            conn,
            message.session_id,
            PublishEvent(
                conn,
                message.name,
                message.data,
                message.durable,
                message.ref,
                sensitive=message.sensitive,
            ),
            message.ref,
        )

    async def _presence(self, conn: ClientConnection, message: PresenceUpdate) -> None:
        if self._rates.retry_after(Kind.PRESENCE_PER_CONNECTION, conn.id):
            # Over the limit: keep only the newest; the flusher sends it when allowed.
            self._held_presence[f"{conn.id}\x00{message.session_id}"] = (conn, message.state)
            return
        self._post_presence(conn, message.session_id, message.state)

    def _post_presence(self, conn: ClientConnection, session_id: str, state: Any) -> None:
        update = SetPresence(state, at=trio.current_time())
        router = self._node.presence_router
        if router is not None and router(session_id, conn, update):
            return  # cluster mode: the session's owner is another node
        # Never spawns a presence actor: with none live, the update has nobody to apply
        # to and is dropped, as a fresh actor would drop it (TandemNode.post_presence_update).
        self._node.post_presence_update(session_id, conn.id, update)

    def flush_held_presence(self) -> None:
        """Send held-back presence updates whose bucket has room again (called periodically)."""
        for key, (conn, state) in list(self._held_presence.items()):
            session_id = key.split("\x00", 1)[1]
            if conn.closed or session_id not in conn.joined:
                del self._held_presence[key]
            elif not self._rates.retry_after(Kind.PRESENCE_PER_CONNECTION, conn.id):
                del self._held_presence[key]
                self._post_presence(conn, session_id, state)

    async def revalidate(self, conn: ClientConnection, session_id: str) -> None:
        """Re-resolve a joined connection's role (membership or token changed).

        Losing ``join`` drops the connection from the session at once
        (``session:left`` with reason ``revoked``); a lower role takes effect for
        the very next message (read-only when it may no longer publish).
        """
        if conn.identity is None or session_id not in conn.joined:
            return
        role = await self._access.role(conn.identity, session_id)
        conn.roles[session_id] = role
        if not allowed(role, Op.JOIN):
            conn.joined.discard(session_id)
            conn.roles.pop(session_id, None)
            conn.send({"type": "session:left", "sessionId": session_id, "reason": "revoked"})
            try:
                await self._node.send_to_session(session_id, LeaveSession(conn, None, reply=False))
            except (MailboxClosed, SpawnFailed):
                pass

    async def _to_session(
        self, conn: ClientConnection, session_id: str, message: object, ref: wire.Ref
    ) -> bool:
        with trio.move_on_after(self._node.settings.mailbox_timeout):
            try:
                await self._node.send_to_session(session_id, message)
                return True
            except MailboxClosed:
                pass
            except SpawnFailed as exc:
                logger.warning("session %s could not start: %s", session_id, exc)
                conn.send(
                    wire.error(
                        ErrorCode.INTERNAL,
                        "the session could not start; retry",
                        ref,
                        session_id=session_id,
                    )
                )
                return False
        conn.send(
            wire.error(
                ErrorCode.OVERLOADED, "the session is busy; retry", ref, session_id=session_id
            )
        )
        return False

    async def disconnected(self, conn: ClientConnection) -> None:
        """The connection is gone: leave every session so presence drops it at once."""
        self._rates.forget(Kind.MESSAGE_PER_CONNECTION, conn.id)
        self._rates.forget(Kind.EVENT_PER_CONNECTION, conn.id)
        self._rates.forget(Kind.PRESENCE_PER_CONNECTION, conn.id)
        for session_id in list(conn.joined):
            conn.joined.discard(session_id)
            try:
                await self._node.send_to_session(session_id, LeaveSession(conn, None, reply=False))
            except (MailboxClosed, SpawnFailed):
                pass  # the session stopped too; nothing to leave


__all__ = ["Dispatcher", "Role", "Route"]
