"""Relay: a session's stand-in on a node that does not own it.

It subscribes to the owner's frames for the session (``session:<S>``) and writes
them to this node's members, and forwards their requests (join, leave, publish,
presence, questions) to the owner's node channel. Frames carry the owner's node
id: a frame from anyone else means the lease moved, and the relay makes its
members resume instead of passing on a stream it does not follow
(docs/architecture.md, "Cluster mode").
"""

from __future__ import annotations

import logging
import secrets
from typing import TYPE_CHECKING, Any

import trio

from actors.messages import (
    AppendEvent,
    GetParticipants,
    JoinSession,
    LeaveSession,
    PublishEvent,
    SessionMessage,
)
from runtime.actor import Fail, InjectedFailure
from runtime.cluster.bus import open_envelope
from runtime.cluster.remote_peer import RemotePeer
from runtime.cluster.requests import ClusterRequestError, OwnerUnavailable
from runtime.gateways.redis import RedisUnavailable
from runtime.mailbox import Mailbox
from runtime.protocol.frames import SharedFrame
from runtime.transport.connection import ClientConnection

if TYPE_CHECKING:
    from runtime.cluster.sessions import ClusterSessions

logger = logging.getLogger(__name__)


class Relay:
    """Forwards local members' requests to the owner and writes its frames to them."""

    def __init__(
        self,
        cluster: ClusterSessions,
        session_id: str,
        mailbox: Mailbox[SessionMessage],
        owner: str | None,
    ) -> None:
        self.cluster = cluster
        self.session_id = session_id
        self.mailbox = mailbox
        self.owner = owner
        self.members: dict[str, ClientConnection] = {}
        # Joins forwarded, not answered yet: if the owner dies now, they must hear it too
        # (and if the relay stops, they are refused with their ref).
        self.joining: dict[str, JoinSession] = {}
        self.token = secrets.token_hex(4)
        self.stale = False  # a frame from another owner arrived: the lease moved
        self._waiting = trio.CancelScope()  # the wait for the next message
        self._questions: trio.Nursery  # set in run()

    def serves(self, conn_id: str) -> bool:
        """Whether ``conn_id`` is a member of, or a joiner forwarded by, this relay."""
        return conn_id in self.joining or conn_id in self.members

    def _frame(self, data: bytes) -> None:
        header, payload = open_envelope(data)
        if header.get("o") != self.owner:
            # A new owner took over before our lease check noticed (its first seq may
            # follow one the dead owner stored but never broadcast): passing its frames
            # on would skip that seq. Members resume with `since` instead.
            self.stale = True
            self._abandon("restart")
            self._waiting.cancel()  # stop waiting for the next message: it is not ours
            return
        frame = SharedFrame(payload)
        for conn in list(self.members.values()):
            if conn.closed:
                self.members.pop(conn.id, None)
            else:
                conn.send_shared(frame)

    def _abandon(self, reason: str) -> None:
        joining = {conn_id: join.peer for conn_id, join in self.joining.items()}
        for conn in {**joining, **self.members}.values():
            conn.session_lost(self.session_id, reason)
        self.members.clear()
        self.joining.clear()

    def _stopped(self) -> None:
        """The relay crashed or was cancelled: nobody may stay joined through it.

        As a session actor does when it stops (``SessionActor.run``): members are
        told ``restart`` (they rejoin, through this relay's successor), joins it
        forwarded and was waiting on are refused with their ref. The owner is told
        they left (a ``leave`` each, published without blocking, after any join it
        forwarded): it would otherwise keep them tracked in presence as ghosts, since
        their node is alive. Non-blocking calls only: this runs on cancellation.
        """
        sid = self.session_id
        gone = [*self.joining, *self.members]
        for join in self.joining.values():
            if not join.peer.closed:
                join.peer.join_failed(sid, join.ref)
        for conn in self.members.values():
            if not conn.closed:  # a closed one (e.g. 1001 at shutdown) needs no word
                conn.session_lost(sid, "restart")
        self.joining.clear()
        self.members.clear()
        self._tell_owner_they_left(gone)

    def _tell_owner_they_left(self, conn_ids: list[str]) -> None:
        """A ``leave`` each to the owner (published without blocking, after any join
        forwarded for them, so the owner sees join then leave)."""
        if self.owner is None:
            return
        sid = self.session_id
        for conn_id in dict.fromkeys(conn_ids):
            try:
                self.cluster.forward(
                    self.owner, {"op": "leave", "s": sid, "c": conn_id, "ref": None, "reply": False}
                )
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return  # the node's bus is gone (shutdown): the node lease drops them

    async def run(self, task_status: trio.TaskStatus[None]) -> bool:
        """True when the owner went away (try to take over), False when done."""
        cluster = self.cluster
        channel = cluster.session_channel(self.session_id)
        cluster.relays[self.session_id] = self
        cluster.bus.on_reconnect.append(self._reconnected)
        try:
            await cluster.bus.listen(channel, self._frame)
            async with trio.open_nursery() as nursery:
                self._questions = nursery  # questions to the owner, answered while we relay
                try:
                    return await self._relay(task_status)
                finally:
                    nursery.cancel_scope.cancel()  # pending questions answer "unavailable"
        except BaseException:
            # Crash or cancellation (the sessions supervisor escalated): re-raised.
            self._stopped()
            raise
        finally:
            cluster.bus.on_reconnect.remove(self._reconnected)
            if cluster.relays.get(self.session_id) is self:
                del cluster.relays[self.session_id]
            with trio.CancelScope(shield=True), trio.move_on_after(1.0):
                await cluster.bus.unlisten(channel)

    async def _relay(self, task_status: trio.TaskStatus[None]) -> bool:
        cluster = self.cluster
        task_status.started()
        check = cluster.lease_ms / 3000
        idle_since = trio.current_time()
        # The owner is checked every `check` seconds however busy the relay is: a relay
        # that looked only when idle never noticed, under steady traffic, that the lease
        # had become its own node's, and bounced every forwarded join (a livelock).
        next_check = idle_since + check
        while True:
            if self.stale:
                return True  # take over or follow the new owner, before the next message
            message: SessionMessage | None = None
            with trio.move_on_at(next_check) as self._waiting:
                try:
                    message = await self.mailbox.receive()
                except trio.EndOfChannel:
                    self._abandon("shutdown")
                    return False
            if message is not None:
                idle_since = trio.current_time()
                self._handle(message)
                if trio.current_time() < next_check:
                    continue
            next_check = trio.current_time() + check
            try:
                owner = await cluster.redis.get(cluster.owner_key(self.session_id))
            except RedisUnavailable:
                continue  # cannot tell: keep relaying; the reconnect resynchronises
            if self.stale or owner is None or owner.decode() != self.owner:
                self._abandon("restart")
                return True
            if (
                not self.members
                and self.mailbox.depth == 0
                and not self._questions.child_tasks
                and trio.current_time() - idle_since >= cluster.node.settings.passivate_after
            ):
                self.mailbox.close()
                return False

    def _reconnected(self) -> None:
        # Frames published while the subscription was down are lost: members resume.
        # The owner is the same and alive, so it must hear that they left: a member who
        # does not rejoin would otherwise stay tracked there (a presence ghost), since
        # ``session_lost`` took the session out of its connection's joined set and its
        # socket's close sends no leave for it.
        gone = [*self.joining, *self.members]
        self._abandon("restart")
        self._tell_owner_they_left(gone)

    def _handle(self, message: SessionMessage) -> None:
        assert self.owner is not None
        sid = self.session_id
        peer = getattr(message, "peer", None)
        if isinstance(peer, RemotePeer):
            # Forwarded to this node when it owned the session; it has lost it since.
            # Forwarding again would make this node the member's home (its replies
            # would be lost): tell the member instead, so it rejoins from its own node.
            if not isinstance(message, LeaveSession):
                peer.session_lost(sid, "restart")
            return
        if isinstance(message, JoinSession):
            conn = message.peer
            self.members.pop(conn.id, None)  # joined again: live once the owner answers
            self.joining[conn.id] = message
            self.cluster.forward(
                self.owner,
                {
                    "op": "join",
                    "s": sid,
                    "c": conn.id,
                    "u": conn.user_id,
                    "nm": conn.name,
                    "since": message.since,
                    "ref": message.ref,
                },
            )
        elif isinstance(message, LeaveSession):
            self.members.pop(message.peer.id, None)
            self.joining.pop(message.peer.id, None)
            self.cluster.forward(
                self.owner,
                {
                    "op": "leave",
                    "s": sid,
                    "c": message.peer.id,
                    "ref": message.ref,
                    "reply": message.reply,
                },
            )
        elif isinstance(message, PublishEvent):
            self.cluster.forward(
                self.owner,
                {
                    "op": "publish",
                    "s": sid,
                    "c": message.peer.id,
                    "name": message.name,
                    "data": message.data,
                    "durable": message.durable,
                    "ref": message.ref,
                    "sensitive": message.sensitive,
                },
            )
        elif isinstance(message, GetParticipants):
            self._questions.start_soon(
                self._ask_owner, {"op": "participants", "s": sid}, message.reply
            )
        elif isinstance(message, AppendEvent):
            header = {
                "op": "append",
                "s": sid,
                "name": message.name,
                "data": message.data,
                "u": message.user_id,
                "sensitive": message.sensitive,
            }
            self._questions.start_soon(self._ask_owner, header, message.reply)
        elif isinstance(message, Fail):
            raise InjectedFailure(message.reason)

    async def _ask_owner(self, header: dict[str, Any], reply: trio.MemorySendChannel[Any]) -> None:
        """Ask the owner; hand its answer (seq, participants) or the failure to ``reply``.

        Whoever waits on ``reply`` always hears back: if this relay stops first
        (the nursery is cancelled), it is told the owner is unavailable.
        """
        assert self.owner is not None
        answer: object = OwnerUnavailable(f"relay for {self.session_id} stopped")
        try:
            response = await self.cluster.ask(self.owner, header)
            answer = response["v"] if header["op"] == "participants" else int(response["seq"])
        except ClusterRequestError as exc:
            answer = exc
        finally:
            try:
                reply.send_nowait(answer)
            except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # the asker gave up waiting
