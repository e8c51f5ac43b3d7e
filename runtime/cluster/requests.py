"""Request/reply between nodes: ask a session's owner and wait, bounded, for its answer.

Most cluster traffic is one-way (a relay forwards, the owner answers the
member's connection directly). Two questions need an answer back to the
asking node itself: who is present (``GetParticipants``) and "append this
event, which seq did it get?" (``AppendEvent``). The asker registers a request
id, publishes the request on the owner's node channel, and waits (bounded by
the caller) for a ``rep`` envelope with that id on its own node channel; the
entry is removed however the wait ends (answer, timeout, cancellation), so
nothing leaks when an owner dies mid-question. A late answer finds no entry
and is dropped.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

import trio

from runtime.cluster.bus import ClusterBus, envelope

logger = logging.getLogger(__name__)


class ClusterRequestError(Exception):
    """A question to another node got no usable answer."""


class OwnerUnavailable(ClusterRequestError):
    """The session's owner did not answer in time (it died, or Redis is cut off)."""


class OwnerRefused(ClusterRequestError):
    """The owner answered with an error (the store refused the write, say)."""


class Requests:
    """The pending questions of this node, by request id."""

    def __init__(self, bus: ClusterBus, node_id: str) -> None:
        self._bus = bus
        self._node_id = node_id
        self._pending: dict[str, trio.MemorySendChannel[dict[str, Any]]] = {}

    @property
    def pending(self) -> int:
        """Questions waiting for an answer now (for /status and tests)."""
        return len(self._pending)

    async def ask(self, node: str, header: dict[str, Any]) -> dict[str, Any]:
        """Send ``header`` to ``node`` as a request and wait for its reply.

        Unbounded here: the caller bounds the wait (``trio.move_on_after``)
        and knows what to say when it ran out; the entry goes either way.
        """
        request_id = secrets.token_hex(8)
        send, receive = trio.open_memory_channel[dict[str, Any]](1)
        self._pending[request_id] = send
        try:
            self._bus.publish(
                self._bus.name(f"node:{node}"),
                envelope({**header, "t": "req", "n": self._node_id, "id": request_id}),
            )
            reply = await receive.receive()
        finally:
            del self._pending[request_id]
        if not reply.get("ok"):
            raise OwnerRefused(str(reply.get("e", "refused")))
        return reply

    def answer(self, node: str, request_id: str, body: dict[str, Any]) -> None:
        """Reply to a request of ``node`` (``body`` has ``ok`` and a value or ``e``)."""
        self._bus.publish(
            self._bus.name(f"node:{node}"), envelope({**body, "t": "rep", "id": request_id})
        )

    def received(self, header: dict[str, Any]) -> None:
        """A ``rep`` envelope arrived on this node's channel."""
        send = self._pending.get(str(header["id"]))
        if send is None:
            return  # the asker gave up (timeout) or the reply is a duplicate
        try:
            send.send_nowait(header)
        except trio.WouldBlock:
            logger.warning("cluster: second reply to request %s dropped", header["id"])
