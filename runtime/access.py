"""Session access: who may do what in a session, decided once, kept per connection.

The matrix itself is pure (``runtime.security.permissions``); this module adds
the lookups it needs — the token's grants, the stored membership through the
cached repository, the deployment's default access — and the rate limiter's
clock. The dispatcher is its only caller: permissions are checked in one place.
"""

from __future__ import annotations

from typing import Protocol

import trio

from runtime.gateways.sessions import CachedSessionRepository
from runtime.security.permissions import Role, role_for
from runtime.security.ratelimit import Kind, Rate, RateLimiter, RateLimits
from runtime.security.tokens import Identity


class SessionAccess:
    def __init__(self, sessions: CachedSessionRepository, default_access: str) -> None:
        self._sessions = sessions
        self.default_access = default_access

    async def is_deleted(self, session_id: str) -> bool:
        """True for an archived session: it can't be joined again (a new id can)."""
        return await self._sessions.is_deleted(session_id)

    async def role(self, identity: Identity, session_id: str) -> Role:
        """The identity's effective role (token grant, else membership, else the default)."""
        if session_id in identity.grants:
            stored = None  # a grant decides alone: no store round trip
        else:
            stored = await self._sessions.get_member_role(session_id, identity.user_id)
        return role_for(identity, session_id, stored, self.default_access)


#: Kinds keyed by who (user, IP) rather than by a connection: shared across a cluster.
SHARED_KINDS = frozenset({Kind.CONNECT_PER_IP, Kind.EVENT_PER_USER, Kind.COMMENT_PER_USER})


class SharedBuckets(Protocol):
    async def take(self, kind: Kind, key: str, rate: Rate, cost: float) -> float | None:
        """Charge a bucket every node shares: the wait (0.0: allowed), None if unavailable."""


class RateGate:
    """Token buckets on trio's clock (so limits are testable on a MockClock).

    In cluster mode ``shared`` holds the per-user and per-IP buckets
    (:data:`SHARED_KINDS`) for every node; per-connection buckets stay local.
    """

    def __init__(self, limits: RateLimits | None) -> None:
        self._limiter = RateLimiter(limits) if limits is not None else None
        self.shared: SharedBuckets | None = None

    async def check(self, kind: Kind, key: str, cost: float = 1.0) -> float:
        """Like :meth:`retry_after`, through the shared bucket for shared kinds.

        Without Redis (down, or single-node mode) this node's own bucket decides.
        """
        if self._limiter is None:
            return 0.0
        if self.shared is not None and kind in SHARED_KINDS:
            wait = await self.shared.take(kind, key, self._limiter.limits.for_kind(kind), cost)
            if wait is not None:
                return wait
        return self.retry_after(kind, key, cost)

    def retry_after(self, kind: Kind, key: str, cost: float = 1.0) -> float:
        """0.0 when allowed (and counted), else the seconds until it would be."""
        if self._limiter is None:
            return 0.0
        return self._limiter.check(kind, key, trio.current_time(), cost)

    def forget(self, kind: Kind, key: str) -> None:
        if self._limiter is not None:
            self._limiter.forget(kind, key)
