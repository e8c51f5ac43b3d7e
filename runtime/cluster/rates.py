"""Rate-limit buckets shared by every node (per user and per IP), kept in Redis.

One Lua script refills and charges a token bucket atomically on Redis's clock
(``TIME``), so every node charges the same bucket. When Redis cannot be
reached the caller falls back to this node's own bucket (see ``RateGate.check``).
"""

from __future__ import annotations

from runtime.gateways.redis import RedisGateway, RedisUnavailable
from runtime.security.ratelimit import Kind, Rate

TOKEN_BUCKET = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'last')
local tokens = tonumber(state[1])
local last = tonumber(state[2])
if tokens == nil or last == nil then
  tokens = burst
  last = now
end
if now > last then
  tokens = math.min(burst, tokens + (now - last) * rate)
  last = now
end
local wait = 0
if tokens >= cost then
  tokens = tokens - cost
else
  wait = (cost - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'last', tostring(last))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return tostring(wait)
"""


class RedisBuckets:
    """``SharedBuckets`` for :class:`runtime.access.RateGate`."""

    def __init__(self, redis: RedisGateway, prefix: str) -> None:
        self._redis = redis
        self._prefix = prefix

    async def take(self, kind: Kind, key: str, rate: Rate, cost: float) -> float | None:
        """0.0 if allowed (and charged), else seconds to wait; None if Redis is unreachable."""
        try:
            wait = await self._redis.eval(
                TOKEN_BUCKET,
                [f"{self._prefix}rate:{kind.value}:{key}"],
                [rate.per_s, rate.burst, cost],
            )
        except RedisUnavailable:
            return None
        return float(wait)
