"""Dispatcher: turns decoded client messages into actor messages.

This is the one place a client request is checked before it reaches an
actor (identity now; permissions and rate limits from ``runtime.security``
as they land), so handlers never repeat checks. Sends to a session mailbox
wait for room up to ``mailbox_timeout`` — that wait is the backpressure that
slows a flooding client's reads — and then answer ``overloaded``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from actors.messages import JoinSession, LeaveSession, PublishEvent, SetPresence
from runtime.mailbox import MailboxClosed
from runtime.observability.logs import bind_user
from runtime.protocol import messages as wire
from runtime.protocol.codec import DecodeError, decode
from runtime.protocol.errors import CloseCode, ErrorCode
from runtime.protocol.messages import (
    Auth,
    ClientMessage,
    Join,
    Leave,
    Ping,
    PresenceUpdate,
    Publish,
)
from runtime.registry import SpawnFailed
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


class Dispatcher:
    def __init__(
        self,
        node: TandemNode,
        *,
        verifier: TokenVerifier,
        limits: Limits,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._node = node
        self._verifier = verifier
        self._limits = limits
        self._wall_clock = wall_clock

    async def on_text(self, conn: ClientConnection, payload: str) -> None:
        for message in decode(payload, self._limits):
            if conn.closed:
                return
            if isinstance(message, DecodeError):
                conn.send(wire.error(message.code, message.message, message.ref, path=message.path))
                continue
            await self.handle(conn, message)

    async def handle(self, conn: ClientConnection, message: ClientMessage) -> None:
        if isinstance(message, Ping):
            conn.send(wire.pong(message.ref))
        elif isinstance(message, Auth):
            self._auth(conn, message)
        elif conn.identity is None:
            conn.send(
                wire.error(ErrorCode.AUTH_REQUIRED, "send `auth` with a token first", message.ref)
            )
        elif isinstance(message, Publish):
            await self._publish(conn, message)
        elif isinstance(message, PresenceUpdate):
            await self._presence(conn, message)
        elif isinstance(message, Join):
            await self._join(conn, message)
        elif isinstance(message, Leave):
            await self._leave(conn, message)

    def _auth(self, conn: ClientConnection, message: Auth) -> None:
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
            conn.send(wire.error(exc.code, exc.message, message.ref))
            if conn.identity is None:
                conn.close(_AUTH_CLOSE[exc.code], exc.message)
            return
        conn.identity = identity
        bind_user(identity.user_id)
        conn.send(wire.authenticated(identity.user_id, identity.name, message.ref))

    async def _join(self, conn: ClientConnection, message: Join) -> None:
        if message.session_id not in conn.joined and len(conn.joined) >= conn.limits.max_sessions:
            conn.send(
                wire.error(
                    ErrorCode.TOO_MANY_SESSIONS,
                    f"at most {conn.limits.max_sessions} sessions per connection",
                    message.ref,
                    session_id=message.session_id,
                )
            )
            return
        if await self._to_session(
            conn, message.session_id, JoinSession(conn, message.since, message.ref), message.ref
        ):
            conn.joined.add(message.session_id)

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
        await self._to_session(
            conn, message.session_id, LeaveSession(conn, message.ref), message.ref
        )

    async def _publish(self, conn: ClientConnection, message: Publish) -> None:
        if message.session_id not in conn.joined:
            conn.send(
                wire.error(
                    ErrorCode.NOT_JOINED,
                    "join the session first",
                    message.ref,
                    session_id=message.session_id,
                )
            )
            return
        await self._to_session(
            conn,
            message.session_id,
            PublishEvent(conn, message.name, message.data, message.durable, message.ref),
            message.ref,
        )

    async def _presence(self, conn: ClientConnection, message: PresenceUpdate) -> None:
        if message.session_id not in conn.joined:
            conn.send(
                wire.error(
                    ErrorCode.NOT_JOINED,
                    "join the session first",
                    message.ref,
                    session_id=message.session_id,
                )
            )
            return
        try:
            mailbox = await self._node.presence_mailbox(message.session_id)
            mailbox.post(conn.id, SetPresence(message.state, at=trio.current_time()))
        except (MailboxClosed, SpawnFailed):
            conn.send(
                wire.error(ErrorCode.OVERLOADED, "presence is restarting; retry", message.ref)
            )

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
        for session_id in list(conn.joined):
            conn.joined.discard(session_id)
            try:
                await self._node.send_to_session(session_id, LeaveSession(conn, None, reply=False))
            except (MailboxClosed, SpawnFailed):
                pass  # the session stopped too; nothing to leave
