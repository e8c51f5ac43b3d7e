"""ClusterBus: this node's ordered way in and out of Redis pub/sub.

Out: :meth:`ClusterBus.publish` never blocks (actors call it from their flush);
one publisher task sends everything queued, in queue order, in one pipelined
round trip. In: one dispatcher task hands each message to the handler of its
channel, synchronously and in the order Redis delivered them — so a frame on a
session's channel and a reply on this node's channel are seen in the order
the other node published them. Handlers must return at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import orjson
import trio

from runtime.gateways.redis import RECONNECTED, RedisGateway, RedisUnavailable

logger = logging.getLogger(__name__)

Handler = Callable[[bytes], None]

#: Messages waiting to be published; past it a message is dropped (and logged).
OUTBOUND_LIMIT = 65536


def envelope(header: dict[str, object], payload: bytes = b"") -> bytes:
    """A JSON header line, then an opaque payload (an encoded frame, say)."""
    return orjson.dumps(header) + b"\n" + payload


def open_envelope(data: bytes) -> tuple[dict[str, object], bytes]:
    head, _, payload = data.partition(b"\n")
    header = orjson.loads(head)
    if not isinstance(header, dict):
        raise ValueError("envelope header is not an object")
    return header, payload


class ClusterBus:
    def __init__(self, redis: RedisGateway, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix
        self._send, self._receive = trio.open_memory_channel[tuple[str, bytes]](OUTBOUND_LIMIT)
        self._handlers: dict[str, Handler] = {}
        self.on_reconnect: list[Callable[[], None]] = []
        self.dropped = 0

    def name(self, suffix: str) -> str:
        return self.prefix + suffix

    def publish(self, channel: str, data: bytes) -> None:
        try:
            self._send.send_nowait((channel, data))
        except trio.WouldBlock:
            self.dropped += 1
            logger.error("cluster bus: outbound queue full, message to %s dropped", channel)

    async def listen(self, channel: str, handler: Handler) -> None:
        """Deliver ``channel``'s messages to ``handler`` from now on (subscribed on return)."""
        self._handlers[channel] = handler
        await self.redis.subscribe(channel)

    async def unlisten(self, channel: str) -> None:
        self._handlers.pop(channel, None)
        try:
            await self.redis.unsubscribe(channel)
        except RedisUnavailable:
            pass

    async def run_publisher(self) -> None:
        while True:
            batch = [await self._receive.receive()]
            while len(batch) < 512:
                try:
                    batch.append(self._receive.receive_nowait())
                except trio.WouldBlock:
                    break
            for attempt in range(20):  # keep the order: retry this batch before the next
                try:
                    await self.redis.publish_many(batch)
                    break
                except RedisUnavailable:
                    await trio.sleep(min(0.05 * 2**attempt, 1.0))
            else:
                self.dropped += len(batch)
                logger.error("cluster bus: Redis unreachable, %d messages dropped", len(batch))

    async def run_dispatcher(self) -> None:
        async for channel, data in self.redis.messages:
            if (channel, data) == RECONNECTED:
                for callback in list(self.on_reconnect):
                    callback()
                continue
            handler = self._handlers.get(channel)
            if handler is None:
                continue
            try:
                handler(data)
            except (ValueError, KeyError, TypeError) as exc:  # a malformed message
                logger.warning("cluster bus: bad message on %s: %r", channel, exc)
