from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runtime.security.ratelimit import Kind, Rate, RateLimiter, RateLimits, TokenBucket


def test_new_bucket_allows_burst_then_reports_retry_after() -> None:
    b = TokenBucket(rate=2.0, burst=3.0)
    assert [b.try_take(100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert b.try_take(100.0) == pytest.approx(0.5)  # one token at 2/s
    assert b.try_take(100.0, cost=2.0) == pytest.approx(1.0)


def test_refill_math_with_injected_times() -> None:
    b = TokenBucket(rate=2.0, burst=4.0)
    assert b.try_take(0.0, cost=4.0) == 0.0
    assert b.tokens == 0.0
    assert b.try_take(0.25) == pytest.approx(0.25)  # 0.5 tokens refilled, 0.5 missing
    assert b.tokens == pytest.approx(0.5)  # a refused take consumes nothing
    assert b.try_take(0.5) == 0.0  # exactly 1 token now
    assert b.tokens == pytest.approx(0.0)
    b.try_take(1000.0, cost=0.0)  # long idle: capped at burst
    assert b.tokens == 4.0


def test_retry_after_is_exactly_enough() -> None:
    b = TokenBucket(rate=4.0, burst=1.0)
    assert b.try_take(10.0) == 0.0
    wait = b.try_take(10.0)
    assert wait == pytest.approx(0.25)
    assert b.try_take(10.0 + wait) == 0.0


def test_clock_stepping_backwards_adds_no_tokens() -> None:
    b = TokenBucket(rate=1.0, burst=2.0)
    b.try_take(100.0, cost=2.0)
    assert b.try_take(50.0) == pytest.approx(1.0)
    # Time resumes from the latest reading, not from the backwards step.
    assert b.try_take(100.5) == pytest.approx(0.5)
    assert b.try_take(101.0) == 0.0


def test_bucket_rejects_bad_config_and_cost() -> None:
    for rate, burst in ((0.0, 1.0), (1.0, 0.0), (-1.0, 1.0), (float("nan"), 1.0)):
        with pytest.raises(ValueError):
            TokenBucket(rate=rate, burst=burst)
    b = TokenBucket(rate=1.0, burst=2.0)
    for cost in (-1.0, 2.5):
        with pytest.raises(ValueError):
            b.try_take(0.0, cost=cost)


def test_is_full() -> None:
    b = TokenBucket(rate=1.0, burst=2.0)
    assert b.is_full(0.0)
    b.try_take(0.0)
    assert not b.is_full(0.5)
    assert b.is_full(1.0)
    assert not b.is_full(-5.0)


@given(
    rate=st.floats(min_value=0.01, max_value=1000),
    burst=st.integers(min_value=1, max_value=100),
    steps=st.lists(
        st.tuples(st.floats(min_value=0, max_value=10), st.integers(min_value=0, max_value=3)),
        max_size=60,
    ),
)
def test_never_allows_more_than_burst_plus_rate_times_elapsed(
    rate: float, burst: int, steps: list[tuple[float, int]]
) -> None:
    b = TokenBucket(rate=rate, burst=float(burst))
    start = now = 1000.0
    taken = 0
    for dt, cost in steps:
        now += dt
        wait = b.try_take(now, cost=float(min(cost, burst)))
        assert wait >= 0.0
        if wait == 0.0:
            taken += min(cost, burst)
        else:
            # Waiting exactly the retry-after must then succeed.
            assert b.try_take(now + wait + 1e-9, cost=float(min(cost, burst))) == 0.0
            now += wait + 1e-9
            taken += min(cost, burst)
        assert taken <= burst + rate * (now - start) + 1e-6


def test_limiter_separates_kinds_and_keys() -> None:
    limits = RateLimits(connect_per_ip=Rate(per_s=1.0, burst=2), comment_per_user=Rate(1.0, 1))
    rl = RateLimiter(limits)
    assert rl.check(Kind.CONNECT_PER_IP, "1.2.3.4", 0.0) == 0.0
    assert rl.check(Kind.CONNECT_PER_IP, "1.2.3.4", 0.0) == 0.0
    assert rl.check(Kind.CONNECT_PER_IP, "1.2.3.4", 0.0) == pytest.approx(1.0)
    assert rl.check(Kind.CONNECT_PER_IP, "5.6.7.8", 0.0) == 0.0
    # Same key string under another kind is a different bucket.
    assert rl.check(Kind.COMMENT_PER_USER, "1.2.3.4", 0.0) == 0.0
    assert rl.check(Kind.COMMENT_PER_USER, "1.2.3.4", 0.0) == pytest.approx(1.0)
    assert rl.size(Kind.CONNECT_PER_IP) == 2
    assert rl.size() == 3
    rl.forget(Kind.CONNECT_PER_IP, "1.2.3.4")
    rl.forget(Kind.CONNECT_PER_IP, "never-seen")
    assert rl.check(Kind.CONNECT_PER_IP, "1.2.3.4", 0.0) == 0.0  # fresh after forget


def test_default_limits_cover_every_kind() -> None:
    limits = RateLimits()
    for kind in Kind:
        rate = limits.for_kind(kind)
        assert rate.per_s > 0 and rate.burst >= 1
    assert limits.comment_per_user == Rate(0.5, 20)


def test_idle_full_buckets_are_evicted_without_losing_state() -> None:
    rl = RateLimiter(RateLimits(connect_per_ip=Rate(1.0, 2)), max_keys_per_kind=3)
    for i in range(3):
        rl.check(Kind.CONNECT_PER_IP, f"ip{i}", 0.0)
    # By t=10 every bucket has refilled, so adding new keys drops them for free.
    rl.check(Kind.CONNECT_PER_IP, "ip-new", 10.0)
    assert rl.size(Kind.CONNECT_PER_IP) == 1
    assert rl.forced_evictions == 0


def test_memory_stays_bounded_under_many_keys() -> None:
    rl = RateLimiter(RateLimits(connect_per_ip=Rate(0.001, 5)), max_keys_per_kind=100)
    for i in range(10_000):
        rl.check(Kind.CONNECT_PER_IP, f"10.0.{i // 256}.{i % 256}", float(i) * 0.001)
    assert rl.size(Kind.CONNECT_PER_IP) == 100
    assert rl.forced_evictions == 10_000 - 100


def test_recently_used_keys_survive_eviction() -> None:
    rl = RateLimiter(RateLimits(connect_per_ip=Rate(0.001, 2)), max_keys_per_kind=2)
    rl.check(Kind.CONNECT_PER_IP, "a", 0.0)
    rl.check(Kind.CONNECT_PER_IP, "b", 0.0)
    rl.check(Kind.CONNECT_PER_IP, "a", 0.0)  # a exhausted and most recently used
    rl.check(Kind.CONNECT_PER_IP, "c", 0.0)  # evicts b, the least recently used
    assert rl.check(Kind.CONNECT_PER_IP, "a", 0.0) > 0.0


def test_limiter_rejects_zero_capacity() -> None:
    with pytest.raises(ValueError):
        RateLimiter(max_keys_per_kind=0)
