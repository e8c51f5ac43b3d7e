"""Token-bucket rate limiting with an injected clock and bounded memory."""

from __future__ import annotations

import enum
from collections import OrderedDict

import attrs


def _positive(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not value > 0:  # also rejects NaN
        raise ValueError(f"{attribute.name} must be > 0, got {value!r}")


@attrs.define
class TokenBucket:
    """``burst`` tokens of capacity, refilled at ``rate`` tokens per second.

    A new bucket starts full. A clock that steps backwards adds no tokens.
    """

    rate: float = attrs.field(validator=_positive)
    burst: float = attrs.field(validator=_positive)
    tokens: float = attrs.field(default=attrs.Factory(lambda self: self.burst, takes_self=True))
    last: float | None = None

    def _refill(self, now: float) -> None:
        if self.last is not None and now > self.last:
            self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        if self.last is None or now > self.last:
            self.last = now

    def try_take(self, now: float, cost: float = 1.0) -> float:
        """Take ``cost`` tokens: 0.0 if allowed, else seconds until it would be.

        A refused take consumes nothing. ``cost`` above ``burst`` could never
        succeed, so it raises ``ValueError`` (a caller bug, not a client's).
        """
        if not 0 <= cost <= self.burst:
            raise ValueError(f"cost must be in [0, burst={self.burst}], got {cost!r}")
        self._refill(now)
        if self.tokens >= cost:
            self.tokens -= cost
            return 0.0
        return (cost - self.tokens) / self.rate

    def is_full(self, now: float) -> bool:
        """True if the bucket would be full at ``now`` (same state as a new bucket)."""
        if self.last is None:
            return self.tokens >= self.burst
        elapsed = max(0.0, now - self.last)
        return self.tokens + elapsed * self.rate >= self.burst


@attrs.frozen
class Rate:
    """Sustained ``per_s`` with a ``burst`` allowance."""

    per_s: float = attrs.field(validator=_positive)
    burst: float = attrs.field(validator=_positive)


class Kind(enum.StrEnum):
    """What is being limited, and so which key (IP, connection id, user id) it takes."""

    CONNECT_PER_IP = "connect_per_ip"
    MESSAGE_PER_CONNECTION = "message_per_connection"
    EVENT_PER_CONNECTION = "event_per_connection"
    EVENT_PER_USER = "event_per_user"
    PRESENCE_PER_CONNECTION = "presence_per_connection"
    COMMENT_PER_USER = "comment_per_user"


@attrs.frozen
class RateLimits:
    """Per-kind rates. Defaults suit a small team server; tune per deployment.

    - connects per IP: 1/s sustained, burst 20 (a page reload storm or a NAT'd office).
    - messages per connection: 50/s, burst 200 (every inbound frame, any type).
    - events per connection: 20/s, burst 100; per user across connections 40/s, burst 200.
    - presence per connection: 20/s, burst 40 (clients should coalesce cursor moves).
    - comments per user: 0.5/s (30/min), burst 20.
    """

    connect_per_ip: Rate = Rate(1.0, 20)
    message_per_connection: Rate = Rate(50.0, 200)
    event_per_connection: Rate = Rate(20.0, 100)
    event_per_user: Rate = Rate(40.0, 200)
    presence_per_connection: Rate = Rate(20.0, 40)
    comment_per_user: Rate = Rate(0.5, 20)

    def for_kind(self, kind: Kind) -> Rate:
        """The rate configured for ``kind``."""
        rate: Rate = getattr(self, kind.value)
        return rate


@attrs.define
class RateLimiter:
    """Buckets per (kind, key), at most ``max_keys_per_kind`` per kind.

    Memory is bounded whatever the number of distinct keys (e.g. an attack from
    many IPs). Each kind keeps its buckets in least-recently-used order. Before
    a new bucket is created, buckets at the old end that are already full again
    are dropped: a full bucket is indistinguishable from a new one, so this loses
    nothing and is amortised O(1) (each bucket is dropped at most once). If the
    table is still at capacity, the least recently used bucket is evicted anyway
    and ``forced_evictions`` counts it: that key gets a fresh burst, which is the
    price of a hard memory bound. Call :meth:`forget` when a connection closes.
    """

    limits: RateLimits = attrs.field(factory=RateLimits)
    max_keys_per_kind: int = 50_000
    forced_evictions: int = 0
    _tables: dict[Kind, OrderedDict[str, TokenBucket]] = attrs.field(
        init=False, factory=lambda: {kind: OrderedDict() for kind in Kind}
    )

    def __attrs_post_init__(self) -> None:
        if self.max_keys_per_kind < 1:
            raise ValueError("max_keys_per_kind must be >= 1")

    def check(self, kind: Kind, key: str, now: float, cost: float = 1.0) -> float:
        """Charge ``cost`` to ``key``: 0.0 if allowed, else the retry-after in seconds."""
        table = self._tables[kind]
        bucket = table.get(key)
        if bucket is None:
            self._make_room(table, now)
            rate = self.limits.for_kind(kind)
            bucket = TokenBucket(rate.per_s, rate.burst)
            table[key] = bucket
        else:
            table.move_to_end(key)
        return bucket.try_take(now, cost)

    def forget(self, kind: Kind, key: str) -> None:
        """Drop ``key``'s bucket (e.g. its connection closed)."""
        self._tables[kind].pop(key, None)

    def size(self, kind: Kind | None = None) -> int:
        """Number of buckets held for ``kind``, or for all kinds."""
        if kind is not None:
            return len(self._tables[kind])
        return sum(len(t) for t in self._tables.values())

    def _make_room(self, table: OrderedDict[str, TokenBucket], now: float) -> None:
        while table:
            oldest = next(iter(table.values()))
            if not oldest.is_full(now):
                break
            table.popitem(last=False)
        if len(table) >= self.max_keys_per_kind:
            table.popitem(last=False)
            self.forced_evictions += 1
