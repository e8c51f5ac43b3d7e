"""RemotePeer: a member on another node, as the owner's SessionActor sees it.

It satisfies the actors' ``Peer`` protocol by publishing to the member's node
channel, so the session actor fans out to local and remote members alike.
Every envelope names the owner that sent it: the member's node takes replies
only from the owner it follows.
"""

from __future__ import annotations

from typing import Any

from runtime.cluster.bus import ClusterBus, envelope
from runtime.protocol.codec import encode
from runtime.protocol.frames import SharedFrame


class RemotePeer:
    """A member connected to another node, as the owner's SessionActor sees it."""

    remote = True

    def __init__(
        self, bus: ClusterBus, node: str, conn_id: str, user_id: str, name: str, owner: str
    ) -> None:
        self._bus = bus
        self._channel = bus.name(f"node:{node}")
        self.node = node
        self.owner = owner  # this node: the member's node takes replies only from its owner
        self.id = conn_id
        self.user_id = user_id
        self.name = name
        self.closed = False
        self.joined: set[str] = set()  # sessions (owned here) this member is in

    def send(self, message: dict[str, Any]) -> None:
        header: dict[str, object] = {"t": "msg", "c": self.id, "o": self.owner}
        self._bus.publish(self._channel, envelope(header, encode(message)))

    def send_shared(self, frame: SharedFrame) -> None:
        header: dict[str, object] = {"t": "frame", "c": self.id, "o": self.owner}
        self._bus.publish(self._channel, envelope(header, frame.payload))

    def session_lost(self, session_id: str, reason: str) -> None:
        header: dict[str, object] = {
            "t": "lost",
            "c": self.id,
            "s": session_id,
            "r": reason,
            "o": self.owner,
        }
        self._bus.publish(self._channel, envelope(header))

    def join_failed(self, session_id: str, ref: Any) -> None:
        # The member's node answers the join and stops counting the session (like "lost").
        self.joined.discard(session_id)
        header: dict[str, object] = {
            "t": "refused",
            "c": self.id,
            "s": session_id,
            "f": ref,
            "o": self.owner,
        }
        self._bus.publish(self._channel, envelope(header))
