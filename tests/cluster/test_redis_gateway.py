"""The Redis gateway: commands on worker threads, pub/sub bridged in order, reconnects."""

from __future__ import annotations

import trio

from runtime.gateways.redis import RECONNECTED, open_redis_gateway
from tests.cluster.conftest import kill_clients


async def test_commands_and_lua(redis_url: str, redis_prefix: str) -> None:
    async with open_redis_gateway(redis_url, pool_size=4) as r:
        key = redis_prefix + "k"
        assert await r.set(key, b"v", px=5000)
        assert not await r.set(key, b"w", nx=True)
        assert await r.get(key) == b"v"
        assert await r.eval("return redis.call('GET', KEYS[1])", [key], []) == b"v"
        assert await r.delete(key) == 1
        assert await r.get(key) is None
        assert r.health().ok


async def test_pubsub_order_across_channels(redis_url: str, redis_prefix: str) -> None:
    a, b = redis_prefix + "a", redis_prefix + "b"
    async with open_redis_gateway(redis_url) as r:
        await r.subscribe(a)
        await r.subscribe(b)
        items = [(a if i % 2 else b, str(i).encode()) for i in range(200)]
        await r.publish_many(items)
        got = []
        with trio.fail_after(5):
            while len(got) < len(items):
                got.append(await r.messages.receive())
        assert got == items
        await r.unsubscribe(a)
        await r.publish(a, b"gone")
        await r.publish(b, b"here")
        with trio.fail_after(5):
            assert await r.messages.receive() == (b, b"here")


async def test_reconnects_after_client_kill(redis_url: str, redis_prefix: str) -> None:
    channel = redis_prefix + "c"
    async with open_redis_gateway(redis_url) as r:
        await r.subscribe(channel)
        await r.set(redis_prefix + "x", b"1")
        # Only this gateway's connections: the pool's and the subscriber (the server is shared).
        assert kill_clients(redis_url, r.client_name) >= 2
        with trio.fail_after(10):
            assert await r.messages.receive() == RECONNECTED
            assert await r.get(redis_prefix + "x") == b"1"  # the pool reconnected too
            await r.publish(channel, b"after")
            assert await r.messages.receive() == (channel, b"after")
        assert r.health().reconnects == 1
        assert r.health().ok


async def test_status_has_a_redis_section(redis_url: str, redis_prefix: str) -> None:
    from runtime.testing import open_test_server

    async with open_test_server(redis_url=redis_url, redis_prefix=redis_prefix) as server:
        status, body = await server.http("GET", "/status")
        assert status == 200
        assert body["redis"]["ok"] is True
        assert kill_clients(redis_url, body["redis"]["client_name"]) >= 2  # pool, subscriber
        with trio.fail_after(10):
            while server.node.status()["redis"]["reconnects"] < 1:  # noqa: ASYNC110
                await trio.sleep(0.05)
        status, body = await server.http("GET", "/status")
        assert body["redis"]["ok"] is True
        assert body["redis"]["reconnects"] == 1
