"""The Tandem client: one WebSocket connection at a time, resumed across drops.

Structure: :func:`open_tandem_client` owns a nursery with one supervisor task
(``_run``) that connects, handshakes, rejoins, then reads until the connection
ends, and reconnects with backoff when the close code allows it. Each
connection has its own nursery (the reader and rejoin tasks), cancelled when
the connection ends. Nothing outlives the ``async with`` block.

Ordering and de-duplication: the reader is the only task that touches a
session's ``last_seq``. An ``event`` is delivered only if its ``seq`` is above
the last one delivered for that session, so events are never duplicated or
out of order; a reconnect rejoins with ``since=last_seq`` so none is lost
(unless the server no longer has them: then ``session:reset`` is delivered and
the application must reload its state).

Backpressure: incoming messages go to a bounded queue (``inbox_size``). When
the application does not read :meth:`TandemClient.messages`, the reader stops
reading the socket, the server's outbound queue for this client grows, and the
server eventually closes the connection as a slow consumer (close code 4000)
or for missing heartbeats (4001). The client then reconnects and resumes from
the last queued event, so nothing is lost — only delayed. Replies to requests
travel in the same stream, so requests also wait while the queue is full.
"""

from __future__ import annotations

import itertools
import logging
import random
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import attrs
import orjson
import trio
import trio_websocket
from trio_websocket import ConnectionClosed, WebSocketConnection

from client.backoff import Backoff
from client.comments import CommentsMixin
from client.errors import ConnectionEnded, Disconnected, TandemError
from client.presence import Participants, Record
from client.transport import (
    Message,
    decode_frame,
    open_websocket,
    reraise,
    single_exception,
    with_token,
)
from runtime.protocol.errors import ErrorCode, should_reconnect

logger = logging.getLogger(__name__)

Connect = Callable[[], AbstractAsyncContextManager[WebSocketConnection]]

#: Errors that mean "this connection attempt failed; try again later".
_CONNECT_ERRORS = (
    OSError,
    trio_websocket.HandshakeError,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    trio.TooSlowError,
)

#: Rejoin errors worth retrying on the same connection.
_RETRYABLE = frozenset({ErrorCode.OVERLOADED, ErrorCode.INTERNAL, ErrorCode.RATE_LIMITED})

#: Messages about one session that are dropped once the client is no longer in it.
_SESSION_SCOPED = frozenset(
    {"event", "session:reset", "participant:joined", "participant:left", "presence"}
)


@attrs.frozen
class JoinedSession:
    """The answer to :meth:`TandemClient.join`: the session as of ``seq``."""

    session_id: str
    seq: int
    participants: list[Any]
    presence: dict[str, Any]


@attrs.define
class _Session:
    last_seq: int
    leaving: bool = False
    # Kept by the reader: `presence` messages carry only what changed, so someone must merge.
    participants: Participants = attrs.field(factory=Participants)


class _Pending:
    """One request waiting for its reply (matched by ``ref``)."""

    def __init__(self, kind: str, session_id: str | None = None, since: int | None = None):
        self.kind = kind
        self.session_id = session_id
        self.since = since
        self.sent_at = trio.current_time()
        self._done = trio.Event()
        self._result: Message | None = None
        self._error: BaseException | None = None

    def resolve(self, msg: Message) -> None:
        if not self._done.is_set():
            self._result = msg
            self._done.set()

    def fail(self, exc: BaseException) -> None:
        if not self._done.is_set():
            self._error = exc
            self._done.set()

    async def wait(self) -> Message:
        await self._done.wait()
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result


class TandemClient(CommentsMixin):
    """A connection to a Tandem server that survives drops; see :func:`open_tandem_client`.

    Every request method waits for the connection when the client is
    reconnecting. Cancelling a request stops the wait only: a request already
    sent may still take effect on the server (a cancelled ``join`` may still
    join; its ``session:joined`` then appears in :meth:`messages`).
    Cancellation is never swallowed.
    """

    def __init__(
        self,
        connect: Connect,
        *,
        token: str | None,
        send_auth: bool,
        reconnect: bool,
        backoff: Backoff,
        inbox_size: int,
        handshake_timeout: float,
    ) -> None:
        self._connect = connect
        self._token = token
        self._send_auth = send_auth
        self._reconnect = reconnect
        self._backoff = backoff
        self._handshake_timeout = handshake_timeout
        self._inbox_send, self._inbox_recv = trio.open_memory_channel[Message](inbox_size)
        self._refs = itertools.count(1)
        self._pending: dict[int, _Pending] = {}
        self._sessions: dict[str, _Session] = {}
        self._ws: WebSocketConnection | None = None
        self._conn_nursery: trio.Nursery | None = None
        self._state_changed = trio.Event()
        self._end: ConnectionEnded | None = None
        self._closing = False
        self._close_done = trio.Event()
        self._started = False
        #: The identity the server gave this connection (``welcome``/``auth:ok``).
        self.user_id: str | None = None
        self.name: str | None = None
        self.connection_id: str | None = None
        #: How many times the client reconnected after a drop.
        self.reconnects = 0

    # -- public API ---------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._ws is not None

    @property
    def sessions(self) -> frozenset[str]:
        """Sessions the client is in (and rejoins after a reconnect)."""
        return frozenset(sid for sid, s in self._sessions.items() if not s.leaving)

    def last_seq(self, session_id: str) -> int | None:
        """The seq of the last event queued for delivery in ``session_id`` (None if not in it)."""
        state = self._sessions.get(session_id)
        return state.last_seq if state is not None else None

    def participants(self, session_id: str) -> dict[str, Record] | None:
        """Who is present in a session, ``{userId: participant}`` (None if not in it).

        Whole records (``userId``, ``name``, ``state``, ``status``,
        ``connections``): the ``session:joined`` snapshot with every
        ``participant:*`` and ``presence`` message read since merged in, so an
        application need not merge the lean ``presence`` entries itself. It is
        as of the last message read from the socket, which may be ahead of
        what :meth:`messages` has yielded so far.
        """
        state = self._sessions.get(session_id)
        return state.participants.records() if state is not None else None

    async def join(self, session_id: str, since: int | None = None) -> JoinedSession:
        """Join a session; with ``since``, the server replays every event after it.

        Replayed events (or a ``session:reset``) arrive through :meth:`messages`
        right after the ``session:joined`` message. Raises :class:`TandemError`
        if refused, :class:`Disconnected` if the connection dropped first.
        """
        msg: Message = {"type": "session:join", "sessionId": session_id}
        if since is not None:
            msg["since"] = since
        reply = await self._request(msg, _Pending("join", session_id, since))
        return JoinedSession(
            session_id, int(reply["seq"]), reply["participants"], reply["presence"]
        )

    async def leave(self, session_id: str) -> None:
        """Leave a session; it is no longer rejoined and its messages are no longer delivered.

        Never raises :class:`Disconnected`: a dropped connection leaves every
        session anyway, and the client will not rejoin this one. If cancelled,
        the session is still forgotten locally.
        """
        state = self._sessions.get(session_id)
        if state is not None:
            state.leaving = True
        refused = False
        try:
            await self._request(
                {"type": "session:leave", "sessionId": session_id},
                _Pending("leave", session_id),
            )
        except TandemError as exc:
            if exc.code != ErrorCode.NOT_JOINED:
                refused = True  # e.g. overloaded: still a member; stay in it
                raise
        except Disconnected:
            pass
        finally:
            current = self._sessions.get(session_id)
            if current is not None and current is state:
                if refused:
                    current.leaving = False
                else:
                    del self._sessions[session_id]

    async def update_presence(self, session_id: str, state: dict[str, Any]) -> None:
        """Set this client's presence state in a session; returns once sent.

        The server does not acknowledge presence; its effect arrives to every
        member (this client included) as a ``presence`` message. Raises
        :class:`TandemError` ``not_joined`` locally if the client is not in the
        session, :class:`Disconnected` if the connection dropped while sending.
        """
        if session_id not in self.sessions:
            raise TandemError(ErrorCode.NOT_JOINED, "join the session first", session_id=session_id)
        ws = await self._wait_connected()
        await self._send(ws, {"type": "presence:update", "sessionId": session_id, "state": state})

    async def publish(
        self, session_id: str, name: str, data: Any = None, durable: bool = True
    ) -> int:
        """Publish an event and wait until the server acknowledges it; returns its seq.

        Durable events are acknowledged once stored. An ephemeral event
        (``durable=False``: never stored or replayed) is acknowledged at once;
        the server may give it the seq of the durable event it follows. At-most-once: if the
        connection drops (or the session restarts) before the ack,
        :class:`Disconnected` is raised and the event may or may not exist —
        the client never resends it itself.
        The event also arrives through :meth:`messages` like everyone else's.
        """
        reply = await self._request(
            {
                "type": "event:publish",
                "sessionId": session_id,
                "name": name,
                "data": data,
                "durable": durable,
            },
            _Pending("publish", session_id),
        )
        return int(reply["seq"])

    async def ping(self) -> float:
        """Round-trip a ``ping`` through the server; returns the time taken in seconds."""
        pending = _Pending("ping")
        await self._request({"type": "ping"}, pending)
        return trio.current_time() - pending.sent_at

    def messages(self) -> _MessageStream:
        """Iterate over incoming server messages (dicts, as on the wire), in arrival order.

        Arrays are flattened; ``event`` messages are de-duplicated by seq and
        never out of order per session. Not delivered: ``welcome``, ``pong``,
        ``event:ack``, ``auth:ok``, errors answering a request (raised from
        the request instead), a server-initiated ``session:left`` (the client
        rejoins by itself and delivers the new ``session:joined``), and
        messages of sessions the client has left. The iterator ends when the
        client is closed and raises :class:`ConnectionEnded` if the server
        ended the connection for good. Use one consumer; a cancelled wait
        loses no message.
        """
        return _MessageStream(self)

    # -- requests -----------------------------------------------------------------

    async def _wait_connected(self) -> WebSocketConnection:
        while True:
            if self._end is not None:
                raise self._end
            if self._closing:
                raise Disconnected("client closed")
            if self._ws is not None:
                return self._ws
            await self._state_changed.wait()

    async def _request(self, msg: Message, pending: _Pending) -> Message:
        ws = await self._wait_connected()
        return await self._request_on(ws, msg, pending)

    async def _call(self, msg: Message) -> Message:
        return await self._request(msg, _Pending(str(msg["type"]), msg.get("sessionId")))

    async def _request_on(
        self, ws: WebSocketConnection, msg: Message, pending: _Pending
    ) -> Message:
        """Send ``msg`` with a fresh ref and wait for its reply.

        The pending entry stays registered if the wait is cancelled, so a late
        reply still updates session state; a connection drop clears it.
        """
        ref = next(self._refs)
        self._pending[ref] = pending
        pending.sent_at = trio.current_time()
        try:
            await self._send(ws, {**msg, "ref": ref})
        except Disconnected:
            self._pending.pop(ref, None)
            raise
        return await pending.wait()

    async def _send(self, ws: WebSocketConnection, msg: Message) -> None:
        try:
            await ws.send_message(orjson.dumps(msg).decode())
        except (ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError):
            raise self._end or Disconnected("connection lost while sending") from None

    def _fail_pending(self, exc: Disconnected) -> None:
        pending, self._pending = self._pending, {}
        for p in pending.values():
            p.fail(exc)

    def _set_connection(self, ws: WebSocketConnection | None) -> None:
        self._ws = ws
        self._state_changed.set()
        self._state_changed = trio.Event()

    # -- connection lifecycle -----------------------------------------------------

    async def _run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect, serve, reconnect, until closed or ended for good.

        Before the first successful handshake every failure is raised (to
        :func:`open_tandem_client`'s caller); afterwards failures reconnect
        when ``should_reconnect(code)`` says so, else end the client.
        """
        while True:
            code: int | None = None
            reason: str | None = None
            try:
                closed = await self._connection(task_status)
                if closed is not None:
                    code, reason = closed.code, closed.reason
            except _CONNECT_ERRORS as exc:
                if not self._started:
                    raise
                reason = f"{type(exc).__name__}: {exc}"
            except ConnectionEnded as exc:
                if not self._started:
                    raise
                code, reason = exc.code, exc.reason
            finally:
                self._set_connection(None)
                self._conn_nursery = None
            if self._closing:
                self._fail_pending(Disconnected("client closed"))
                return
            if not (self._reconnect and should_reconnect(code)):
                self._end = ConnectionEnded(code, reason)
                self._fail_pending(self._end)
                self._set_connection(None)
                self._inbox_send.close()
                return
            self._fail_pending(Disconnected(f"connection lost ({code}): {reason or ''}"))
            delay = self._backoff.next_delay()
            logger.info("tandem: connection lost (%s %s); retrying in %.2fs", code, reason, delay)
            await trio.sleep(delay)
            self.reconnects += 1

    async def _connection(
        self, task_status: trio.TaskStatus[None]
    ) -> trio_websocket.CloseReason | None:
        """One connection, start to end. A group of one error (the ``connect``
        context manager may run a nursery) is raised as that error."""
        try:
            async with self._connect() as ws:
                return await self._serve(ws, task_status)
        except BaseExceptionGroup as group:
            single = single_exception(group)
            if single is None:
                raise
            reraise(single)

    async def _serve(
        self, ws: WebSocketConnection, task_status: trio.TaskStatus[None]
    ) -> trio_websocket.CloseReason | None:
        """Handshake, rejoin, then read until the connection closes; returns why it closed."""
        try:
            with trio.fail_after(self._handshake_timeout):
                await self._handshake(ws)
        except ConnectionClosed as exc:
            code = exc.reason.code if exc.reason else None
            raise ConnectionEnded(code, exc.reason.reason if exc.reason else None) from None
        async with trio.open_nursery() as nursery:
            self._conn_nursery = nursery
            for session_id, state in list(self._sessions.items()):
                if state.leaving:
                    del self._sessions[session_id]
                else:
                    await nursery.start(self._rejoin, ws, session_id)
            self._set_connection(ws)
            self._backoff.reset()
            if not self._started:
                self._started = True
                task_status.started()
            closed = await self._read(ws)
            if self._closing:
                # Stay inside the connect context until our close handshake
                # completes: leaving it would stop the frames being read.
                await self._close_done.wait()
            nursery.cancel_scope.cancel()
        return closed

    async def _handshake(self, ws: WebSocketConnection) -> None:
        """Wait for ``welcome`` (and ``auth:ok`` when sending a token in-band)."""
        auth_ref: int | None = None
        if self._send_auth and self._token is not None:
            auth_ref = next(self._refs)
            await ws.send_message(
                orjson.dumps({"type": "auth", "token": self._token, "ref": auth_ref}).decode()
            )
        while True:
            for msg in decode_frame(await ws.get_message()):
                kind = msg.get("type")
                if kind == "welcome":
                    self.user_id = msg.get("userId")
                    self.name = msg.get("name")
                    self.connection_id = msg.get("connectionId")
                    if auth_ref is None:
                        return
                elif kind == "auth:ok" and msg.get("ref") == auth_ref:
                    self.user_id = msg.get("userId")
                    self.name = msg.get("name")
                    return
                else:  # e.g. a token error: the close that follows says what to do
                    await self._deliver(msg)

    async def _rejoin(
        self,
        ws: WebSocketConnection,
        session_id: str,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Rejoin ``session_id`` with ``since=last_seq``; started once the join is sent.

        Retryable refusals (overloaded, rate limited) are retried with backoff;
        other refusals drop the session and deliver the error (with
        ``sessionId``) through :meth:`messages`.
        """
        backoff = Backoff(self._backoff.initial, self._backoff.maximum)
        started = False
        try:
            while (state := self._sessions.get(session_id)) is not None and not state.leaving:
                msg: Message = {
                    "type": "session:join",
                    "sessionId": session_id,
                    "since": state.last_seq,
                }
                pending = _Pending("join", session_id, state.last_seq)
                ref = next(self._refs)
                self._pending[ref] = pending
                await self._send(ws, {**msg, "ref": ref})
                if not started:
                    started = True
                    task_status.started()
                try:
                    await pending.wait()
                    return
                except TandemError as exc:
                    if exc.code in _RETRYABLE:
                        await trio.sleep(exc.retry_after or backoff.next_delay())
                        continue
                    if self._sessions.get(session_id) is state:
                        del self._sessions[session_id]
                    await self._deliver(
                        {
                            "type": "error",
                            "code": exc.code,
                            "message": f"rejoin failed: {exc.message}",
                            "sessionId": session_id,
                        }
                    )
                    return
        except Disconnected:
            return  # the next connection rejoins
        finally:
            if not started:
                task_status.started()

    # -- reading ------------------------------------------------------------------

    async def _read(self, ws: WebSocketConnection) -> trio_websocket.CloseReason | None:
        while True:
            try:
                raw = await ws.get_message()
            except ConnectionClosed as exc:
                return exc.reason
            for msg in decode_frame(raw):
                await self._dispatch(msg)

    async def _dispatch(self, msg: Message) -> None:
        kind = msg.get("type")
        ref = msg.get("ref")
        pending = self._pending.pop(ref, None) if isinstance(ref, int) else None
        session_id = msg.get("sessionId")
        if kind == "error":
            if pending is None:
                await self._deliver(msg)
            else:
                pending.fail(TandemError.from_message(msg))
        elif kind in ("pong", "event:ack", "auth:ok"):
            if pending is not None:
                pending.resolve(msg)
        elif kind == "session:joined" and isinstance(session_id, str):
            state = self._sessions.get(session_id)
            if state is None or state.leaving:
                since = pending.since if pending is not None else None
                self._sessions[session_id] = _Session(
                    since if since is not None else int(msg["seq"])
                )
            # else a rejoin (or the late answer to one that was superseded): what was
            # delivered stays delivered. Going back to its `since` would deliver the
            # replay of events already delivered a second time.
            # The snapshot is what later presence changes are relative to, rejoin or not.
            self._sessions[session_id].participants.reset(msg["participants"])
            if pending is not None:
                pending.resolve(msg)
            await self._deliver(msg)
        elif kind == "session:left" and isinstance(session_id, str):
            await self._session_left(session_id, msg, pending)
        elif kind in _SESSION_SCOPED:
            state = self._sessions.get(session_id) if isinstance(session_id, str) else None
            if state is None:
                return
            if kind == "event":
                seq = msg.get("seq")
                if not isinstance(seq, int):
                    return
                if msg.get("ephemeral") is True:
                    # Carries the seq it follows; live only, never replayed.
                    if seq < state.last_seq:
                        return
                elif seq <= state.last_seq:
                    return  # a duplicate (or already superseded): never deliver twice
                else:
                    state.last_seq = seq
            elif kind == "session:reset":
                state.last_seq = int(msg["seq"])
            else:
                state.participants.apply(msg)
            await self._deliver(msg)
        elif pending is not None:  # the reply to a request, e.g. ``thread:create:ok``
            pending.resolve(msg)
        else:
            await self._deliver(msg)

    async def _session_left(self, session_id: str, msg: Message, pending: _Pending | None) -> None:
        state = self._sessions.get(session_id)
        if pending is not None:  # the answer to our leave
            self._sessions.pop(session_id, None)
            pending.resolve(msg)
            await self._deliver(msg)
        elif state is None:
            return
        elif state.leaving:
            del self._sessions[session_id]
        elif self._conn_nursery is not None and self._ws is not None:
            # The session actor restarted (a crash, or its owner node died): publishes
            # still waiting for an ack will never get one, and may or may not exist.
            self._fail_session_requests(session_id)
            # Rejoin from where we are, transparently.
            await self._conn_nursery.start(self._rejoin, self._ws, session_id)

    def _fail_session_requests(self, session_id: str) -> None:
        for ref, pending in list(self._pending.items()):
            # A rejoin in flight is failed too: its _rejoin task ends, a new one starts.
            if pending.kind in ("publish", "join") and pending.session_id == session_id:
                del self._pending[ref]
                pending.fail(Disconnected(f"session {session_id} restarted before the ack"))

    async def _deliver(self, msg: Message) -> None:
        """Queue ``msg`` for :meth:`messages`; waits (stops reading the socket) while full."""
        try:
            await self._inbox_send.send(msg)
        except trio.ClosedResourceError:
            pass  # the client is closing

    # -- closing ------------------------------------------------------------------

    async def _close(self) -> None:
        """Close the connection with 1000, bounded and shielded, and end :meth:`messages`."""
        self._closing = True
        self._state_changed.set()
        ws = self._ws
        if ws is not None:
            with trio.CancelScope(shield=True) as scope:
                scope.deadline = trio.current_time() + 2.0
                try:
                    await ws.aclose(1000, "client closed")
                except (*_CONNECT_ERRORS, ConnectionClosed):
                    pass
        self._close_done.set()
        self._inbox_send.close()


class _MessageStream:
    """The async iterator behind :meth:`TandemClient.messages`."""

    def __init__(self, client: TandemClient) -> None:
        self._client = client

    def __aiter__(self) -> _MessageStream:
        return self

    async def __anext__(self) -> Message:
        try:
            return await self._client._inbox_recv.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            if self._client._end is not None:
                raise self._client._end from None
            raise StopAsyncIteration from None


@asynccontextmanager
async def open_tandem_client(
    url: str | None = None,
    *,
    token: str | None = None,
    connect: Connect | None = None,
    reconnect: bool = True,
    backoff_initial: float = 0.1,
    backoff_max: float = 10.0,
    rng: random.Random | None = None,
    inbox_size: int = 1024,
    handshake_timeout: float = 10.0,
) -> AsyncIterator[TandemClient]:
    """Connect to a Tandem server; the client lives until the block ends.

    Give ``url`` (``ws://host:port/``; ``token`` is sent as ``?token=``) or
    ``connect``, a callable returning an async context manager of a
    ``trio_websocket.WebSocketConnection`` (then ``token``, if given, is sent
    in-band with ``auth``). Entering waits for the first handshake and raises
    if it fails (``ConnectionEnded`` for a refused token, the transport error
    otherwise). Later drops reconnect with exponential backoff and full jitter
    (``backoff_initial`` doubling up to ``backoff_max``; pass ``rng`` for
    determinism) unless ``reconnect`` is false or the close code says not to.

    Leaving the block closes the connection with 1000 (bounded, shielded
    against cancellation so the server hears it), cancels the client's tasks,
    and fails requests still waiting with :class:`Disconnected`. If the block
    is cancelled, the cancellation propagates after that cleanup.
    """
    if connect is None:
        if url is None:
            raise ValueError("give url or connect")
        full_url = with_token(url, token)

        def connect() -> AbstractAsyncContextManager[WebSocketConnection]:
            return open_websocket(full_url, connect_timeout=handshake_timeout)

        send_auth = False
    else:
        send_auth = token is not None
    client = TandemClient(
        connect,
        token=token,
        send_auth=send_auth,
        reconnect=reconnect,
        backoff=Backoff(backoff_initial, backoff_max, rng),
        inbox_size=inbox_size,
        handshake_timeout=handshake_timeout,
    )
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(client._run)
            try:
                yield client
            finally:
                await client._close()
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # One error (the block's, or the client's own): raise it as it is, not
        # wrapped, so callers catch TandemError or their own exceptions directly.
        single = single_exception(group)
        if single is None:
            raise
        reraise(single)
