"""The socket gateway: listeners, the connection table, handshakes and liveness.

Everything between a TCP socket (or an in-memory wire) and the dispatcher:
accept loops that hand each socket to :meth:`SocketGateway.serve_wire` in the
node's nursery, the one-port split between HTTP and WebSocket, the checks
before an upgrade (Origin, connects per IP), identity from ``?token=``, and
the single heartbeat task that pings quiet clients and drops silent ones.
"""

from __future__ import annotations

import itertools
import logging
import secrets
import socket
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

import trio

from runtime import metrics
from runtime.http import HttpRequest, HttpResponse, HttpRouter, error_response
from runtime.observability.logs import bind_connection
from runtime.protocol import messages as wire_messages
from runtime.protocol.errors import CloseCode
from runtime.security.proxies import TrustedProxies, forwarded_for, peer_host
from runtime.security.ratelimit import Kind
from runtime.security.tokens import AuthError, Identity, guest_identity
from runtime.transport.connection import ClientConnection, ConnectionLimits
from runtime.transport.http11 import Upgrade, reject_upgrade, serve_http
from runtime.transport.wire import SocketWire, Wire

if TYPE_CHECKING:
    from runtime.node import TandemNode

logger = logging.getLogger(__name__)


#: Seconds between two slices of the heartbeat's liveness checks (see run_heartbeat).
HEARTBEAT_TICK = 0.1


class SocketGateway:
    """Owns the node's client connections (one reader task each, in the node's nursery)."""

    def __init__(self, node: TandemNode) -> None:
        settings = node.settings
        self._node = node
        self.connections: dict[str, ClientConnection] = {}
        self.connections_opened = 0
        self._ids = itertools.count(1)
        self._emptied = trio.Event()
        self._conn_limits = ConnectionLimits(
            max_message_bytes=settings.max_message_bytes,
            outbound_bytes=settings.outbound_limit,
            max_sessions=settings.max_sessions_per_connection,
            compression=settings.compression,
        )
        self._allowed_origins = {
            o.strip() for o in settings.allowed_origins.split(",") if o.strip()
        }
        self._proxies = TrustedProxies.parse(settings.trusted_proxies)

    async def close_all(self, code: int, reason: str) -> None:
        """Close every connection and wait until all are gone (bound it at the call site)."""
        for conn in list(self.connections.values()):
            conn.close(code, reason)
        while self.connections:
            self._emptied = trio.Event()
            await self._emptied.wait()

    async def run_heartbeat(self) -> None:
        """Ping quiet clients; drop those silent for two ping intervals.

        One task for all connections, not one per connection. Every connection
        is checked once per ``presence_timeout / 6``, so a client that vanished
        without a close frame is dropped at most 5/6 of ``presence_timeout``
        after its last sign of life, and its presence leaves with it.

        The checks are spread over that period in slices of about
        :data:`HEARTBEAT_TICK` seconds, not done in one sweep: connections opened
        together would otherwise be pinged together forever after, and a burst of
        a thousand pings out and a thousand pongs back held up the events of a
        1,000-member session by ~12 ms at p99 every few seconds
        (docs/performance.md). A connection keeps its place in the order it was
        opened in, and closed ones only move the rest forward, so none waits more
        than one period between two checks.
        """
        period = self._node.settings.presence_timeout / 6
        slices = max(1, round(period / HEARTBEAT_TICK))
        while True:
            conns = list(self.connections.values())
            size = -(-len(conns) // slices)  # ceil: the last slice may be short
            for k in range(slices):
                await trio.sleep(period / slices)
                self._check_liveness(conns[k * size : (k + 1) * size])

    def _check_liveness(self, conns: list[ClientConnection]) -> None:
        settings = self._node.settings
        timeout = settings.presence_timeout
        now = trio.current_time()
        wall = self._node.wall_clock()
        for conn in conns:
            if conn.closed:
                continue
            idle = now - conn.last_seen
            expires_at = conn.identity.expires_at if conn.identity else None
            if conn.identity is None and now - conn.opened_at >= settings.auth_timeout:
                conn.send(wire_messages.error("auth_required", "no `auth` in time"))
                conn.close(CloseCode.AUTH_TIMEOUT, "no auth in time")
            elif idle >= timeout * 2 / 3:
                conn.abort(CloseCode.HEARTBEAT_TIMEOUT, "no sign of life")
            elif expires_at is not None and wall >= expires_at + self._node.verifier.leeway_s:
                # the same leeway a token gets when presented, so none is accepted then cut
                conn.send(
                    wire_messages.error("token_expired", "refresh with auth:refresh before expiry")
                )
                conn.close(CloseCode.TOKEN_EXPIRED, "token expired")
            elif idle >= timeout / 3:
                conn.ping()

    async def serve_tcp(
        self,
        host: str,
        port: int,
        router: HttpRouter,
        *,
        reuse_port: bool = False,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            # Several processes listen on one port; the kernel spreads connections
            # among them (`tandem serve --workers`, runtime/workers.py).
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        listener.bind((host, port))
        # The kernel caps this at net.core.somaxconn: a ramp of thousands of connects
        # while the loop is busy must queue, not be refused.
        listener.listen(4096)
        listener.setblocking(False)
        try:
            task_status.started(listener.getsockname()[1])
            assert self._node._nursery is not None
            while True:
                await trio.lowlevel.wait_readable(listener)
                try:
                    sock, addr = listener.accept()
                except BlockingIOError:
                    continue
                except OSError as exc:  # EMFILE and friends: back off, keep serving
                    logger.warning("accept failed: %s", exc)
                    await trio.sleep(0.1)
                    continue
                wire = SocketWire(sock, f"{addr[0]}:{addr[1]}")
                self._node._nursery.start_soon(self.serve_wire, wire, router)
        finally:
            trio.lowlevel.notify_closing(listener)
            listener.close()

    def attach(self, wire: Wire) -> None:
        """Serve an already-connected wire (in-memory clients of the test kit)."""
        assert self._node._nursery is not None, "node is not running"
        self._node._nursery.start_soon(self.serve_wire, wire)

    async def serve_wire(self, wire: Wire, router: HttpRouter | None = None) -> None:
        """Serve one accepted byte stream: HTTP requests, or a WebSocket after an upgrade."""
        try:
            upgrade = await serve_http(
                wire,
                (router or self._node.http).dispatch,
                idle_timeout=self._node.settings.presence_timeout,
                client_address=self._client_address,
            )
            if upgrade is None or not self._node.accepting:
                return
            address = self._client_address(wire.peer, upgrade.headers)
            refusal = await self._refuse_upgrade(upgrade, address)
            if refusal is not None:
                await reject_upgrade(wire, refusal)
                return
            conn, leftover, opened, closed = self._prepare_websocket(wire, upgrade, address)
            del upgrade  # the request's headers are not kept for the connection's lifetime
            await conn.run(leftover, on_open=opened, on_close=closed)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            wire.close()

    def _client_address(self, peer: str, headers: Sequence[tuple[bytes, bytes]]) -> str:
        """Who sent a request: the socket peer, or what a trusted proxy says it saw."""
        return self._proxies.client_address(peer_host(peer), forwarded_for(headers))

    async def _refuse_upgrade(self, upgrade: Upgrade, address: str) -> HttpResponse | None:
        """Origin check for browsers and the connect rate per IP, before the handshake."""
        origin = next(
            (v.decode("latin-1") for k, v in upgrade.headers if k.lower() == b"origin"), None
        )
        if (
            origin is not None
            and "*" not in self._allowed_origins
            and origin not in self._allowed_origins
        ):
            host = next(
                (v.decode("latin-1") for k, v in upgrade.headers if k.lower() == b"host"), ""
            )
            if origin.split("://", 1)[-1] != host:  # same-origin pages are always welcome
                return error_response(403, "forbidden", f"origin {origin!r} is not allowed")
        wait = await self._node.rates.check(Kind.CONNECT_PER_IP, address)
        if wait:
            return HttpResponse(
                429,
                b'{"error":{"code":"rate_limited"}}',
                headers=(("retry-after", str(max(1, round(wait)))),),
            )
        return None

    def _prepare_websocket(
        self, wire: Wire, upgrade: Upgrade, address: str
    ) -> tuple[
        ClientConnection,
        bytes,
        Callable[[ClientConnection], None],
        Callable[[ClientConnection], Awaitable[None]],
    ]:
        """The connection for an accepted upgrade, with its open and close callbacks."""
        conn_id = f"{self._node.node_id}-{next(self._ids)}"
        identity, problem = self._identity_from_target(upgrade.target, conn_id)
        bind_connection(conn_id, identity.user_id if identity else None)
        conn = ClientConnection(
            conn_id,
            wire,
            identity=identity,
            limits=self._conn_limits,
            on_text=self._node.dispatcher.on_text,
            address=address,
        )
        conn.accept_upgrade(upgrade.headers, upgrade.target)

        def opened(conn: ClientConnection) -> None:
            self.connections[conn.id] = conn
            self.connections_opened += 1
            metrics.CONNECTIONS_OPENED.inc()
            if problem is not None:
                code, message = problem
                conn.send(wire_messages.error(code, message))
                conn.close(
                    CloseCode.TOKEN_EXPIRED
                    if code == "token_expired"
                    else CloseCode.TOKEN_INVALID
                    if code == "token_invalid"
                    else CloseCode.AUTH_REQUIRED,
                    message,
                )
            elif identity is not None:
                conn.send(
                    wire_messages.welcome(
                        conn.id,
                        identity.user_id,
                        identity.name,
                        identity.guest,
                        self._node.settings.presence_timeout / 3,
                    )
                )
                self._node.collab.connected(conn)  # unread notifications after `welcome`

        async def closed(conn: ClientConnection) -> None:
            self.connections.pop(conn.id, None)
            metrics.connection_closed(conn.close_code)
            logger.debug("connection closed (code %s)", conn.close_code)
            if not self.connections:
                self._emptied.set()
            await self._node.dispatcher.disconnected(conn)

        return conn, upgrade.leftover, opened, closed

    def _identity_from_target(
        self, target: str, conn_id: str
    ) -> tuple[Identity | None, tuple[str, str] | None]:
        token = HttpRequest("GET", target, {}).query.get("token")
        if token:
            try:
                return self._node.verifier.verify(token, now=self._node.wall_clock()), None
            except AuthError as exc:
                return None, (exc.code, exc.message)
        if self._node.settings.is_production:
            return None, None  # must send `auth` first
        return guest_identity(conn_id.rsplit("-", 1)[-1] + secrets.token_hex(2)), None
