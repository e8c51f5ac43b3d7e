"""TandemNode: one server process — its supervision tree, registry, connections and ports.

The actor tree::

    root (Supervisor)
    ├── sessions (Supervisor)   one SessionActor per live session   session:<id>
    └── presence (Supervisor)   one PresenceActor per live session  presence:<id>

Connections are not actors: each is a reader task owned by the socket
gateway (``runtime/gateway.py``), reaching actors through the dispatcher.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import attrs
import trio

from actors.messages import (
    FAIL_KEY,
    AppendEvent,
    GetParticipants,
    LeaveSession,
    PresenceMessage,
    PresenceRestarted,
    PresenceToSession,
    SessionMessage,
    SetPresence,
    merge_presence,
)
from actors.presence.actor import PresenceActor, PresenceConfig
from actors.session.actor import SessionActor, SessionConfig, answer_orphaned
from runtime.access import RateGate, SessionAccess
from runtime.actor import BatchPolicy, Fail
from runtime.api.audit import AuditApi
from runtime.api.openapi import OPENAPI
from runtime.api.sessions import SessionsApi
from runtime.audit_sink import AuditSink
from runtime.comments.feature import Collaboration, CollabStores
from runtime.config import Settings, parse_rate_limits, public_view
from runtime.dispatcher import Dispatcher
from runtime.gateway import SocketGateway
from runtime.gateways.database import DatabaseGateway
from runtime.gateways.sessions import CachedSessionRepository
from runtime.gateways.store import EventStore
from runtime.http import HttpRequest, HttpResponse, HttpRouter, json_response
from runtime.mailbox import CoalescingMailbox, Mailbox, MailboxClosed
from runtime.observability.observer import Observer
from runtime.protocol.errors import CloseCode
from runtime.registry import ActorKind, ActorRegistry, SpawnFailed
from runtime.security.tokens import TokenVerifier
from runtime.security.validation import Limits
from runtime.supervisor import RestartPolicy, Supervisor
from runtime.transport.connection import ClientConnection
from runtime.transport.wire import Wire
from runtime.web.routes import WebRoutes

logger = logging.getLogger(__name__)


class TandemNode:
    def __init__(
        self,
        settings: Settings,
        *,
        store: EventStore,
        sessions: CachedSessionRepository,
        verifier: TokenVerifier,
        database: DatabaseGateway | None = None,
        wall_clock: Callable[[], float] = time.time,
        collab: CollabStores | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.sessions = sessions
        self.database = database
        self.verifier = verifier
        self.wall_clock = wall_clock
        self.registry = ActorRegistry()
        self.root = Supervisor("root", RestartPolicy(max_restarts=3, period=30.0))
        self.sessions_supervisor = Supervisor(
            "sessions", RestartPolicy(max_restarts=5, period=10.0)
        )
        self.presence_supervisor = Supervisor(
            "presence", RestartPolicy(max_restarts=5, period=10.0)
        )
        self.http = HttpRouter()
        self.public_port: int | None = None
        self.internal_port: int | None = None
        self.accepting = False
        self.started_at = 0.0
        self.node_id = secrets.token_hex(4)
        self._nursery: trio.Nursery | None = None
        self._shutdown = trio.Event()
        self.limits = Limits(max_frame_bytes=settings.max_message_bytes)
        self.access = SessionAccess(sessions, settings.effective_default_access)
        self.rates = RateGate(parse_rate_limits(settings.rate_limits))
        self.dispatcher = Dispatcher(
            self,
            verifier=verifier,
            limits=self.limits,
            access=self.access,
            rates=self.rates,
            wall_clock=wall_clock,
        )
        self.audit_log: AuditSink | None = None
        # Extra /status sections by name (the Redis gateway's health in cluster mode).
        self.status_hooks: dict[str, Callable[[], Any]] = {}
        self.gateway = SocketGateway(self)
        sessions.on_member_change.append(self._member_changed)
        session_config = SessionConfig(
            memory_retention=settings.memory_retention,
            passivate_after=settings.passivate_after,
            batch=BatchPolicy(
                max_batch=settings.batch_max,
                delay=settings.batch_delay,
                max_delay=settings.batch_delay_max,
                widen_busy=settings.batch_widen_load,
                widen_rate=settings.batch_widen_rate,
            ),
            retention_events=settings.retention_events,
            retention_seconds=settings.retention_seconds,
        )
        presence_config = PresenceConfig(
            away_after=settings.away_after,
            flush_interval=settings.presence_interval,
            passivate_after=settings.passivate_after,
        )
        self.session_kind: ActorKind[Mailbox[SessionMessage]] = ActorKind(
            "session",
            lambda: Mailbox(settings.mailbox_size),
            lambda sid, mailbox: self.make_session_actor(sid, mailbox),
            self.sessions_supervisor,
            # Requests still queued when the `sessions` supervisor gives up get an answer:
            # joins are refused, appends and participants questions told "unavailable".
            on_orphaned=answer_orphaned,
        )
        self.presence_kind: ActorKind[CoalescingMailbox[str, PresenceMessage]] = ActorKind(
            "presence",
            lambda: CoalescingMailbox(merge_presence),
            lambda sid, mailbox: PresenceActor(
                sid,
                mailbox,
                publish=lambda change: self._presence_to_session(sid, change),
                config=presence_config,
            ),
            self.presence_supervisor,
            # The fresh actor knows nobody: the session re-tracks its members (a Sync).
            on_restart=lambda sid: self._presence_to_session(sid, PresenceRestarted()),
        )
        self.session_config = session_config
        # Cluster mode replaces this with an owner-or-relay actor (runtime/cluster/sessions.py).
        self.make_session_actor: Callable[[str, Mailbox[SessionMessage]], Any] = (
            self.local_session_actor
        )
        # Cluster mode: route a presence update elsewhere (True: handled).
        self.presence_router: Callable[[str, ClientConnection, Any], bool] | None = None
        # Cluster mode: who is present in a session live on another node only.
        self.remote_participants: Callable[[str], Awaitable[list[Any]]] | None = None
        # Cluster mode: how long a question to another node waits (0: no cluster).
        self.request_timeout = 0.0
        self.registry.add_kind(self.session_kind)
        self.registry.add_kind(self.presence_kind)
        self.http.add("GET", "/healthz", self._healthz)
        self.http.add("GET", "/readyz", self._readyz)
        self.http.add("GET", "/openapi.json", self._openapi)
        SessionsApi(self).register(self.http)
        WebRoutes(self).register(self.http)  # /client.js; the demo page in dev
        AuditApi(self).register(self.http)
        self.observer = Observer(self)  # /metrics, scheduler lag, alerts
        if settings.internal_port is None:
            self.http.add("GET", "/status", self._status)
            self.http.add("GET", "/metrics", self.observer.metrics_endpoint)
        self.internal_http = HttpRouter()
        self.internal_http.add("GET", "/status", self._status)
        self.internal_http.add("GET", "/metrics", self.observer.metrics_endpoint)
        self.internal_http.add("GET", "/healthz", self._healthz)
        # Comments, notification inboxes (`inbox:<user>`), webhooks: runtime/comments/feature.py
        self.collab = Collaboration(self, collab)

    # -- actors -------------------------------------------------------------------

    def local_session_actor(
        self,
        session_id: str,
        mailbox: Mailbox[SessionMessage],
        on_frame: Callable[[bytes], None] | None = None,
    ) -> SessionActor:
        return SessionActor(
            session_id,
            mailbox,
            store=self.store,
            presence=lambda: self.presence_mailbox(session_id),
            presence_if_live=lambda: self.registry.lookup(self.presence_kind, session_id),
            config=self.session_config,
            clock=self.wall_clock,
            on_frame=on_frame,
        )

    async def send_to_session(self, session_id: str, message: object) -> None:
        await self.registry.send(self.session_kind, session_id, message)

    async def presence_mailbox(self, session_id: str) -> CoalescingMailbox[str, PresenceMessage]:
        """The presence actor's mailbox, spawning the actor if needed: for its session actor only.

        Raises ``SpawnFailed`` (the ``presence`` supervisor is down, or the node stopping).
        """
        return await self.registry.get(self.presence_kind, session_id)

    def post_presence_update(self, session_id: str, conn_id: str, update: SetPresence) -> bool:
        """Hand a client's presence update to the live presence actor; never spawn one.

        Only the session actor spawns presence (its ``Track`` of a member, or a
        ``Sync``), and an actor that holds connections does not passivate. So with
        no live presence actor nobody is tracked for this update to apply to: the
        session does not hold the connection (gone, or its join not handled yet)
        or has lost presence and re-syncs it itself. A fresh actor would drop the
        update anyway and linger empty until passivation. False: not posted.
        """
        mailbox = self.registry.lookup(self.presence_kind, session_id)
        if mailbox is None:
            return False
        try:
            mailbox.post(conn_id, update)
        except MailboxClosed:
            return False  # passivating, so it holds nobody
        return True

    async def _presence_to_session(self, session_id: str, change: PresenceToSession) -> None:
        mailbox = self.registry.lookup(self.session_kind, session_id)
        if mailbox is None:
            return  # the session is gone, and with it everyone to tell
        try:
            await mailbox.send(change)
        except MailboxClosed:
            pass

    async def append_event(
        self, session_id: str, name: str, data: Any, user_id: str, *, sensitive: bool = False
    ) -> int:
        """Add a durable event to a session's stream from the server side; return its seq.

        Spawns the session actor if needed. Raises ``trio.TooSlowError`` when
        the session cannot take it within ``mailbox_timeout``, or the store's
        exception when it could not be written (nothing was then broadcast).
        """
        send, receive = trio.open_memory_channel[int | Exception](1)
        with trio.fail_after(self.settings.mailbox_timeout):
            await self.send_to_session(
                session_id, AppendEvent(name, data, user_id, send, sensitive)
            )
        result = await receive.receive()
        if isinstance(result, Exception):
            raise result
        return result

    async def participants(self, session_id: str) -> list[Any]:
        """Who is present in a live session (an empty list when it is not live).

        In cluster mode a session live on another node only is asked there;
        a relay or that question raises ``ClusterRequestError`` when the owner
        does not answer (an empty list would claim nobody is there).
        """
        mailbox = self.registry.lookup(self.session_kind, session_id)
        if mailbox is None:
            if self.remote_participants is not None:
                return await self.remote_participants(session_id)
            return []
        return await self.local_participants(session_id, mailbox)

    async def local_participants(
        self, session_id: str, mailbox: Mailbox[SessionMessage] | None = None
    ) -> list[Any]:
        """Who is present, asking only this node's actor (never forwarded again)."""
        if mailbox is None:
            mailbox = self.registry.lookup(self.session_kind, session_id)
            if mailbox is None:
                return []
        send, receive = trio.open_memory_channel[list[Any] | Exception](1)
        # The relay's own wait for the owner is bounded by cluster_request_timeout;
        # give it that long to answer before we stop listening.
        with trio.move_on_after(self.settings.mailbox_timeout + self.request_timeout):
            try:
                await mailbox.send(GetParticipants(send))
            except MailboxClosed:
                return []
            result = await receive.receive()
            if isinstance(result, Exception):
                raise result
            return result
        return []

    async def inject_failure(self, key: str, reason: str = "injected failure") -> bool:
        """Fault injection: make the live actor ``key`` crash. False if not live."""
        kind_name, _, actor_id = key.partition(":")
        if kind_name == "presence":
            presence = self.registry.lookup(self.presence_kind, actor_id)
            if presence is None:
                return False
            try:
                presence.post(FAIL_KEY, Fail(reason))
            except MailboxClosed:
                return False  # passivating
            return True
        if kind_name != "session":
            return False
        mailbox = self.registry.lookup(self.session_kind, actor_id)
        if mailbox is None:
            return False
        await mailbox.send(Fail(reason))
        return True

    # -- lifecycle ----------------------------------------------------------------

    async def run(
        self, *, task_status: trio.TaskStatus[TandemNode] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run the supervision tree, the heartbeat and the listeners until :meth:`shutdown`.

        Shutdown is graceful: stop accepting, close every connection with 1001,
        let actors drain their mailboxes, then cancel what is left — each step
        bounded by ``shutdown_timeout``.
        """
        self.started_at = trio.current_time()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await nursery.start(self.root.run)
            await self.root.start_child(
                "sessions",
                self.sessions_supervisor.run,
                kind="supervisor",
                supervisor=self.sessions_supervisor,
            )
            await self.root.start_child(
                "presence",
                self.presence_supervisor.run,
                kind="supervisor",
                supervisor=self.presence_supervisor,
            )
            await self.collab.start(self.root, nursery)  # inboxes supervisor, webhook delivery
            nursery.start_soon(self.gateway.run_heartbeat)
            nursery.start_soon(self._release_held_presence)
            nursery.start_soon(self.observer.run)
            async with trio.open_nursery() as listeners:
                if self.settings.port >= 0:
                    self.public_port = await listeners.start(
                        partial(self.gateway.serve_tcp, reuse_port=self.settings.reuse_port),
                        self.settings.host,
                        self.settings.port,
                        self.http,
                    )
                if self.settings.internal_port is not None:
                    self.internal_port = await listeners.start(
                        self.gateway.serve_tcp,
                        self.settings.host,
                        self.settings.internal_port,
                        self.internal_http,
                    )
                self.accepting = True
                task_status.started(self)
                await self._shutdown.wait()
                self.accepting = False
                listeners.cancel_scope.cancel()
            await self._drain()
            nursery.cancel_scope.cancel()

    def shutdown(self) -> None:
        self._shutdown.set()

    async def _drain(self) -> None:
        with trio.move_on_after(self.settings.shutdown_timeout / 2):
            await self.gateway.close_all(CloseCode.GOING_AWAY, "server shutting down")
        # The second half of the budget: what the closed connections started (comments
        # being written, notifications on their way to inboxes) needs the actors, so it
        # finishes first (at most half of that half); then the actors drain.
        actors_done_by = trio.current_time() + self.settings.shutdown_timeout / 2
        with trio.move_on_after(self.settings.shutdown_timeout / 4):
            await self.collab.settle()
        self.registry.close_all()
        with trio.move_on_at(actors_done_by):
            await self.registry.wait_empty()

    @property
    def connections(self) -> dict[str, ClientConnection]:
        return self.gateway.connections

    def attach(self, wire: Wire) -> None:
        """Serve an already-connected wire (in-memory clients of the test kit)."""
        self.gateway.attach(wire)

    async def _release_held_presence(self) -> None:
        """Presence updates held back by their rate limit go out as the bucket refills."""
        while True:
            await trio.sleep(0.05)
            self.dispatcher.flush_held_presence()

    # -- security events ------------------------------------------------------------

    def member_changed(self, session_id: str, user_id: str) -> None:
        """A membership changed (here, or on another node of the cluster)."""
        if self._nursery is not None:
            self._member_changed(session_id, user_id)

    def _member_changed(self, session_id: str, user_id: str) -> None:
        """A membership changed through Tandem: re-check that user's live connections now."""
        assert self._nursery is not None
        for conn in list(self.connections.values()):
            if conn.user_id == user_id and session_id in conn.joined:
                self._nursery.start_soon(self.dispatcher.revalidate, conn, session_id)

    async def session_deleted(self, session_id: str) -> None:
        """An archived session: everyone connected to it leaves at once."""
        await self.kick_deleted(session_id)
        await self.audit("session.deleted", "api", session_id, {})

    async def kick_deleted(self, session_id: str) -> None:
        """Everyone connected here to an archived session leaves (no audit: see above)."""
        for conn in list(self.connections.values()):
            if session_id in conn.joined:
                conn.joined.discard(session_id)
                conn.send({"type": "session:left", "sessionId": session_id, "reason": "deleted"})
                with trio.move_on_after(self.settings.mailbox_timeout):
                    try:
                        await self.send_to_session(
                            session_id, LeaveSession(conn, None, reply=False)
                        )
                    except (MailboxClosed, SpawnFailed):
                        pass

    async def audit(self, action: str, actor: str, target: str, details: dict[str, Any]) -> None:
        """Record a security-relevant action in the audit log, when one is configured."""
        if self.audit_log is not None:
            await self.audit_log.record(action=action, actor=actor, target=target, details=details)

    # -- HTTP ---------------------------------------------------------------------

    async def _healthz(self, request: HttpRequest) -> HttpResponse:
        return json_response(200, {"status": "ok"})

    async def _readyz(self, request: HttpRequest) -> HttpResponse:
        if not self.accepting:
            return json_response(503, {"status": "starting or stopping"})
        if self.database is not None and not self.database.health().ok:
            return json_response(503, {"status": "database unavailable"})
        return json_response(200, {"status": "ready"})

    async def _openapi(self, request: HttpRequest) -> HttpResponse:
        return json_response(200, OPENAPI)

    async def _status(self, request: HttpRequest) -> HttpResponse:
        return json_response(200, self.status())

    def status(self) -> dict[str, Any]:
        queued = sorted(self.connections.values(), key=lambda c: c.outbound_queued, reverse=True)
        return {
            "node": self.node_id,
            "uptime": round(trio.current_time() - self.started_at, 3),
            "accepting": self.accepting,
            "connections": {
                "open": len(self.connections),
                "opened": self.gateway.connections_opened,
                # permessage-deflate negotiated (browsers offer it; most libraries do not)
                "compressed": sum(1 for c in self.connections.values() if c.deflate),
                "slowest": [c.status() for c in queued[:5] if c.outbound_queued],
            },
            "sessions": self.registry.count(self.session_kind),
            "database": attrs.asdict(self.database.health()) if self.database else None,
            "actors": self.root.status(),
            **self.observer.status(),  # alerts, slowest mailboxes, scheduler lag
            "webhooks": self.collab.status(),
            "settings": public_view(self.settings),
            **{name: hook() for name, hook in self.status_hooks.items()},
        }
