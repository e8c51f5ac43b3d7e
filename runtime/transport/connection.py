"""One client WebSocket connection: framing, outbound queue, liveness, closing.

The reader task is the connection: it feeds socket bytes to the sans-IO frame
decoder (``runtime.protocol.websocket``; wsproto does only the HTTP upgrade),
hands whole text messages to the dispatcher, and answers control frames.
All writes go through one :class:`~runtime.transport.outbox.Outbox`. Actors
see this object only through the :class:`actors.messages.Peer` methods,
which never wait.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio
from wsproto import WSConnection
from wsproto.connection import ConnectionType
from wsproto.events import AcceptConnection, Request

from runtime import metrics
from runtime.protocol import deflate
from runtime.protocol import messages as wire_messages
from runtime.protocol.codec import encode
from runtime.protocol.errors import CloseCode, ErrorCode
from runtime.protocol.frames import SharedFrame, deflated_text_frame, text_frame
from runtime.protocol.websocket import (
    BinaryMessage,
    Close,
    Failure,
    Ping,
    ServerWebSocket,
    State,
    ping_frame,
    pong_frame,
)
from runtime.security.permissions import Role
from runtime.security.tokens import Identity
from runtime.transport.outbox import Outbox
from runtime.transport.wire import Wire

logger = logging.getLogger(__name__)

RECEIVE_CHUNK = 65536

#: Bound once: counted on every message to every member.
_MESSAGES_OUT = metrics.MESSAGES_OUT
_MESSAGES_IN = metrics.MESSAGES_IN

#: The server's keepalive ping; the same bytes for every connection.
_PING = ping_frame(b"tandem")


@attrs.frozen
class ConnectionLimits:
    max_message_bytes: int = 65536  # bigger messages close the connection with 1009
    outbound_bytes: int = 4 * 1024 * 1024  # past this queued, close with 4000 (slow consumer)
    close_timeout: float = 2.0  # wait this long for the client's close frame
    max_sessions: int = 100  # sessions one connection may join
    compression: bool = True  # accept permessage-deflate from clients that offer it


class ClientConnection:
    """A WebSocket client. Implements ``actors.messages.Peer``."""

    # One per client: slots keep an idle connection small (docs/performance.md).
    __slots__ = (
        "_handshake",
        "_on_text",
        "_outbox",
        "_reader_scope",
        "_ws",
        "address",
        "close_code",
        "closed",
        "deflate",
        "id",
        "identity",
        "joined",
        "last_seen",
        "limits",
        "messages_in",
        "opened_at",
        "roles",
        "wire",
    )

    def __init__(
        self,
        conn_id: str,
        wire: Wire,
        *,
        identity: Identity | None,
        limits: ConnectionLimits,
        on_text: Callable[[ClientConnection, str], Awaitable[None]],
        address: str | None = None,
    ) -> None:
        self.id = conn_id
        self.wire = wire
        # The client's address: the socket peer, or what a trusted proxy says it saw.
        self.address = address if address is not None else wire.peer
        self.identity = identity
        self.limits = limits
        self._on_text = on_text
        self.joined: set[str] = set()
        self.roles: dict[str, Role] = {}  # per joined session, decided by the dispatcher
        self.closed = False
        self.close_code: int | None = None
        self.last_seen = trio.current_time()
        self.opened_at = self.last_seen
        # wsproto answers the HTTP upgrade; dropped once the 101 response is written.
        self._handshake: WSConnection | None = WSConnection(ConnectionType.SERVER)
        self.deflate = False  # permessage-deflate negotiated (runtime.protocol.deflate)
        # Frames after the upgrade: our own decoder, lighter and faster than wsproto's.
        self._ws = ServerWebSocket(limits.max_message_bytes)
        self._outbox: Outbox | None = None
        self._reader_scope = trio.CancelScope()
        self.messages_in = 0

    # -- Peer ---------------------------------------------------------------------

    @property
    def user_id(self) -> str:
        return self.identity.user_id if self.identity else ""

    @property
    def name(self) -> str:
        return self.identity.name if self.identity else ""

    def send_shared(self, frame: SharedFrame) -> None:
        # Called once per member for every fan-out frame: no properties, and the
        # counter's value is added to without a call (the counters' calls were 2.5-5 % of
        # the event loop at 1000 x 150).
        outbox = self._outbox
        if outbox is not None and not self.closed:
            _MESSAGES_OUT.value += 1
            outbox.write(frame.deflated() if self.deflate else frame.websocket)

    def send(self, message: dict[str, Any]) -> None:
        if self._outbox is not None and not self.closed:
            metrics.MESSAGES_OUT.inc()
            payload = encode(message)
            self._outbox.write(
                deflated_text_frame(payload) if self.deflate else text_frame(payload)
            )

    def session_lost(self, session_id: str, reason: str) -> None:
        self.joined.discard(session_id)
        self.send({"type": "session:left", "sessionId": session_id, "reason": reason})

    def join_failed(self, session_id: str, ref: wire_messages.Ref) -> None:
        self.joined.discard(session_id)
        self.send(
            wire_messages.error(
                ErrorCode.INTERNAL,
                "the session restarted before the join was handled; retry",
                ref,
                session_id=session_id,
            )
        )

    # -- lifecycle ----------------------------------------------------------------

    def accept_upgrade(self, headers: list[tuple[bytes, bytes]], target: str) -> None:
        """Take the HTTP upgrade request; the caller may drop the headers afterwards."""
        assert self._handshake is not None
        self._handshake.initiate_upgrade_connection(headers, target)
        for event in self._handshake.events():
            assert isinstance(event, Request)
            if self.limits.compression:
                offers = [str(e) for e in event.extensions]
                self.deflate = deflate.negotiate(offers) is not None
        if self.deflate:
            self._ws = ServerWebSocket(self.limits.max_message_bytes, deflate=True)

    async def run(
        self,
        leftover: bytes,
        *,
        on_open: Callable[[ClientConnection], None],
        on_close: Callable[[ClientConnection], Awaitable[None]],
    ) -> None:
        """Accept the upgrade (see :meth:`accept_upgrade`) and serve until the connection ends.

        ``on_close`` runs once at the end, shielded with a bound, so the
        connection's sessions always hear that it left — also when the server
        is cancelling everything.
        """
        handshake = self._handshake
        assert handshake is not None
        async with trio.open_nursery() as nursery:
            self._outbox = Outbox(
                self.wire,
                nursery,
                limit=self.limits.outbound_bytes,
                on_overflow=self._slow_consumer,
                on_broken=self._broken,
            )
            # The one extension Tandem may accept is permessage-deflate (RSV1), and it
            # always answers it the same way (deflate.RESPONSE).
            accept = AcceptConnection(
                extra_headers=[(b"sec-websocket-extensions", deflate.RESPONSE.encode())]
                if self.deflate
                else []
            )
            self._outbox.write(handshake.send(accept))
            # Keep only the frame state: the finished HTTP handshake (an h11 connection,
            # the request and its headers, wsproto's Connection) is ~3 KB per connection.
            self._handshake = None
            del handshake  # this frame lives as long as the connection: let it go
            on_open(self)
            try:
                with self._reader_scope:
                    try:
                        if leftover:
                            await self._receive(leftover)
                        while not self.closed:
                            data = await self.wire.receive_some(RECEIVE_CHUNK)
                            if not data:
                                break
                            await self._receive(data)
                    except* (trio.BrokenResourceError, trio.ClosedResourceError):
                        pass  # the socket went away under us: the same as end of stream
                    except* Exception as group:
                        # The connection is this task's only child: a bug while serving one
                        # client ends that client (1011), never the node.
                        logger.error("connection %s failed", self.id, exc_info=group)
                        self.close(CloseCode.INTERNAL_ERROR, "internal error")
            finally:
                self.closed = True
                with trio.move_on_after(self.limits.close_timeout, shield=True):
                    await on_close(self)
                    await self._outbox.wait_drained()
                self.wire.close()
                nursery.cancel_scope.cancel()

    async def _receive(self, data: bytes) -> None:
        self.last_seen = trio.current_time()
        metrics.BYTES_IN.inc(len(data))
        ws = self._ws
        for event in ws.receive_data(data):
            if isinstance(event, str):  # a whole text message, within max_message_bytes
                self.messages_in += 1
                _MESSAGES_IN.inc()
                await self._on_text(self, event)
            elif isinstance(event, Ping):
                if ws.state is State.OPEN:
                    self._write_control(pong_frame(event.payload))
            elif isinstance(event, BinaryMessage):
                self.send(
                    wire_messages.error(
                        ErrorCode.UNSUPPORTED_FRAME,
                        "binary frames are not supported; send JSON text",
                    )
                )
            elif isinstance(event, Close):
                self.close_code = event.code
                if ws.state is State.REMOTE_CLOSING:
                    # Answer the client's close with its own code (and reason).
                    self._write_control(ws.send_close(event.code, event.reason))
                self.closed = True
                return
            elif isinstance(event, Failure):
                # Broken framing (1002), invalid UTF-8 (1007), or a message over
                # max_message_bytes (1009, refused on its header): say so and end.
                self.close(event.code, event.reason)
                return
            # A Pong needs nothing: any bytes in count as a sign of life (last_seen).
            if self.closed:
                return

    # -- closing ------------------------------------------------------------------

    def close(self, code: int, reason: str = "") -> None:
        """Send a close frame, stop reading new messages, and end within ``close_timeout``."""
        if self._ws.state is State.OPEN and self._outbox is not None:
            self._outbox.write_final(self._ws.send_close(code, reason[:120]))
        if self.close_code is None:
            self.close_code = code
        self.closed = True
        self._reader_scope.deadline = min(
            self._reader_scope.deadline, trio.current_time() + self.limits.close_timeout
        )

    def abort(self, code: int, reason: str) -> None:
        """End now: send a close frame if possible, but wait for nothing."""
        self.close(code, reason)
        self._reader_scope.cancel()

    def ping(self) -> None:
        if self._ws.state is State.OPEN:
            self._write_control(_PING)

    def _write_control(self, data: bytes) -> None:
        if self._outbox is not None:
            self._outbox.write(data)

    def _slow_consumer(self) -> None:
        logger.info(
            "connection %s: outbound queue over %s bytes; closing",
            self.id,
            self.limits.outbound_bytes,
        )
        self.close(CloseCode.SLOW_CONSUMER, "slow consumer: reconnect and resume")

    def _broken(self) -> None:
        self.closed = True
        self._reader_scope.cancel()

    @property
    def outbound_queued(self) -> int:
        return self._outbox.queued_bytes if self._outbox else 0

    def status(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "userId": self.user_id,
            "peer": self.address,
            "sessions": len(self.joined),
            "queuedBytes": self.outbound_queued,
        }
