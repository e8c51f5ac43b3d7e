"""Session and membership cache invalidation across the cluster.

A change made through any node (a member added or removed, a session's
metadata changed or archived) is published on one channel; every other node
drops its cached entries and, for a membership change, re-validates its live
connections through the same path as a local change (``node.member_changed``
→ ``dispatcher.revalidate``); an archived session's members leave everywhere.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from runtime.cluster.bus import ClusterBus, envelope, open_envelope

if TYPE_CHECKING:
    from runtime.node import TandemNode


class Invalidation:
    def __init__(self, node: TandemNode, bus: ClusterBus) -> None:
        self._node = node
        self._bus = bus
        self.channel = bus.name("invalidate")
        node.sessions.on_member_change.append(self._member_changed_here)
        node.sessions.on_session_change.append(self._session_changed_here)

    async def start(self) -> None:
        await self._bus.listen(self.channel, self._received)

    def _member_changed_here(self, session_id: str, user_id: str) -> None:
        self._publish({"k": "member", "s": session_id, "u": user_id})

    def _session_changed_here(self, session_id: str) -> None:
        self._publish({"k": "session", "s": session_id})

    def _publish(self, header: dict[str, object]) -> None:
        header["n"] = self._node.node_id
        self._bus.publish(self.channel, envelope(header))

    def _received(self, data: bytes) -> None:
        header, _ = open_envelope(data)
        if header["n"] == self._node.node_id:
            return
        session_id = str(header["s"])
        sessions = self._node.sessions
        if header["k"] == "member":
            user_id = str(header["u"])
            sessions.roles.drop((session_id, user_id))
            self._node.member_changed(session_id, user_id)
        else:
            sessions.forget_session(session_id)
            if any(session_id in conn.joined for conn in self._node.connections.values()):
                assert self._node._nursery is not None
                self._node._nursery.start_soon(self._kick_if_deleted, session_id)

    async def _kick_if_deleted(self, session_id: str) -> None:
        with trio.move_on_after(self._node.settings.mailbox_timeout):
            if await self._node.sessions.is_deleted(session_id):
                await self._node.kick_deleted(session_id)
