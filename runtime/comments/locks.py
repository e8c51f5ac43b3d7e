"""One lock per session, for as long as anyone holds or waits for it.

Every change to a session's threads and comments runs under its session's lock,
so the stream's order is the store's order on this node (positions within a
thread, ``comment:created`` events). New comments take it once per batch.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio


class SessionLocks:
    def __init__(self) -> None:
        self._locks: dict[str, tuple[trio.Lock, int]] = {}  # lock, holders + waiters

    @asynccontextmanager
    async def hold(self, session_id: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(session_id, (trio.Lock(), 0))
        self._locks[session_id] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[session_id]
            if users == 1:
                del self._locks[session_id]  # nobody left: do not keep a lock per session ever seen
            else:
                self._locks[session_id] = (lock, users - 1)
