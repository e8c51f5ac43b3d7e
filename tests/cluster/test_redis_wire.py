"""The trio-native Redis connections (RedisWire) against a real Redis, and a silent fake one."""

from __future__ import annotations

from functools import partial
from urllib.parse import urlsplit, urlunsplit

import pytest
import trio

from runtime.gateways.redis import RECONNECTED, RedisGateway, open_redis_gateway
from runtime.gateways.redis_wire import AuthRefused, RedisTarget, RedisUnavailable, RedisWire
from runtime.gateways.resp import ReplyError
from tests.cluster.conftest import kill_clients


def with_credentials(url: str, credentials: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{credentials}@{parts.hostname}:{parts.port}"))


async def test_commands_pipelined_on_one_connection(redis_url: str, redis_prefix: str) -> None:
    wire = await RedisWire.connect(RedisTarget.from_url(redis_url), name="tandem-test")
    try:
        with trio.fail_after(5):
            assert await wire.command("PING") == "PONG"
            key = redis_prefix + "w"
            replies = await wire.execute(("SET", key, b"\x00\r\n"), ("GET", key), ("DEL", key))
            assert replies == ["OK", b"\x00\r\n", 1]
            with pytest.raises(ReplyError, match="unknown command"):
                await wire.command("NOSUCHCOMMAND")
            assert await wire.command("CLIENT", "GETNAME") == b"tandem-test"
    finally:
        await wire.aclose()


async def test_subscribe_publish_unsubscribe(redis_url: str, redis_prefix: str) -> None:
    a, b = redis_prefix + "a", redis_prefix + "b"
    async with open_redis_gateway(redis_url) as r:
        with trio.fail_after(5):
            await r.subscribe(a)
            await r.subscribe(b)
            assert r.health().subscriptions == 2
            assert await r.publish(a, b"one") == 1  # one subscriber: this gateway
            assert await r.messages.receive() == (a, b"one")
            big = bytes(range(256)) * 1000  # many reads for one message
            await r.publish_many([(b, big), (a, b"\r\n")])
            assert await r.messages.receive() == (b, big)
            assert await r.messages.receive() == (a, b"\r\n")
            await r.unsubscribe(a)
            while await r.publish(a, b"gone"):  # noqa: ASYNC110 (until the UNSUBSCRIBE is done)
                await trio.sleep(0.01)
            await r.publish(b, b"here")
            assert await r.messages.receive() == (b, b"here")
            assert r.health().subscriptions == 1


async def test_killed_subscriber_reconnects_and_says_so(redis_url: str, redis_prefix: str) -> None:
    channel = redis_prefix + "c"
    async with open_redis_gateway(redis_url) as r:
        await r.subscribe(channel)
        await r.publish(channel, b"before")
        with trio.fail_after(10):
            assert await r.messages.receive() == (channel, b"before")
            assert kill_clients(redis_url, r.client_name + "-sub") == 1
            assert await r.messages.receive() == RECONNECTED
            await r.publish(channel, b"after")
            assert await r.messages.receive() == (channel, b"after")
        health = r.health()
        assert health.reconnects == 1 and health.ok
        assert health.outages == 0  # Redis answered all along: a lost connection, not an outage
        assert "pub/sub connection lost" in (health.last_error or "")


async def test_killed_publisher_is_replaced_without_an_error(
    redis_url: str, redis_prefix: str
) -> None:
    channel = redis_prefix + "p"
    async with open_redis_gateway(redis_url) as r:
        await r.subscribe(channel)
        await r.publish_many([(channel, b"1")])
        assert kill_clients(redis_url, r.client_name + "-pub") == 1
        with trio.fail_after(10):
            await r.publish_many([(channel, b"2"), (channel, b"3")])  # retried on a new one
            assert [await r.messages.receive() for _ in range(3)] == [
                (channel, b"1"),
                (channel, b"2"),
                (channel, b"3"),
            ]
        assert r.health().outages == 0


async def test_refused_auth_is_a_clear_error(redis_url: str) -> None:
    for credentials in (":not-the-password", "nobody:not-the-password"):
        target = RedisTarget.from_url(with_credentials(redis_url, credentials))
        with trio.fail_after(5), pytest.raises(AuthRefused, match="refused AUTH"):
            await RedisWire.connect(target)


async def test_reader_reports_refused_auth_in_health(redis_url: str) -> None:
    gateway = RedisGateway(with_credentials(redis_url, "nobody:not-the-password"))
    try:
        async with trio.open_nursery() as nursery:
            with trio.fail_after(5):
                await nursery.start(gateway.run_reader)
            health = gateway.health()
            assert not health.ok and health.outages == 1
            assert "refused AUTH" in (health.last_error or "")
            nursery.cancel_scope.cancel()
    finally:
        await gateway.aclose()


async def test_unreachable_redis_is_redis_unavailable() -> None:
    with socket_bound() as port, trio.fail_after(5), pytest.raises(RedisUnavailable):
        await RedisWire.connect(RedisTarget.from_url(f"redis://127.0.0.1:{port}/0"))


async def test_a_silent_connection_is_pinged_then_replaced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A peer that accepts and never answers (a half-dead link): PING, then reconnect."""
    monkeypatch.setattr("runtime.gateways.redis.PING_IDLE_S", 0.1)
    accepted: list[bytes] = []

    async def mute(stream: trio.SocketStream) -> None:
        accepted.append(await stream.receive_some())  # CLIENT SETNAME: answered
        await stream.send_all(b"+OK\r\n")
        async for data in stream:  # and nothing else ever is
            accepted.append(data)

    async with trio.open_nursery() as nursery:
        (listener,) = await nursery.start(partial(trio.serve_tcp, mute, 0, host="127.0.0.1"))
        port = listener.socket.getsockname()[1]
        gateway = RedisGateway(f"redis://127.0.0.1:{port}/0", socket_timeout=0.3)
        try:
            await nursery.start(gateway.run_reader)
            with trio.fail_after(5):
                assert await gateway.messages.receive() == RECONNECTED
            assert any(b"PING" in data for data in accepted)
            assert "silent" in (gateway.health().last_error or "")
        finally:
            nursery.cancel_scope.cancel()
            with trio.CancelScope(shield=True):
                await gateway.aclose()


class socket_bound:
    """A port bound but not listening: connecting to it is refused."""

    def __enter__(self) -> int:
        import socket

        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        port: int = self._sock.getsockname()[1]
        return port

    def __exit__(self, *exc: object) -> None:
        self._sock.close()
