"""Cross-node sessions: one owner per session by lease; relays elsewhere.

The node holding ``owner:<S>`` (``SET NX PX session_lease``, renewed every
third of it) runs the authoritative SessionActor: seqs, persistence, presence,
fan-out. It publishes every flushed frame on ``session:<S>``. Any other node
with members in S runs a :class:`~runtime.cluster.relay.Relay` for S: it subscribes to that channel
first, forwards its clients' requests to the owner's node channel, and writes
the owner's frames to its members. The owner answers a remote member (join
reply, replay, acks, errors) on the member's node channel. A node reads all
its channels on ONE Redis connection, so replies and frames arrive in the
order the owner published them: a join's replay and the live stream meet
without gap or duplicate, exactly as on one node.

A relay that finds the lease gone takes it and becomes the owner (rehydrating
from the store: its head is authoritative, no seq is reused); its members are
told ``session:left`` with reason ``restart`` and rejoin with ``since``.

Every node also holds a node lease, ``alive:<node>`` (``SET PX node_lease``,
renewed every third of it; ``node_lease`` is half of ``presence_timeout``).
The owner knows which node each remote member lives on; when that node's
lease is gone, the owner makes those members leave (presence untracks them),
so a dead node's users leave presence everywhere within ``presence_timeout``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import orjson
import trio

from actors.messages import (
    AppendEvent,
    JoinSession,
    LeaveSession,
    PublishEvent,
    SessionMessage,
    SetPresence,
)
from runtime.cluster.bus import ClusterBus, envelope, open_envelope
from runtime.cluster.relay import Relay
from runtime.cluster.remote_peer import RemotePeer
from runtime.cluster.requests import ClusterRequestError, OwnerUnavailable, Requests
from runtime.gateways.redis import RedisGateway, RedisUnavailable
from runtime.mailbox import Mailbox, MailboxClosed
from runtime.protocol.frames import SharedFrame
from runtime.transport.connection import ClientConnection

if TYPE_CHECKING:
    from runtime.node import TandemNode

logger = logging.getLogger(__name__)

RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class ClusterSessions:
    """Owner leases, relays and the request/reply routing of one node."""

    def __init__(self, node: TandemNode, redis: RedisGateway, bus: ClusterBus) -> None:
        self.node = node
        self.redis = redis
        self.bus = bus
        self.lease_ms = int(node.settings.session_lease * 1000)
        self.node_lease_ms = max(int(node.settings.presence_timeout * 500), 300)
        self.relays: dict[str, Relay] = {}
        self.peers: dict[str, RemotePeer] = {}
        self.channel = bus.name(f"node:{node.node_id}")
        self._requests, self._incoming = trio.open_memory_channel[dict[str, Any]](65536)
        # Questions to an owner (participants, server-side appends) wait this long:
        # the owner may wait mailbox_timeout for room, then for the store's write.
        self.request_timeout = 2 * node.settings.mailbox_timeout
        self.questions = Requests(bus, node.node_id)
        node.make_session_actor = self.make_actor
        node.presence_router = self.route_presence
        node.remote_participants = self.remote_participants
        node.request_timeout = self.request_timeout

    def owner_key(self, session_id: str) -> str:
        return self.bus.name(f"owner:{session_id}")

    def session_channel(self, session_id: str) -> str:
        return self.bus.name(f"session:{session_id}")

    def alive_key(self, node_id: str) -> str:
        return self.bus.name(f"alive:{node_id}")

    async def start(self) -> None:
        await self.bus.listen(self.channel, self._received)

    def make_actor(self, session_id: str, mailbox: Mailbox[SessionMessage]) -> ClusteredSession:
        return ClusteredSession(self, session_id, mailbox)

    # -- routing ------------------------------------------------------------------

    def forward(self, owner: str, header: dict[str, Any]) -> None:
        header["t"] = "req"
        header["n"] = self.node.node_id
        self.bus.publish(self.bus.name(f"node:{owner}"), envelope(header))

    def route_presence(self, session_id: str, conn: ClientConnection, update: SetPresence) -> bool:
        relay = self.relays.get(session_id)
        if relay is None or relay.owner is None:
            return False
        self.forward(
            relay.owner, {"op": "presence", "s": session_id, "c": conn.id, "st": update.state}
        )
        return True

    async def ask(self, owner: str, header: dict[str, Any]) -> dict[str, Any]:
        """A question to ``owner``'s node; its answer, or a ClusterRequestError."""
        with trio.move_on_after(self.request_timeout):
            return await self.questions.ask(owner, header)
        raise OwnerUnavailable(
            f"session owner {owner} did not answer within {self.request_timeout:g} s"
        )

    async def remote_participants(self, session_id: str) -> list[Any]:
        """Who is present in a session not live here: ask its owner, if it has one."""
        try:
            owner = await self.redis.get(self.owner_key(session_id))
        except RedisUnavailable as exc:
            raise OwnerUnavailable(f"cannot find the owner of {session_id}: {exc}") from exc
        if owner is None or owner.decode() == self.node.node_id:
            return []  # not live anywhere (or only just passivated here)
        reply = await self.ask(owner.decode(), {"op": "participants", "s": session_id})
        return list(reply["v"])

    def _received(self, data: bytes) -> None:
        header, payload = open_envelope(data)
        kind = header["t"]
        if kind == "rep":
            self.questions.received(header)
            return
        if kind == "req":
            try:
                self._requests.send_nowait(header)
            except trio.WouldBlock:
                logger.error("cluster: request queue full, request dropped")
            return
        conn = self.node.connections.get(str(header["c"]))
        if conn is None:
            return
        sender = header.get("o")
        if kind == "msg":
            message = orjson.loads(payload)
            if message.get("type") == "session:joined":
                relay = self.relays.get(message["sessionId"])
                if relay is None or relay.owner != sender:
                    # The answer of a node that no longer owns the session (to a join
                    # forwarded before the lease moved). Taking it would make the member
                    # live in the new owner's stream before that owner's replay: events
                    # between its `since` and the live frames would be skipped. The
                    # member's join is answered by the owner this relay follows.
                    return
                if not relay.serves(conn.id):
                    # A late answer to a join this relay did not forward: its predecessor
                    # stopped, refused the join and told the owner the member left.
                    return
                relay.joining.pop(conn.id, None)
                relay.members[conn.id] = conn  # live frames from here on
            conn.send(message)
        elif kind == "frame":
            # A join's replay (stored events, deduplicated): only for a member, or a
            # joiner, of a session this owner's relay here follows; not after a refusal.
            relays = self.relays.values()
            if any(relay.owner == sender and relay.serves(conn.id) for relay in relays):
                conn.send_shared(SharedFrame(payload))
        elif kind == "lost":
            session_id = str(header["s"])
            relay = self.relays.get(session_id)
            if relay is None or relay.owner != sender:
                return  # a former owner letting go: not the session this member is in now
            relay.members.pop(conn.id, None)
            relay.joining.pop(conn.id, None)
            conn.session_lost(session_id, str(header["r"]))
        elif kind == "refused":  # the owner's actor stopped before handling the join
            session_id = str(header["s"])
            relay = self.relays.get(session_id)
            if relay is None or relay.owner != sender:
                return  # a former owner: the join is answered by the one this relay follows
            relay.joining.pop(conn.id, None)
            ref = header.get("f")
            conn.join_failed(session_id, ref if isinstance(ref, str | int) else None)

    async def run_requests(self) -> None:
        """Requests from other nodes' relays, handled in arrival order.

        Answers that take time (an append waits for the store) are awaited in
        tasks of this nursery, so one slow write does not hold up the queue.
        """
        async with trio.open_nursery() as nursery:
            async for header in self._incoming:
                await self._request(header, nursery)

    async def _request(self, header: dict[str, Any], nursery: trio.Nursery) -> None:
        session_id = str(header["s"])
        op = header["op"]
        if op == "participants":
            nursery.start_soon(self._answer_participants, header)
            return
        if op == "append":
            await self._append(header, nursery)
            return
        conn_id = str(header["c"])
        if op == "join":
            peer = self.peers.get(conn_id)
            if peer is None or peer.closed:
                peer = RemotePeer(
                    self.bus,
                    str(header["n"]),
                    conn_id,
                    str(header["u"]),
                    str(header["nm"]),
                    self.node.node_id,
                )
                self.peers[conn_id] = peer
            peer.joined.add(session_id)
            message: object = JoinSession(peer, header.get("since"), header.get("ref"))
        elif op == "presence":
            # As for a local client: only to a live presence actor, never spawning one.
            self.node.post_presence_update(session_id, conn_id, SetPresence(header.get("st")))
            return
        else:
            peer = self.peers.get(conn_id)
            if peer is None:
                if op == "publish":
                    # Not a member here (dropped as on a dead node, or its join went to a
                    # previous owner): its ack would never come. Make it rejoin.
                    stranger = RemotePeer(
                        self.bus, str(header["n"]), conn_id, "", "", self.node.node_id
                    )
                    stranger.session_lost(session_id, "restart")
                return
            if op == "leave":
                peer.joined.discard(session_id)
                message = LeaveSession(peer, header.get("ref"), reply=bool(header["reply"]))
            else:
                message = PublishEvent(
                    peer,
                    str(header["name"]),
                    header.get("data"),
                    bool(header["durable"]),
                    header.get("ref"),
                    sensitive=bool(header.get("sensitive", False)),
                )
        with trio.move_on_after(self.node.settings.mailbox_timeout):
            try:
                await self.node.send_to_session(session_id, message)
            except Exception as exc:
                logger.warning("cluster: request for %s failed: %r", session_id, exc)

    async def _answer_participants(self, header: dict[str, Any]) -> None:
        node, request_id = str(header["n"]), str(header["id"])
        try:
            # Only this node's actor: if it is a relay now, the asker retries later.
            participants = await self.node.local_participants(str(header["s"]))
        except ClusterRequestError as exc:
            self.questions.answer(node, request_id, {"ok": False, "e": str(exc)})
        else:
            self.questions.answer(node, request_id, {"ok": True, "v": participants})

    async def _append(self, header: dict[str, Any], nursery: trio.Nursery) -> None:
        """Queue a relay's AppendEvent in arrival order; answer once it is durable."""
        node, request_id = str(header["n"]), str(header["id"])
        send, receive = trio.open_memory_channel[int | Exception](1)
        message = AppendEvent(
            str(header["name"]),
            header.get("data"),
            str(header["u"]),
            send,
            bool(header.get("sensitive", False)),
        )
        queued = False
        with trio.move_on_after(self.node.settings.mailbox_timeout):
            try:
                await self.node.send_to_session(str(header["s"]), message)
                queued = True
            except Exception as exc:
                self.questions.answer(node, request_id, {"ok": False, "e": repr(exc)})
                return
        if not queued:
            self.questions.answer(node, request_id, {"ok": False, "e": "owner overloaded"})
            return

        async def answer_when_durable() -> None:
            result: int | Exception = OwnerUnavailable("no answer from the session")
            with trio.move_on_after(self.request_timeout):
                result = await receive.receive()
            if isinstance(result, Exception):
                self.questions.answer(node, request_id, {"ok": False, "e": repr(result)})
            else:
                self.questions.answer(node, request_id, {"ok": True, "seq": result})

        nursery.start_soon(answer_when_durable)

    # -- node leases --------------------------------------------------------------

    async def heartbeat_once(self) -> None:
        key = self.alive_key(self.node.node_id)
        await self.redis.set(key, b"alive", px=self.node_lease_ms)

    async def run_heartbeat(self) -> None:
        """Keep this node's lease alive (the first renewal happened before start)."""
        while True:
            await trio.sleep(self.node_lease_ms / 3000)
            try:
                await self.heartbeat_once()
            except RedisUnavailable:
                continue

    async def run_node_watch(self) -> None:
        """Drop the remote members of nodes whose lease expired (they died)."""
        while True:
            await trio.sleep(self.node_lease_ms / 3000)
            health = self.redis.health()
            recent_error = health.last_error_age_s
            if not health.ok or (
                recent_error is not None and recent_error < self.node_lease_ms / 1000
            ):
                # Redis was out lately. Restarted empty, it has no lease at all until
                # every live node's next heartbeat: a missing lease means nothing yet.
                continue
            nodes = {peer.node for peer in self.peers.values()}
            for node_id in nodes:
                try:
                    alive = await self.redis.get(self.alive_key(node_id))
                except RedisUnavailable:
                    break  # cannot tell: drop nobody
                if alive is None:
                    await self.drop_node(node_id)

    async def drop_node(self, node_id: str) -> None:
        """Every member on ``node_id`` leaves the sessions owned here (its presence goes)."""
        gone = [peer for peer in self.peers.values() if peer.node == node_id]
        logger.warning("cluster: node %s lease expired; dropping %d members", node_id, len(gone))
        for peer in gone:
            del self.peers[peer.id]
            peer.closed = True
            for session_id in sorted(peer.joined):
                mailbox = self.node.registry.lookup(self.node.session_kind, session_id)
                if mailbox is None or session_id in self.relays:
                    continue  # not owned here (any more): nothing to leave, nobody to tell
                # If the node is alive after all (a long Redis outage), its member rejoins.
                peer.session_lost(session_id, "restart")
                with trio.move_on_after(self.node.settings.mailbox_timeout):
                    try:
                        await mailbox.send(LeaveSession(peer, None, reply=False))
                    except MailboxClosed:
                        pass
            peer.joined.clear()

    # -- session leases -----------------------------------------------------------

    async def acquire(self, session_id: str) -> str | None:
        """This node's id if it owns (or now took) the lease, else the owner's (None: unknown)."""
        me = self.node.node_id
        if await self.redis.set(self.owner_key(session_id), me, px=self.lease_ms, nx=True):
            return me
        owner = await self.redis.get(self.owner_key(session_id))
        return None if owner is None else owner.decode()

    async def renew(self, session_id: str) -> bool:
        result = await self.redis.eval(
            RENEW, [self.owner_key(session_id)], [self.node.node_id, self.lease_ms]
        )
        return bool(result)

    def disown(self, session_id: str) -> None:
        """This node stopped owning ``session_id``: its remote members are not ours now."""
        for conn_id, peer in list(self.peers.items()):
            peer.joined.discard(session_id)
            if not peer.joined:
                del self.peers[conn_id]

    async def release(self, session_id: str) -> None:
        try:
            await self.redis.eval(RELEASE, [self.owner_key(session_id)], [self.node.node_id])
        except RedisUnavailable:
            pass  # it expires


class ClusteredSession:
    """The registry's actor for a session in cluster mode: the owner, or a relay."""

    def __init__(
        self, cluster: ClusterSessions, session_id: str, mailbox: Mailbox[SessionMessage]
    ) -> None:
        self.cluster = cluster
        self.session_id = session_id
        self.mailbox = mailbox

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        status: trio.TaskStatus[None] = task_status
        backoff = 0.05
        while True:
            try:
                owner = await self.cluster.acquire(self.session_id)
            except RedisUnavailable:
                # Nobody can tell who owns the session until Redis is back; requests
                # wait in the mailbox (senders time out with `overloaded`) meanwhile.
                await trio.sleep(backoff)
                backoff = min(2 * backoff, 1.0)
                continue
            if owner == self.cluster.node.node_id:
                if not await self._own(status):
                    return  # passivated or shut down
                # The lease was lost (it expired, or Redis restarted empty): someone
                # else may own the session now. Keep reading this mailbox (its senders
                # wait on it) as that owner's relay, or take the lease again.
                status = trio.TASK_STATUS_IGNORED
                backoff = 0.05
                continue
            relay = Relay(self.cluster, self.session_id, self.mailbox, owner)
            if not await relay.run(status):
                return  # passivated or shut down
            status = trio.TASK_STATUS_IGNORED

    async def _own(self, task_status: trio.TaskStatus[None]) -> bool:
        """Run the authoritative actor while the lease holds: True if it was lost."""
        cluster = self.cluster
        channel = cluster.session_channel(self.session_id)
        me = cluster.node.node_id
        actor = cluster.node.local_session_actor(
            self.session_id,
            self.mailbox,
            # Tagged with the owner: a relay must not take frames from anyone else.
            on_frame=lambda p: cluster.bus.publish(channel, envelope({"o": me}, p)),
        )
        lost = False
        try:
            async with trio.open_nursery() as nursery:

                async def renew() -> None:
                    nonlocal lost
                    while True:
                        await trio.sleep(cluster.lease_ms / 3000)
                        try:
                            if await cluster.renew(self.session_id):
                                continue
                        except RedisUnavailable:
                            continue  # keep serving; the store's seq check guards a split
                        lost = True
                        nursery.cancel_scope.cancel()

                nursery.start_soon(renew)
                await actor.run(task_status=task_status)
                nursery.cancel_scope.cancel()
        finally:
            # A lost lease cancels the actor, which tells its members (`restart`) and
            # answers the joins it was handling itself (SessionActor.run).
            cluster.disown(self.session_id)
            with trio.CancelScope(shield=True), trio.move_on_after(1.0):
                await cluster.release(self.session_id)
        return lost
