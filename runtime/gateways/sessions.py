"""The session repository interface, and a cache in front of it.

Session metadata and memberships are read on every join (and, with the
security layer, on every permission check), so they are cached in memory with
TTLs (5 min for sessions, 10 min for memberships, as the old design had).
Every change made through Tandem goes through :class:`CachedSessionRepository`
and drops the affected entries first, so a read after a change through Tandem
never returns stale data. Changes made behind Tandem's back (direct SQL) are
seen after the TTL; in cluster mode the Redis layer broadcasts invalidations.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

import trio

from runtime.gateways.memory import MemberRecord, SessionRecord

JSON = Any
V = TypeVar("V")

_MISSING = object()


class SessionRepository(Protocol):
    async def create(self, session_id: str, metadata: JSON = None) -> SessionRecord: ...

    async def get(
        self, session_id: str, *, include_deleted: bool = False
    ) -> SessionRecord | None: ...

    async def list_sessions(
        self, *, after: str | None = None, limit: int = 50, include_deleted: bool = False
    ) -> list[SessionRecord]: ...

    async def update_metadata(self, session_id: str, metadata: JSON) -> SessionRecord: ...

    async def soft_delete(self, session_id: str) -> bool: ...

    async def add_member(self, session_id: str, user_id: str, role: str) -> MemberRecord: ...

    async def remove_member(self, session_id: str, user_id: str) -> bool: ...

    async def list_members(self, session_id: str) -> list[MemberRecord]: ...

    async def get_member_role(self, session_id: str, user_id: str) -> str | None: ...


class TTLCache(Generic[V]):
    """A bounded LRU map whose entries expire ``ttl`` seconds after they were stored."""

    def __init__(
        self, ttl: float, max_entries: int = 10_000, clock: Callable[[], float] = trio.current_time
    ) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[Any, tuple[float, V]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key: Any) -> V | object:
        entry = self._entries.get(key)
        if entry is None or entry[0] <= self._clock():
            self._entries.pop(key, None)
            self.misses += 1
            return _MISSING
        self._entries.move_to_end(key)
        self.hits += 1
        return entry[1]

    def put(self, key: Any, value: V) -> None:
        self._entries[key] = (self._clock() + self.ttl, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def drop(self, key: Any) -> None:
        self._entries.pop(key, None)

    def drop_where(self, predicate: Callable[[Any], bool]) -> None:
        for key in [k for k in self._entries if predicate(k)]:
            del self._entries[key]

    def __len__(self) -> int:
        return len(self._entries)


class CachedSessionRepository:
    """A :class:`SessionRepository` with TTL caches for sessions and member roles."""

    def __init__(
        self, inner: SessionRepository, *, session_ttl: float = 300.0, member_ttl: float = 600.0
    ) -> None:
        self.inner = inner
        self.sessions: TTLCache[SessionRecord | None] = TTLCache(session_ttl)
        self.roles: TTLCache[str | None] = TTLCache(member_ttl)
        self.deleted: TTLCache[bool] = TTLCache(session_ttl)
        # Called after a membership change, so live connections re-check at once.
        self.on_member_change: list[Callable[[str, str], None]] = []
        # Called after a session's record changed (created, metadata, deleted), for peers.
        self.on_session_change: list[Callable[[str], None]] = []

    async def create(self, session_id: str, metadata: JSON = None) -> SessionRecord:
        self.sessions.drop(session_id)
        self.deleted.drop(session_id)
        record = await self.inner.create(session_id, metadata)
        self.sessions.put(session_id, record)
        self._session_changed(session_id)
        return record

    async def get(self, session_id: str, *, include_deleted: bool = False) -> SessionRecord | None:
        if include_deleted:
            return await self.inner.get(session_id, include_deleted=True)
        cached = self.sessions.get(session_id)
        if cached is not _MISSING:
            return cached  # type: ignore[return-value]
        record = await self.inner.get(session_id)
        self.sessions.put(session_id, record)
        return record

    async def is_deleted(self, session_id: str) -> bool:
        """Whether the session exists and was archived (cached like session records)."""
        cached = self.deleted.get(session_id)
        if cached is not _MISSING:
            return bool(cached)
        record = await self.inner.get(session_id, include_deleted=True)
        deleted = record is not None and record.deleted_at is not None
        self.deleted.put(session_id, deleted)
        return deleted

    async def list_sessions(
        self, *, after: str | None = None, limit: int = 50, include_deleted: bool = False
    ) -> list[SessionRecord]:
        return await self.inner.list_sessions(
            after=after, limit=limit, include_deleted=include_deleted
        )

    async def update_metadata(self, session_id: str, metadata: JSON) -> SessionRecord:
        self.sessions.drop(session_id)
        try:
            return await self.inner.update_metadata(session_id, metadata)
        finally:
            self.sessions.drop(session_id)  # a read racing the write may have cached the old one
            self._session_changed(session_id)

    async def soft_delete(self, session_id: str) -> bool:
        self.sessions.drop(session_id)
        try:
            return await self.inner.soft_delete(session_id)
        finally:
            self.sessions.drop(session_id)
            self.deleted.drop(session_id)
            self.roles.drop_where(lambda key: key[0] == session_id)
            self._session_changed(session_id)

    async def add_member(self, session_id: str, user_id: str, role: str) -> MemberRecord:
        try:
            return await self.inner.add_member(session_id, user_id, role)
        finally:
            self._member_changed(session_id, user_id)

    async def remove_member(self, session_id: str, user_id: str) -> bool:
        try:
            return await self.inner.remove_member(session_id, user_id)
        finally:
            self._member_changed(session_id, user_id)

    async def list_members(self, session_id: str) -> list[MemberRecord]:
        return await self.inner.list_members(session_id)

    async def get_member_role(self, session_id: str, user_id: str) -> str | None:
        cached = self.roles.get((session_id, user_id))
        if cached is not _MISSING:
            return cached  # type: ignore[return-value]
        role = await self.inner.get_member_role(session_id, user_id)
        self.roles.put((session_id, user_id), role)
        return role

    def forget_session(self, session_id: str) -> None:
        """Drop everything cached about a session (it changed elsewhere)."""
        self.sessions.drop(session_id)
        self.deleted.drop(session_id)
        self.roles.drop_where(lambda key: key[0] == session_id)

    def _session_changed(self, session_id: str) -> None:
        for callback in self.on_session_change:
            callback(session_id)

    def _member_changed(self, session_id: str, user_id: str) -> None:
        self.roles.drop((session_id, user_id))
        for callback in self.on_member_change:
            callback(session_id, user_id)
