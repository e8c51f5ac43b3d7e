"""RedisGateway: Redis for Trio, over redis-py's blocking client on worker threads.

Commands run on worker threads (``trio.to_thread.run_sync``) behind a
``trio.CapacityLimiter`` as large as the connection pool, so at most
``pool_size`` threads ever wait on Redis. redis-py's own retry (on connection
errors, with backoff) reconnects a pooled connection that was killed or broken
by a restart; a call that still fails raises :class:`RedisUnavailable`.

Pub/sub: one dedicated reader task owns one ``PubSub`` connection and bridges
every message, in the order Redis delivered them, into ONE trio memory channel
(:attr:`RedisGateway.messages`). One ordered stream matters: messages published
in order to different channels arrive in that order on one connection, and the
cluster layer relies on it. Subscribing wakes the reader at once (it publishes
a nudge on a private control channel) and waits for Redis to confirm. When the
pub/sub connection breaks, the reader opens a new one, re-subscribes, and puts
:data:`RECONNECTED` in the stream: whatever was published meanwhile is lost,
and consumers must resynchronise.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import attrs
import redis
import redis.client
import trio
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from runtime import metrics

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Put in the message stream after the pub/sub connection was re-established.
RECONNECTED = ("", b"")


class RedisUnavailable(Exception):
    """Redis could not be reached (after redis-py's retries)."""


@attrs.frozen(slots=True)
class RedisHealth:
    """A snapshot for /status."""

    ok: bool
    pool_size: int
    in_use: int  # calls on worker threads now
    subscriptions: int
    reconnects: int  # pub/sub connection re-established
    last_error: str | None
    last_error_age_s: float | None
    outages: int  # times Redis went from reachable to unreachable
    outage_s: float | None  # how long the current outage has lasted (None: reachable)
    last_outage_s: float | None  # how long the last finished outage lasted


#: Most pub/sub messages taken from the socket per worker-thread hop.
READ_BATCH = 256


class RedisGateway:
    """A small async API over a pooled blocking client; see the module docstring."""

    def __init__(self, url: str, *, pool_size: int = 16, socket_timeout: float = 5.0) -> None:
        retry = Retry(ExponentialBackoff(cap=0.5, base=0.02), retries=3)
        self._pool = redis.BlockingConnectionPool.from_url(
            url,
            max_connections=pool_size,
            timeout=socket_timeout,
            socket_timeout=socket_timeout,
            socket_connect_timeout=2.0,
            health_check_interval=0,
            retry=retry,
            retry_on_error=[redis.ConnectionError, redis.TimeoutError],
        )
        self.client = redis.Redis(connection_pool=self._pool)
        self.pool_size = pool_size
        self._limiter = trio.CapacityLimiter(pool_size)
        self._control = f"tandem:ctl:{secrets.token_hex(8)}"
        self._channels: set[str] = set()
        self._changes: list[tuple[bool, str]] = []  # (subscribe?, channel), applied by the reader
        self._confirmed: dict[str, trio.Event] = {}
        self._send, self.messages = trio.open_memory_channel[tuple[str, bytes]](65536)
        self._ok = True
        self._last_error: str | None = None
        self._last_error_at: float | None = None
        self.reconnects = 0
        # Outages: from the first failure after a success to the next success.
        self.outages = 0
        self._down_since: float | None = None
        self._last_outage_s: float | None = None
        self._scripts: dict[str, Any] = {}

    # -- commands -------------------------------------------------------------------

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run one blocking redis-py call on a worker thread; RedisUnavailable if it fails."""
        started = time.perf_counter()
        try:
            result = await trio.to_thread.run_sync(
                lambda: fn(*args, **kwargs), limiter=self._limiter, abandon_on_cancel=True
            )
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            self._failed(exc)
            raise RedisUnavailable(str(exc)) from exc
        metrics.REDIS.observe(time.perf_counter() - started)
        self._reachable()
        return result

    async def get(self, key: str) -> bytes | None:
        return await self.call(self.client.get, key)  # type: ignore[arg-type]

    async def set(
        self, key: str, value: str | bytes, *, px: int | None = None, nx: bool = False
    ) -> bool:
        return bool(await self.call(self.client.set, key, value, px=px, nx=nx))

    async def delete(self, *keys: str) -> int:
        return int(await self.call(self.client.delete, *keys))

    async def publish(self, channel: str, data: bytes) -> int:
        return int(await self.call(self.client.publish, channel, data))

    async def publish_many(self, items: list[tuple[str, bytes]]) -> None:
        """Publish in this order in one round trip (a non-transactional pipeline)."""

        def run() -> None:
            pipe = self.client.pipeline(transaction=False)
            for channel, data in items:
                pipe.publish(channel, data)
            pipe.execute()

        await self.call(run)

    async def eval(self, script: str, keys: list[str], args: list[Any]) -> Any:
        """Run a Lua script (EVALSHA, loading it on first use)."""
        registered = self._scripts.get(script)
        if registered is None:
            registered = self._scripts[script] = self.client.register_script(script)
        return await self.call(registered, keys=keys, args=args)

    async def ping(self) -> bool:
        return bool(await self.call(self.client.ping))

    # -- pub/sub --------------------------------------------------------------------

    async def subscribe(self, channel: str) -> None:
        """Subscribe (on the reader's connection) and wait until Redis confirmed it."""
        if channel in self._channels:
            return
        self._channels.add(channel)
        event = self._confirmed.setdefault(channel, trio.Event())
        self._changes.append((True, channel))
        await self._nudge()
        await event.wait()

    async def unsubscribe(self, channel: str) -> None:
        if channel not in self._channels:
            return
        self._channels.discard(channel)
        self._confirmed.pop(channel, None)
        self._changes.append((False, channel))
        await self._nudge()

    async def _nudge(self) -> None:
        try:
            await self.publish(self._control, b"")
        except RedisUnavailable:
            pass  # the reader reconnects and applies the change then

    async def run_reader(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Bridge pub/sub into :attr:`messages` until cancelled, reconnecting as needed."""
        started = False
        backoff = 0.05
        while True:
            pubsub = self.client.pubsub()  # type: ignore[no-untyped-call]
            try:
                await trio.to_thread.run_sync(pubsub.subscribe, self._control)
                flag = _ReconnectFlag()
                assert pubsub.connection is not None
                pubsub.connection.register_connect_callback(flag.hit)
                channels = sorted(self._channels)
                self._changes.clear()
                if channels:
                    await trio.to_thread.run_sync(_subscribe_all, pubsub, channels)
                if not started:
                    task_status.started()
                    started = True
                else:
                    self.reconnects += 1
                    log.warning("redis pub/sub reconnected (%d channels)", len(channels))
                    await self._send.send(RECONNECTED)
                backoff = 0.05
                await self._read(pubsub, flag)
            except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                self._failed(exc)
                if not started:
                    task_status.started()
                    started = True
                await trio.sleep(backoff)
                backoff = min(backoff * 2, 1.0)
            finally:
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(_close_quietly, pubsub)

    async def _read(self, pubsub: redis.client.PubSub, flag: _ReconnectFlag) -> None:
        while True:
            if flag.reconnected:  # redis-py reconnected and re-subscribed on its own
                flag.reconnected = False
                self.reconnects += 1
                log.warning("redis pub/sub reconnected")
                await self._send.send(RECONNECTED)
            while self._changes:
                subscribe, channel = self._changes.pop(0)
                if subscribe:
                    await trio.to_thread.run_sync(pubsub.subscribe, channel)
                else:
                    await trio.to_thread.run_sync(pubsub.unsubscribe, channel)
            batch = await trio.to_thread.run_sync(
                _receive_batch, pubsub, READ_BATCH, abandon_on_cancel=True
            )
            for message in batch:
                kind = message["type"]
                channel = message["channel"].decode()
                if kind == "subscribe":
                    event = self._confirmed.get(channel)
                    if event is not None:
                        event.set()
                elif kind == "message" and channel in self._channels:  # not unsubscribed since
                    await self._send.send((channel, message["data"]))
            if batch:
                self._reachable()

    def _reachable(self) -> None:
        self._ok = True
        if self._down_since is not None:
            self._last_outage_s = time.monotonic() - self._down_since
            self._down_since = None
            log.warning("redis: reachable again after %.2f s", self._last_outage_s)

    def _failed(self, exc: BaseException) -> None:
        self._ok = False
        if self._down_since is None:  # a new outage (not the next failure of this one)
            self._down_since = time.monotonic()
            self.outages += 1
        self._last_error = f"{type(exc).__name__}: {exc}"
        self._last_error_at = time.monotonic()
        log.warning("redis: %s", self._last_error)

    async def run_health_checks(self, interval: float = 1.0) -> None:
        """Ping now and then, so health recovers (or degrades) with no traffic."""
        while True:
            await trio.sleep(interval)
            try:
                await self.ping()
            except RedisUnavailable:
                pass

    def health(self) -> RedisHealth:
        age = None if self._last_error_at is None else time.monotonic() - self._last_error_at
        return RedisHealth(
            ok=self._ok,
            pool_size=self.pool_size,
            in_use=int(self._limiter.borrowed_tokens),
            subscriptions=len(self._channels),
            reconnects=self.reconnects,
            last_error=self._last_error,
            last_error_age_s=None if age is None else round(age, 3),
            outages=self.outages,
            outage_s=(
                None if self._down_since is None else round(time.monotonic() - self._down_since, 3)
            ),
            last_outage_s=None if self._last_outage_s is None else round(self._last_outage_s, 3),
        )

    def close(self) -> None:
        self._pool.disconnect()


def _receive_batch(pubsub: redis.client.PubSub, limit: int) -> list[dict[str, Any]]:
    """Wait up to a second for a message, then take what else is already there.

    One thread hop per batch, not per message: under a frame storm the hop (two
    context switches and a trio wake-up) cost more than reading the message.
    """
    first = pubsub.get_message(timeout=1.0)
    if first is None:
        return []
    batch = [first]
    while len(batch) < limit:
        more = pubsub.get_message(timeout=0.0)
        if more is None:
            break
        batch.append(more)
    return batch


def _subscribe_all(pubsub: redis.client.PubSub, channels: list[str]) -> None:
    pubsub.subscribe(*channels)


class _ReconnectFlag:
    """Set (on a worker thread) when redis-py re-established the pub/sub connection."""

    def __init__(self) -> None:
        self.reconnected = False

    def hit(self, connection: object) -> None:
        self.reconnected = True


def _close_quietly(pubsub: redis.client.PubSub) -> None:
    try:
        pubsub.close()
    except Exception as exc:  # a dead connection: nothing to close politely
        log.debug("closing pub/sub: %s", exc)


@asynccontextmanager
async def open_redis_gateway(url: str, *, pool_size: int = 16) -> AsyncIterator[RedisGateway]:
    """A gateway with its pub/sub reader and health checks running; fails if unreachable."""
    gateway = RedisGateway(url, pool_size=pool_size)
    try:
        await gateway.ping()
        async with trio.open_nursery() as nursery:
            await nursery.start(gateway.run_reader)
            nursery.start_soon(gateway.run_health_checks)
            try:
                yield gateway
            finally:
                nursery.cancel_scope.cancel()
    finally:
        await trio.to_thread.run_sync(gateway.close)
