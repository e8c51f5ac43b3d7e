"""Backoff: full jitter, doubling caps, determinism with an injected rng; reconnect uses it."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import pytest
import trio
from trio_websocket import WebSocketConnection

from client import Backoff, open_tandem_client
from runtime.testing.server import TestServer
from tests.client.conftest import Connect
from tests.client.helpers import wait_until


def test_caps_double_up_to_the_maximum() -> None:
    backoff = Backoff(0.1, 1.0, random.Random(0))
    caps = []
    for _ in range(6):
        caps.append(backoff.cap())
        backoff.next_delay()
    assert caps == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
    backoff.reset()
    assert backoff.cap() == pytest.approx(0.1)


def test_full_jitter_is_deterministic_with_a_seeded_rng() -> None:
    first = Backoff(0.5, 30.0, random.Random(42))
    second = Backoff(0.5, 30.0, random.Random(42))
    delays = [first.next_delay() for _ in range(50)]
    assert delays == [second.next_delay() for _ in range(50)]
    reference = random.Random(42)
    expected = [reference.uniform(0, min(30.0, 0.5 * 2**n)) for n in range(50)]
    assert delays == expected
    assert all(0 <= d <= 30.0 for d in delays)
    assert len(set(delays)) == 50  # jittered, not a fixed schedule


def test_rejects_bad_bounds() -> None:
    with pytest.raises(ValueError):
        Backoff(0, 1)
    with pytest.raises(ValueError):
        Backoff(2, 1)


class RecordingRandom(random.Random):
    """A seeded rng that records the bounds the client asked for."""

    def __init__(self, seed: int) -> None:
        super().__init__(seed)
        self.bounds: list[float] = []

    def uniform(self, a: float, b: float) -> float:
        self.bounds.append(b)
        return super().uniform(a, b)


async def test_reconnect_retries_failed_attempts_with_growing_backoff(
    autojump_clock: trio.testing.MockClock,
    server: TestServer,
    connect_as: Callable[[str], Connect],
) -> None:
    real = connect_as("alice")
    failures_left = 0
    attempts = 0

    @asynccontextmanager
    async def flaky() -> AsyncIterator[WebSocketConnection]:
        nonlocal failures_left, attempts
        attempts += 1
        if failures_left:
            failures_left -= 1
            raise OSError("connection refused")
        async with real() as ws:
            yield ws

    def connect() -> AbstractAsyncContextManager[WebSocketConnection]:
        return flaky()

    rng = RecordingRandom(7)
    async with open_tandem_client(
        connect=connect, rng=rng, backoff_initial=0.5, backoff_max=4.0
    ) as client:
        await client.join("doc")
        failures_left = 5
        assert client.connection_id is not None
        server.node.connections[client.connection_id].abort(1001, "going away")
        await wait_until(lambda: client.reconnects == 6 and client.connected)
        assert attempts == 7
        assert rng.bounds == pytest.approx([0.5, 1.0, 2.0, 4.0, 4.0, 4.0])
        assert await client.publish("doc", "edit", {}) == 1
        # A successful connection resets the backoff.
        server.node.connections[client.connection_id].abort(1001, "going away")
        await wait_until(lambda: client.reconnects == 7 and client.connected)
        assert rng.bounds[-1] == pytest.approx(0.5)
