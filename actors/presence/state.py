"""Presence of one session as a pure structure (after Phoenix.Presence).

State is kept per connection and merged per user: two tabs of one user are one
participant (no duplicates), and the user leaves only when their last
connection does (no ghosts, given that every connection is eventually
untracked — the transport guarantees that with heartbeats). Every operation
returns the changes it caused, which the actor broadcasts.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attrs

JSON = Any


@attrs.define
class _Conn:
    user_id: str
    state: JSON
    updated_at: float


@attrs.define
class _User:
    name: str
    connections: list[str]  # connection ids, oldest first
    state: JSON  # the most recently updated connection's state
    active_at: float
    away: bool = False


@attrs.frozen
class Changes:
    joined: list[str] = attrs.field(factory=list)  # user ids that became present
    left: list[str] = attrs.field(factory=list)  # user ids that are gone
    # user ids whose state, status, connection count or name changed
    updated: list[str] = attrs.field(factory=list)

    def __bool__(self) -> bool:
        return bool(self.joined or self.left or self.updated)


def coalesce(steps: Iterable[Changes]) -> Changes:
    """The changes of several operations, in order, as one broadcast.

    What members must be told is the net effect: a user who came and went
    unseen is nobody's business; a user who left and came back is, to members
    who never saw the leave, still the same participant, merely changed.
    """
    joined: dict[str, None] = {}  # dicts: ordered sets
    left: dict[str, None] = {}
    updated: dict[str, None] = {}
    for changes in steps:
        for user_id in changes.joined:
            if user_id in left:  # left and came back within one batch
                del left[user_id]
                updated[user_id] = None
            else:
                joined[user_id] = None
        for user_id in changes.left:
            updated.pop(user_id, None)
            if user_id in joined:  # came and went within one batch: nobody saw it
                del joined[user_id]
            else:
                left[user_id] = None
        for user_id in changes.updated:
            if user_id not in joined:  # a joiner's record is sent whole anyway
                updated[user_id] = None
    return Changes(joined=list(joined), left=list(left), updated=list(updated))


@attrs.define
class PresenceState:
    """Who is in a session and what their presence state is."""

    away_after: float = 60.0
    _conns: dict[str, _Conn] = attrs.field(factory=dict)
    _users: dict[str, _User] = attrs.field(factory=dict)

    def track(self, conn_id: str, user_id: str, name: str, state: JSON, now: float) -> Changes:
        """A connection joins. Re-tracking a known connection only updates it."""
        if conn_id in self._conns:  # a resume on a live connection keeps its state
            return self.update(conn_id, state, now) if state is not None else Changes()
        self._conns[conn_id] = _Conn(user_id, state, now)
        user = self._users.get(user_id)
        if user is None:
            self._users[user_id] = _User(name, [conn_id], state, now)
            return Changes(joined=[user_id])
        user.connections.append(conn_id)
        user.name = name
        user.away = False
        user.active_at = now
        if state is not None:
            user.state = state
        # Always a change: the connection count went up (and the status may be active again).
        return Changes(updated=[user_id])

    def update(self, conn_id: str, state: JSON, now: float) -> Changes:
        """A connection's new state becomes its user's state (last writer wins)."""
        conn = self._conns.get(conn_id)
        if conn is None:
            return Changes()
        conn.state = state
        conn.updated_at = now
        user = self._users[conn.user_id]
        user.state = state
        user.active_at = now
        user.away = False
        return Changes(updated=[conn.user_id])

    def untrack(self, conn_id: str) -> Changes:
        """A connection leaves; its user leaves with their last connection."""
        conn = self._conns.pop(conn_id, None)
        if conn is None:
            return Changes()
        user = self._users[conn.user_id]
        user.connections.remove(conn_id)
        if not user.connections:
            del self._users[conn.user_id]
            return Changes(left=[conn.user_id])
        # Fall back to the freshest remaining connection's state.
        freshest = max((self._conns[c] for c in user.connections), key=lambda c: c.updated_at)
        user.state = freshest.state
        # Always a change: the connection count went down (members show it).
        return Changes(updated=[conn.user_id])

    def sync(self, members: Iterable[tuple[str, str, str, JSON]], now: float) -> Changes:
        """Exactly ``members`` (conn id, user id, name, state) are connected now.

        Every other connection is untracked; a member not tracked yet is tracked
        with the given state; a tracked one keeps its own (it is at least as new).
        """
        wanted = {conn_id: (user_id, name, state) for conn_id, user_id, name, state in members}
        steps = [self.untrack(conn_id) for conn_id in list(self._conns) if conn_id not in wanted]
        steps.extend(
            self.track(conn_id, user_id, name, state, now)
            for conn_id, (user_id, name, state) in wanted.items()
            if conn_id not in self._conns
        )
        return coalesce(steps)

    def mark_away(self, now: float) -> Changes:
        """Users with no activity for ``away_after`` seconds become away."""
        changed = []
        for user_id, user in self._users.items():
            if not user.away and now - user.active_at >= self.away_after:
                user.away = True
                changed.append(user_id)
        return Changes(updated=changed)

    def participant(self, user_id: str) -> JSON:
        user = self._users[user_id]
        return {
            "userId": user_id,
            "name": user.name,
            "state": user.state,
            "status": "away" if user.away else "active",
            "connections": len(user.connections),
        }

    def participants(self) -> list[JSON]:
        return [self.participant(user_id) for user_id in self._users]

    def user_ids(self) -> list[str]:
        return list(self._users)

    def __len__(self) -> int:
        return len(self._users)

    def connection_count(self) -> int:
        return len(self._conns)
