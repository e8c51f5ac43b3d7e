"""Per-session order for comment changes: a lock, and turns for what follows it.

Every change to a session's threads and comments is stored and its event queued
on the session's stream under the session's lock, so the stream's order is the
store's order on this node (positions within a thread, ``comment:created``
events). Waiting for the event to be durable happens after the lock (so the next
change can be stored meanwhile); what is done then in order — queueing the
event's webhooks — waits for its :class:`Turn`: changes take turns in the order
they held the lock.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio


class _Session:
    def __init__(self) -> None:
        self.lock = trio.Lock()
        self.users = 0  # turns not yet done: the state lives as long as any
        self.issued = 0  # tickets handed out, in lock order
        self.next = 0  # the lowest ticket not yet done
        self.finished: set[int] = set()  # done, but behind an earlier one still running
        self.moved = trio.Event()


class Turn:
    """One change's place in its session's order. Always ends with :meth:`done`."""

    def __init__(self, locks: SessionLocks, session_id: str) -> None:
        self._locks = locks
        self._session_id = session_id
        self._state = locks._enter(session_id)
        self._ticket: int | None = None
        self._done = False

    @asynccontextmanager
    async def locked(self) -> AsyncIterator[None]:
        """Hold the session's lock; the turn's place is taken with it."""
        async with self._state.lock:
            if self._ticket is None:
                self._ticket = self._state.issued
                self._state.issued += 1
            yield

    async def wait(self) -> None:
        """Until every change that held the lock before this one is done."""
        assert self._ticket is not None, "take the lock first"
        while self._state.next < self._ticket:
            await self._state.moved.wait()

    def done(self) -> None:
        """Let the next turns go (idempotent; also for a turn that never took the lock)."""
        if self._done:
            return
        self._done = True
        state = self._state
        if self._ticket is not None:
            state.finished.add(self._ticket)
            while state.next in state.finished:
                state.finished.remove(state.next)
                state.next += 1
            state.moved.set()
            state.moved = trio.Event()
        self._locks._leave(self._session_id)


class SessionLocks:
    def __init__(self) -> None:
        self._sessions: dict[str, _Session] = {}

    def turn(self, session_id: str) -> Turn:
        """A new turn; the caller must call ``done`` (see :meth:`taking_turn`)."""
        return Turn(self, session_id)

    @asynccontextmanager
    async def taking_turn(self, session_id: str) -> AsyncIterator[Turn]:
        """A turn that is done when the block ends, however it ends."""
        turn = Turn(self, session_id)
        try:
            yield turn
        finally:
            turn.done()

    def _enter(self, session_id: str) -> _Session:
        state = self._sessions.get(session_id)
        if state is None:
            state = self._sessions[session_id] = _Session()
        state.users += 1
        return state

    def _leave(self, session_id: str) -> None:
        state = self._sessions[session_id]
        state.users -= 1
        if state.users == 0:  # nobody left: do not keep state for every session ever seen
            del self._sessions[session_id]
