"""SessionActor: membership, the ordered event stream and batched fan-out of one session.

Each batch of messages (everything that queued while the actor was busy) is
handled in order; the events it produced are persisted in one write, then
broadcast as ONE frame, built once and written to every member without a
task per member. A publisher's ``event:ack`` follows once its event is
durable; ephemeral events (``durable: false``) are never written.

Backpressure: the mailbox is bounded and connections wait for room (with a
deadline, then ``overloaded``), which slows the reading of that client's
socket. A member whose socket cannot keep up is disconnected by its own
outbound bound, never by blocking the session.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import attrs
import trio

from actors.messages import (
    SYNC_KEY,
    AppendEvent,
    GetParticipants,
    JoinSession,
    LeaveSession,
    Peer,
    PresenceChanged,
    PresenceRestarted,
    PresenceSnapshot,
    PublishEvent,
    SessionMessage,
    Sync,
    Track,
    Untrack,
)
from actors.presence.roster import Roster
from actors.session.state import RetainedEvent, SessionLog
from runtime import metrics
from runtime.actor import BatchPolicy, run_batch_loop
from runtime.cluster.requests import OwnerUnavailable
from runtime.gateways.database import DatabaseError
from runtime.gateways.memory import SeqConflict, StoreError, normalize_ts
from runtime.gateways.store import EventStore, StoredEvent
from runtime.mailbox import CoalescingMailbox, Mailbox, MailboxClosed
from runtime.observability.logs import bind_actor
from runtime.protocol import messages as wire
from runtime.protocol.codec import encode, encode_batch
from runtime.protocol.errors import ErrorCode
from runtime.protocol.frames import SharedFrame
from runtime.registry import SpawnFailed

logger = logging.getLogger(__name__)

#: Most events per replay frame: big enough to be cheap, small enough to interleave.
REPLAY_CHUNK = 256
#: Seconds between a session's attempts to reach a presence actor it could not reach
#: (after a batch; a join or leave tries at once): a busy session does not retry per batch.
PRESENCE_RETRY = 1.0


@attrs.frozen
class SessionConfig:
    memory_retention: int = 1000
    replay_limit: int = 10_000  # most events one resume reads from the store
    passivate_after: float = 300.0
    batch: BatchPolicy = attrs.field(factory=BatchPolicy)
    retention_events: int = 0  # keep at most this many in the store (0: no limit)
    retention_seconds: float = 0.0  # and none older than this (0: forever)
    trim_every: int = 1000  # apply retention after this many new events (and at start)


def _worth_a_window(message: object) -> bool:
    """Whether a batch holding ``message`` may wait for more (``BatchPolicy.widen_for``).

    Published events, yes: under load, more of them share one frame. Appended ones
    (comments and the like), no: the comment writer already sends a group commit's
    events together, and each create is acknowledged only once its event is
    durable, so the window was added to every ack (server-side create time, mean
    27-30 ms with it, 20-21 ms without; docs/performance.md). Presence changes,
    joins and leaves, no: the presence actor sends at most one change set per flush
    interval, so waiting only delayed it (per-flush timing in a 500-member storm:
    18-29 ms of the slowest flushes' latency was this wait).
    """
    return isinstance(message, PublishEvent)


class SessionActor:
    """One session's actor. Made fresh by the registry on spawn and on restart."""

    def __init__(
        self,
        session_id: str,
        mailbox: Mailbox[SessionMessage],
        *,
        store: EventStore,
        presence: Callable[[], Awaitable[CoalescingMailbox[str, Any]]],
        presence_if_live: Callable[[], CoalescingMailbox[str, Any] | None] = lambda: None,
        config: SessionConfig,
        clock: Callable[[], float] = time.time,
        on_frame: Callable[[bytes], None] | None = None,
    ) -> None:
        self.session_id = session_id
        # Cluster mode: every broadcast payload also goes to the other nodes' relays.
        self._on_frame = on_frame
        self._mailbox = mailbox
        self._store = store
        self._presence_mailbox = presence  # the presence actor's mailbox, spawning it if needed
        self._presence_if_live = presence_if_live  # the same, or None: never spawns
        self._config = config
        self._clock = clock
        self._log = SessionLog(session_id, memory_limit=config.memory_retention)
        self._members: dict[str, Peer] = {}
        self._local: dict[str, Peer] = {}  # members this node writes to (not remote ones)
        # Presence as members know it: the `session:joined` snapshot, the base of changes.
        self._roster = Roster()
        # A Track, Untrack or Sync could not be posted: the presence actor misses what
        # happened since, so the next post is a whole Sync, tried at most once per
        # PRESENCE_RETRY seconds from the end of a batch (and at once on a join or leave).
        self._presence_lost = False
        self._presence_retry_at = 0.0
        # The joins of the batch being handled that were not answered yet, in order. If
        # the actor stops meanwhile they are refused (`error`), never left unanswered.
        self._joins: deque[JoinSession] = deque()
        # The batch being handled: if the actor stops in it, its server-side appends and
        # participants questions are answered (OwnerUnavailable), never left waiting.
        self._batch: list[SessionMessage] = []

    # -- lifecycle ----------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Rehydrate from the store, then handle batches until passivation or shutdown.

        If the actor stops any other way than passivating or draining for
        shutdown — it crashed, or was cancelled (its supervisor escalated, a
        cluster owner lost its lease) — the joins it was handling are refused
        (``error`` ``internal`` with their ``ref``) and every member is told
        the session was lost (``session:left`` with reason ``restart``), so
        clients rejoin with ``since`` and miss nothing, and nobody is left
        counted as joined or tracked in presence. A crashed actor's successor
        reads the same mailbox, so what is queued behind the batch is handled.
        """
        bind_actor(self.session_id)
        await self._apply_retention()
        task_status.started()
        try:
            await run_batch_loop(
                self,
                self._mailbox,
                policy=attrs.evolve(
                    self._config.batch,
                    widen_for=_worth_a_window,
                    fanout=lambda: len(self._local),
                ),
                passivate_after=self._config.passivate_after,
                on_lost=self._refuse_joins,
            )
        except BaseException:
            # Crash or cancellation: only non-blocking calls here, and re-raised.
            self._refuse_joins(self._joins)
            self._joins.clear()
            answer_requests(self.session_id, self._batch, "stopped while handling")
            self._batch = []
            self._abandon_members("restart")
            raise
        # Closed for shutdown and drained: members are being disconnected anyway.

    def is_idle(self) -> bool:
        return not self._members

    async def _apply_retention(self) -> None:
        """Trim the store to the retention policy, then (re)read the head."""
        config = self._config
        if config.retention_events or config.retention_seconds:
            await self._store.trim(
                self.session_id,
                keep_last=config.retention_events or None,
                older_than_s=config.retention_seconds or None,
            )
        head = await self._store.load_head(self.session_id)
        self._log.seq = max(self._log.seq, head.last_seq)
        self._log.first_retained = head.first_retained_seq
        self._stored_since_trim = 0

    _stored_since_trim = 0

    # -- message handling ---------------------------------------------------------

    async def handle(self, batch: list[SessionMessage]) -> None:
        self._batch = batch
        self._joins = deque(m for m in batch if isinstance(m, JoinSession))
        pending = _Pending()
        for message in batch:
            if isinstance(message, PublishEvent):
                self._publish(message, pending)
            elif isinstance(message, AppendEvent):
                self._append(message, pending)
            elif isinstance(message, JoinSession):
                # Everything assigned so far goes out first, so the joiner's
                # replay and the live stream meet without gap or duplicate.
                await self._flush(pending)
                pending = _Pending()
                await self._join(message)
                metrics.JOIN.observe(trio.current_time() - message.enqueued_at)
            elif isinstance(message, LeaveSession):
                await self._leave(message)
                metrics.LEAVE.observe(trio.current_time() - message.enqueued_at)
            elif isinstance(message, PresenceChanged):
                self._presence(message, pending)
            elif isinstance(message, PresenceSnapshot):
                for out in self._roster.reconcile(self.session_id, message):
                    pending.add(encode(out))
            elif isinstance(message, PresenceRestarted):
                await self._sync_presence()
            elif isinstance(message, GetParticipants):
                try:
                    message.reply.send_nowait(self._roster.records())
                except (trio.WouldBlock, trio.BrokenResourceError):
                    pass  # the asker gave up
        await self._flush(pending)
        self._batch = []  # answered
        if self._presence_lost and self._members and trio.current_time() >= self._presence_retry_at:
            await self._sync_presence()

    def _publish(self, message: PublishEvent, pending: _Pending) -> None:
        if message.peer.id not in self._members:
            message.peer.send(
                wire.error(
                    ErrorCode.NOT_JOINED,
                    "join the session first",
                    message.ref,
                    session_id=self.session_id,
                )
            )
            return
        # Timestamps are kept at the store's precision so live and replayed events match.
        ts = normalize_ts(self._clock())
        event = self._log.append(
            message.name, message.data, message.peer.user_id, ts, message.durable, message.sensitive
        )
        pending.outgoing.append(event.encoded)
        pending.is_event.append(True)
        if event.stored is not None:
            pending.to_store.append(event.stored)
        pending.acks.append((message.peer, event.seq, message.ref))
        pending.published_at.append(message.enqueued_at)

    def _append(self, message: AppendEvent, pending: _Pending) -> None:
        ts = normalize_ts(self._clock())
        event = self._log.append(
            message.name,
            message.data,
            message.user_id,
            ts,
            durable=True,
            sensitive=message.sensitive,
        )
        pending.outgoing.append(event.encoded)
        pending.is_event.append(True)
        assert event.stored is not None
        pending.to_store.append(event.stored)
        pending.replies.append((message.reply, event.seq))

    async def _join(self, message: JoinSession) -> None:
        peer = message.peer
        if peer.closed:
            self._answered(message)
            return
        replay = self._log.replay(message.since, has_store=True)
        stored: list[StoredEvent] = []
        after, until = replay.store_after, replay.store_until
        if after is not None and until is not None:
            wanted = until - after
            if wanted > self._config.replay_limit:
                # Too far behind to catch up by replay: say so rather than skip events.
                replay = attrs.evolve(replay, reset=True)
            else:
                stored = await self._store.read_since(self.session_id, after, wanted)
                if not stored or stored[0].seq != after + 1 or len(stored) < wanted:
                    replay = attrs.evolve(replay, reset=True)  # trimmed meanwhile
                    stored = []
        if peer.id in self._members:
            # A repeated join is a resume request on a live membership. Taken out only
            # now: had the store read failed, the member is still told `restart`.
            self._members.pop(peer.id)
            self._local.pop(peer.id, None)
        self._members[peer.id] = peer
        if not getattr(peer, "remote", False):
            self._local[peer.id] = peer
        peer.send(
            wire.joined(
                self.session_id,
                self._log.seq,
                self._roster.records(),
                self._roster.states(),
                message.ref,
            )
        )
        self._answered(message)
        if replay.reset:
            peer.send(wire.reset(self.session_id, self._log.seq, self._log.first_retained))
        else:
            encoded = [
                encode(wire.event(e.session_id, e.seq, e.name, e.data, e.user_id, e.ts))
                for e in stored
            ]
            encoded.extend(e.encoded for e in replay.from_memory)
            for start in range(0, len(encoded), REPLAY_CHUNK):
                peer.send_shared(SharedFrame(encode_batch(encoded[start : start + REPLAY_CHUNK])))
        await self._post_presence(peer.id, Track(peer.user_id, peer.name))

    def _answered(self, message: JoinSession) -> None:
        # Joins are handled in batch order: the one answered is the oldest unanswered.
        if self._joins and self._joins[0] is message:
            self._joins.popleft()

    def _refuse_joins(self, messages: Iterable[object]) -> None:
        refuse_joins(self.session_id, messages)

    async def _leave(self, message: LeaveSession) -> None:
        self._local.pop(message.peer.id, None)
        if self._members.pop(message.peer.id, None) is None:
            if message.reply:
                message.peer.send(
                    wire.error(
                        ErrorCode.NOT_JOINED,
                        "not a member of this session",
                        message.ref,
                        session_id=self.session_id,
                    )
                )
            return
        await self._post_presence(message.peer.id, Untrack())
        if message.reply:
            message.peer.send(wire.left(self.session_id, message.ref))

    def _presence(self, message: PresenceChanged, pending: _Pending) -> None:
        for out in self._roster.broadcast(self.session_id, message):
            pending.add(encode(out))

    async def _flush(self, pending: _Pending) -> None:
        if pending.to_store:
            try:
                await self._store.append(pending.to_store)
            except SeqConflict:
                raise  # another writer moved the head: crash and rehydrate from the store
            except (StoreError, DatabaseError) as exc:  # nothing of this batch was written
                logger.warning("session %s: write failed, batch refused: %s", self.session_id, exc)
                self._log.forget_after(pending.to_store[0].seq - 1)
                for peer, _, ref in pending.acks:
                    peer.send(
                        wire.error(
                            ErrorCode.INTERNAL,
                            "event not stored; retry",
                            ref,
                            session_id=self.session_id,
                        )
                    )
                for reply, _ in pending.replies:
                    _answer(reply, exc)
                pending.drop_events()
            else:
                self._stored_since_trim += len(pending.to_store)
        if pending.outgoing:
            frame = SharedFrame(encode_batch(pending.outgoing))
            gone = []
            for peer in self._local.values():
                if peer.closed:
                    gone.append(peer)
                else:
                    peer.send_shared(frame)
            metrics.FRAMES_FLUSHED.inc()
            metrics.EVENTS_PER_FRAME.observe(len(pending.outgoing))
            metrics.FANOUT.inc(len(self._local) - len(gone))
            if self._on_frame is not None:
                self._on_frame(frame.payload)
            if pending.published_at:  # publish-to-delivery: handed to every member's outbox
                now = trio.current_time()
                for enqueued_at in pending.published_at:
                    metrics.PUBLISH.observe(now - enqueued_at)
            for peer in gone:  # a socket died without its leave arriving yet
                await self._leave(LeaveSession(peer, None, reply=False))
        for peer, seq, ref in pending.acks:
            if ref is not None:
                peer.send(wire.ack(self.session_id, seq, ref))
        for reply, seq in pending.replies:
            _answer(reply, seq)
        if self._stored_since_trim >= self._config.trim_every:
            await self._apply_retention()

    async def _sync_presence(self) -> None:
        """Tell a restarted (or unreachable until now) presence actor exactly who the members are.

        Each with the state members were last shown for its user, so a member who
        never updates again keeps it. Members whose socket is closed are left out:
        their leave is on its way.
        """
        members = {
            peer.id: Track(peer.user_id, peer.name, self._roster.state(peer.user_id))
            for peer in self._members.values()
            if not peer.closed
        }
        if await self._deliver_presence(SYNC_KEY, Sync(members)) and self._presence_lost:
            self._presence_lost = False
            logger.info("session %s: presence reachable again, re-synced", self.session_id)

    async def _post_presence(self, conn_id: str, message: Track | Untrack | Sync) -> None:
        if not self._presence_lost:
            await self._deliver_presence(conn_id, message)
        elif self._members:
            # Presence missed earlier Tracks or Untracks: one message on top would leave
            # it wrong. A Sync of the members (who already reflect this one) makes it exact.
            await self._sync_presence()
        # else: nobody to track, so no presence actor to spawn; a join re-syncs.

    async def _deliver_presence(self, key: str, message: Track | Untrack | Sync) -> bool:
        """Post to the presence actor, spawning it if needed; False if it cannot be reached.

        Presence is secondary to the event stream: a failed spawn (the ``presence``
        supervisor gave up and awaits its restart, or the node is stopping) must not
        crash this actor, which would drop every member. Log and count once per
        outage; the next batch, join or leave re-syncs presence (``_presence_lost``).
        """
        for _ in range(3):  # the presence actor may passivate between lookup and post
            try:
                mailbox = await self._presence_mailbox()
            except SpawnFailed as exc:
                self._lose_presence(str(exc))
                return False
            try:
                mailbox.post(key, message)
                return True
            except MailboxClosed:
                continue
        self._lose_presence("its mailbox kept closing")
        return False

    def _lose_presence(self, why: str) -> None:
        self._presence_retry_at = trio.current_time() + PRESENCE_RETRY
        if not self._presence_lost:
            self._presence_lost = True
            metrics.PRESENCE_UNREACHABLE.inc()
            logger.warning(
                "session %s: presence unreachable, events go on without it: %s",
                self.session_id,
                why,
            )

    def _abandon_members(self, reason: str) -> None:
        for peer in self._members.values():
            if not peer.closed:  # a closed one (e.g. 1001 at shutdown) needs no word
                peer.session_lost(self.session_id, reason)
        self._members.clear()
        self._local.clear()
        # They left without a leave each: presence drops them all at once. Members who
        # rejoin (told `restart`, they do) are tracked anew; the others are no ghosts.
        # Posted now, before any rejoin can be, so every rejoin's Track comes after it.
        mailbox = self._presence_if_live()
        if mailbox is not None:
            try:
                mailbox.post(SYNC_KEY, Sync({}))
            except MailboxClosed:
                pass  # passivating: it holds nobody

    def status(self) -> dict[str, Any]:
        return {"members": len(self._members), "seq": self._log.seq}


def refuse_joins(session_id: str, messages: Iterable[object]) -> None:
    """Answer joins that no session actor will handle: the actor stopped first.

    The joins it took from its mailbox but never got to, and — when it is gone for
    good (its supervisor gave up) — those still queued (``ActorKind.on_orphaned``).
    The dispatcher counted each connection as joined when it queued the join;
    ``join_failed`` undoes that and answers with an ``error`` carrying the ref.
    """
    for message in messages:
        if isinstance(message, JoinSession) and not message.peer.closed:
            message.peer.join_failed(session_id, message.ref)


def answer_orphaned(session_id: str, messages: list[object]) -> None:
    """Answer the requests left in the mailbox of a session actor gone for good.

    ``ActorKind.on_orphaned``: its supervisor gave up, nobody reads these. Joins are
    refused (:func:`refuse_joins`); a server-side append and a participants question
    get :class:`OwnerUnavailable`, which their callers already report as unavailable
    (the participants API's 503, a comment's ``overloaded``) instead of waiting out
    their own limits, or an empty list passing for "nobody is there". Publishes and
    leaves are not answered here: the actor's own ``run`` told its members
    ``session:left``, and a client takes its unacknowledged publishes as lost.
    """
    refuse_joins(session_id, messages)
    answer_requests(session_id, messages, "stopped before handling")


def answer_requests(session_id: str, messages: Iterable[object], when: str) -> None:
    """Answer the server-side appends and participants questions among ``messages``
    with :class:`OwnerUnavailable`: their session actor stopped ``when`` them.

    One already answered keeps its answer (a reply channel holds one; a second
    answer is never read). An append cut off after its batch was stored may be
    in the stream even so: the caller's retry is at-least-once, as after any
    ``DatabaseUnavailable``.
    """
    gone = OwnerUnavailable(f"session {session_id} {when} the request; retry")
    for message in messages:
        if isinstance(message, AppendEvent | GetParticipants):
            _answer(message.reply, gone)


def _answer(reply: trio.MemorySendChannel[Any], value: object) -> None:
    try:
        reply.send_nowait(value)
    except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
        pass  # the asker gave up waiting


@attrs.define
class _Pending:
    """What one batch produced: messages to broadcast, events to store, acks to send."""

    outgoing: list[bytes] = attrs.field(factory=list)
    is_event: list[bool] = attrs.field(factory=list)
    to_store: list[StoredEvent] = attrs.field(factory=list)
    acks: list[tuple[Peer, int, Any]] = attrs.field(factory=list)
    replies: list[tuple[trio.MemorySendChannel[int | Exception], int]] = attrs.field(factory=list)
    published_at: list[float] = attrs.field(factory=list)  # enqueue times, for metrics

    def add(self, encoded: bytes) -> None:
        self.outgoing.append(encoded)
        self.is_event.append(False)

    def drop_events(self) -> None:
        self.outgoing = [m for m, ev in zip(self.outgoing, self.is_event, strict=True) if not ev]
        self.is_event = [False] * len(self.outgoing)
        self.to_store.clear()
        self.acks.clear()
        self.replies.clear()
        self.published_at.clear()


__all__ = ["RetainedEvent", "SessionActor", "SessionConfig", "answer_orphaned", "refuse_joins"]
