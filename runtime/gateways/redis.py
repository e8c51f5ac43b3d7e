"""RedisGateway: Redis for Trio.

Two kinds of connection. The per-frame traffic of a cluster — pub/sub and the
bus's PUBLISH pipelines — runs on trio-native connections
(:class:`~runtime.gateways.redis_wire.RedisWire`, RESP2 parsed in
runtime/gateways/resp.py): no worker thread per batch. Everything else (leases,
Lua scripts, GET/SET) is redis-py's blocking client on worker threads
(``trio.to_thread.run_sync``) behind a ``trio.CapacityLimiter`` as large as the
connection pool, so at most ``pool_size`` threads ever wait on Redis. redis-py's
own retry (on connection errors, with backoff) reconnects a pooled connection
that was killed or broken by a restart; a call that still fails raises
:class:`RedisUnavailable`.

Pub/sub: one dedicated reader task owns one connection and bridges every
message, in the order Redis delivered them, into ONE trio memory channel
(:attr:`RedisGateway.messages`). One ordered stream matters: messages published
in order to different channels arrive in that order on one connection, and the
cluster layer relies on it. ``subscribe()`` writes SUBSCRIBE on the reader's
connection and waits for Redis to confirm. When that connection breaks (or stays
silent past a PING), the reader opens a new one, re-subscribes, and puts
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
import trio
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from runtime import metrics
from runtime.gateways.redis_wire import RedisTarget, RedisUnavailable, RedisWire
from runtime.gateways.resp import Reply, ReplyError, encode_command

__all__ = ["RECONNECTED", "RedisGateway", "RedisHealth", "RedisUnavailable", "open_redis_gateway"]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Put in the message stream after the pub/sub connection was re-established.
RECONNECTED = ("", b"")


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
    client_name: str  # prefix of this node's CLIENT SETNAME (-pool, -sub, -pub)


#: A silent pub/sub connection is sent a PING after this long...
PING_IDLE_S = 1.0

_PING = encode_command("PING")


class RedisGateway:
    """A small async API over Redis; see the module docstring."""

    def __init__(self, url: str, *, pool_size: int = 16, socket_timeout: float = 5.0) -> None:
        retry = Retry(ExponentialBackoff(cap=0.5, base=0.02), retries=3)
        #: CLIENT SETNAME prefix of every connection of this gateway (-pool, -sub, -pub),
        #: so an operator (or a test) can tell one node's connections from another's.
        self.client_name = f"tandem-{secrets.token_hex(4)}"
        self._pool = redis.BlockingConnectionPool.from_url(
            url,
            max_connections=pool_size,
            timeout=socket_timeout,
            socket_timeout=socket_timeout,
            socket_connect_timeout=2.0,
            health_check_interval=0,
            retry=retry,
            retry_on_error=[redis.ConnectionError, redis.TimeoutError],
            client_name=self.client_name + "-pool",
        )
        self.client = redis.Redis(connection_pool=self._pool)
        self.pool_size = pool_size
        self._limiter = trio.CapacityLimiter(pool_size)
        self._target = RedisTarget.from_url(url)
        self._socket_timeout = socket_timeout  # ...and declared dead after this much more
        self._channels: set[str] = set()
        self._confirmed: dict[str, trio.Event] = {}
        self._subscriber: RedisWire | None = None  # the reader's connection, while it is up
        self._publisher: RedisWire | None = None  # PUBLISH pipelines; opened on first use
        self._publish_lock = trio.Lock()
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
        """Publish one message (on the publishing connection); how many subscribers got it."""
        (receivers,) = await self._publish(encode_command(b"PUBLISH", channel, data), 1)
        return receivers

    async def publish_many(self, items: list[tuple[str, bytes]]) -> None:
        """Publish in this order in one round trip (one write, then every reply)."""
        if items:
            data = b"".join(encode_command(b"PUBLISH", channel, body) for channel, body in items)
            await self._publish(data, len(items))

    async def _publish(self, data: bytes, count: int) -> list[int]:
        """PUBLISH commands on the trio-native publishing connection; RedisUnavailable if it fails.

        A connection that died while idle (killed, Redis restarted) is found out by
        this call: it is retried once on a new connection, as redis-py's pool would.
        As with redis-py, a message may then go out twice, never out of order.
        """
        started = time.perf_counter()
        async with self._publish_lock:
            for attempt in range(2):
                fresh = self._publisher is None
                try:
                    with trio.fail_after(self._socket_timeout):
                        if self._publisher is None:
                            self._publisher = await RedisWire.connect(
                                self._target, name=self.client_name + "-pub"
                            )
                        replies = await self._publisher.execute_encoded(data, count)
                except (RedisUnavailable, trio.TooSlowError) as exc:
                    await self._drop_publisher()
                    # A slow Redis may have run the commands: no second try then.
                    if fresh or attempt or isinstance(exc, trio.TooSlowError):
                        self._failed(exc)
                        raise RedisUnavailable(str(exc) or "publish timed out") from exc
                    continue
                except BaseException:  # cancelled between the write and the replies
                    await self._drop_publisher()
                    raise
                break
            errors = [reply for reply in replies if isinstance(reply, ReplyError)]
            if errors:  # NOAUTH after a restart with a new password, say: not a message
                await self._drop_publisher()
                self._failed(errors[0])
                raise RedisUnavailable(f"PUBLISH refused: {errors[0]}")
        metrics.REDIS.observe(time.perf_counter() - started)
        self._reachable()
        return [int(reply) for reply in replies]  # type: ignore[arg-type]

    async def _drop_publisher(self) -> None:
        publisher, self._publisher = self._publisher, None
        if publisher is not None:
            with trio.CancelScope(shield=True):
                await publisher.aclose()

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
        # Down or not connected yet: the reader subscribes to every channel when it connects.
        await self._tell_subscriber(encode_command(b"SUBSCRIBE", channel))
        await event.wait()

    async def unsubscribe(self, channel: str) -> None:
        if channel not in self._channels:
            return
        self._channels.discard(channel)
        self._confirmed.pop(channel, None)
        await self._tell_subscriber(encode_command(b"UNSUBSCRIBE", channel))

    async def _tell_subscriber(self, command: bytes) -> None:
        subscriber = self._subscriber
        if subscriber is not None:
            try:
                await subscriber.send(command)
            except RedisUnavailable:
                pass  # the reader finds out too, reconnects and subscribes what is wanted then

    async def run_reader(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Bridge pub/sub into :attr:`messages` until cancelled, reconnecting as needed.

        A connection lost while Redis answers (CLIENT KILL, say) is reconnected at
        once and is not an outage; failing to connect is.
        """
        started = False
        backoff = 0.05
        while True:
            try:
                wire = await RedisWire.connect(
                    self._target, select=False, name=self.client_name + "-sub"
                )
            except RedisUnavailable as exc:
                self._failed(exc)
                if not started:
                    task_status.started()
                    started = True
                await trio.sleep(backoff)
                backoff = min(backoff * 2, 1.0)
                continue
            connected_at = trio.current_time()
            try:
                # No checkpoint between publishing the connection and listing the channels:
                # a subscribe() either is in the list or writes its own SUBSCRIBE.
                self._subscriber = wire
                channels = sorted(self._channels)
                if channels:
                    await wire.send(encode_command(b"SUBSCRIBE", *channels))
                self._reachable()
                if not started:
                    task_status.started()
                    started = True
                else:
                    self.reconnects += 1
                    log.warning("redis pub/sub reconnected (%d channels)", len(channels))
                    await self._send.send(RECONNECTED)
                await self._read(wire)
            except RedisUnavailable as exc:
                self._last_error = f"pub/sub connection lost: {exc}"
                self._last_error_at = time.monotonic()
                log.warning("redis: %s", self._last_error)
            finally:
                self._subscriber = None
                with trio.CancelScope(shield=True):
                    await wire.aclose()
            if trio.current_time() - connected_at < 1.0:  # lost as soon as made: do not spin
                await trio.sleep(backoff)
                backoff = min(backoff * 2, 1.0)
            else:
                backoff = 0.05

    async def _read(self, wire: RedisWire) -> None:
        """Read until the connection fails (RedisUnavailable); PING it when it is silent."""
        pinged = False
        send = self._send
        while True:
            batch: list[Reply] | None = None
            with trio.move_on_after(self._socket_timeout if pinged else PING_IDLE_S):
                batch = await wire.receive_batch()  # cancelled: what was read stays buffered
            if batch is None:
                if pinged:
                    raise RedisUnavailable(
                        f"pub/sub connection silent {self._socket_timeout} s after a PING"
                    )
                await wire.send(_PING)
                pinged = True
                continue
            pinged = False
            self._reachable()
            for reply in batch:
                if type(reply) is not list:
                    if isinstance(reply, ReplyError):
                        log.warning("redis pub/sub: %s", reply)
                    continue
                kind = reply[0]
                if kind == b"message":
                    channel = reply[1].decode()  # type: ignore[union-attr]
                    if channel in self._channels:  # not unsubscribed since
                        message = (channel, reply[2])
                        try:  # one checkpoint per read, not per message
                            send.send_nowait(message)  # type: ignore[arg-type]
                        except trio.WouldBlock:
                            await send.send(message)  # type: ignore[arg-type]
                elif kind == b"subscribe":
                    event = self._confirmed.get(reply[1].decode())  # type: ignore[union-attr]
                    if event is not None:
                        event.set()

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
            client_name=self.client_name,
        )

    async def aclose(self) -> None:
        """Close the publishing connection and the pool (the reader closes its own)."""
        await self._drop_publisher()
        await trio.to_thread.run_sync(self._pool.disconnect)


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
        with trio.CancelScope(shield=True):
            await gateway.aclose()
