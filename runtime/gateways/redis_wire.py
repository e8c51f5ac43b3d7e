"""RedisWire: one Redis connection on a trio stream, speaking RESP2 (runtime/gateways/resp.py).

No worker threads: bytes go out with ``send_all`` and come back with
``receive_some``, parsed by the sans-IO :class:`~runtime.gateways.resp.RespParser`.
It serves the cluster's per-frame traffic (pub/sub, and PUBLISH pipelines);
everything else stays on redis-py's pool (runtime/gateways/redis.py).

One task may send while another receives (a subscriber's reader and a
``subscribe()`` call); sends are serialised by a lock. Every failure of the
connection — refused, reset, closed by Redis, unparseable — is a
:class:`RedisUnavailable`; after one, the connection is done with. Timeouts are
the caller's (``trio.fail_after`` around the call), except :meth:`RedisWire.connect`'s.
"""

from __future__ import annotations

import ssl
from typing import Any

import attrs
import trio
from redis.connection import parse_url

from runtime.gateways.resp import ProtocolError, Reply, ReplyError, RespParser, encode_command

#: Bytes asked of the socket per read.
RECEIVE_SIZE = 65536


class RedisUnavailable(Exception):
    """Redis could not be reached (re-exported by runtime/gateways/redis.py)."""


class AuthRefused(RedisUnavailable):
    """Redis refused the URL's credentials (AUTH failed): a configuration error, not an outage."""


@attrs.frozen(slots=True)
class RedisTarget:
    """Where and how to connect, from a ``redis://``, ``rediss://`` or ``unix://`` URL."""

    host: str | None
    port: int
    path: str | None  # a unix socket
    tls: bool
    verify: bool
    username: str | None
    password: str | None
    db: int

    @classmethod
    def from_url(cls, url: str) -> RedisTarget:
        # redis-py's own parser, so the pool and the wire read a URL the same way.
        kwargs: dict[str, Any] = parse_url(url)  # type: ignore[no-untyped-call]
        tls = url.startswith("rediss://")
        return cls(
            host=kwargs.get("host"),
            port=int(kwargs.get("port") or 6379),
            path=kwargs.get("path"),
            tls=tls,
            verify=str(kwargs.get("ssl_cert_reqs", "required")).lower() not in ("none", "0"),
            username=kwargs.get("username"),
            password=kwargs.get("password"),
            db=int(kwargs.get("db") or 0),
        )

    def describe(self) -> str:
        return self.path or f"{self.host}:{self.port}"


class RedisWire:
    """One connection; see the module docstring."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self._stream = stream
        self._parser = RespParser()
        self._pending: list[Reply] = []  # parsed, not yet taken by receive()
        self._send_lock = trio.Lock()
        self.closed = False

    @classmethod
    async def connect(
        cls,
        target: RedisTarget,
        *,
        connect_timeout: float = 2.0,
        name: str | None = None,
        select: bool = True,
    ) -> RedisWire:
        """Open, authenticate and (``select``) choose the database, within ``connect_timeout``."""
        try:
            with trio.fail_after(connect_timeout):
                stream: trio.abc.Stream
                if target.path is not None:
                    stream = await trio.open_unix_socket(target.path)
                else:
                    assert target.host is not None
                    stream = await trio.open_tcp_stream(target.host, target.port)
                if target.tls:
                    context = ssl.create_default_context()
                    if not target.verify:
                        context.check_hostname = False
                        context.verify_mode = ssl.CERT_NONE
                    tls = trio.SSLStream(stream, context, server_hostname=target.host)
                    try:
                        await tls.do_handshake()  # here, under the timeout, not in a later read
                    except BaseException:
                        await trio.aclose_forcefully(tls)
                        raise
                    stream = tls
                wire = cls(stream)
                try:
                    await wire._handshake(target, name, select)
                except BaseException:
                    await wire.aclose()
                    raise
                return wire
        except trio.TooSlowError as exc:
            raise RedisUnavailable(f"connecting to {target.describe()}: timed out") from exc
        except (OSError, trio.BrokenResourceError) as exc:  # refused, unreachable, TLS failure
            raise RedisUnavailable(f"connecting to {target.describe()}: {exc}") from exc

    async def _handshake(self, target: RedisTarget, name: str | None, select: bool) -> None:
        commands: list[tuple[bytes | str | int, ...]] = []
        if target.password is not None:
            if target.username:
                commands.append(("AUTH", target.username, target.password))
            else:
                commands.append(("AUTH", target.password))
        if select and target.db:
            commands.append(("SELECT", target.db))
        if name:
            commands.append(("CLIENT", "SETNAME", name))
        if not commands:
            return
        replies = await self.execute(*commands)
        for command, reply in zip(commands, replies, strict=True):
            if isinstance(reply, ReplyError):
                if command[0] == "AUTH":
                    raise AuthRefused(f"Redis refused AUTH at {target.describe()}: {reply}")
                raise RedisUnavailable(f"{command[0]!r} failed at {target.describe()}: {reply}")

    async def send(self, data: bytes) -> None:
        """Write bytes (encoded commands) as they are."""
        async with self._send_lock:
            try:
                await self._stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                self.closed = True
                raise RedisUnavailable(f"sending to Redis: {exc!r}") from exc

    async def receive_batch(self) -> list[Reply]:
        """Every reply that one read completes (at least one); RedisUnavailable if it closed."""
        if self._pending:
            batch, self._pending = self._pending, []
            return batch
        while True:
            try:
                data = await self._stream.receive_some(RECEIVE_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                self.closed = True
                raise RedisUnavailable(f"reading from Redis: {exc!r}") from exc
            if not data:
                self.closed = True
                raise RedisUnavailable("Redis closed the connection")
            self._parser.feed(bytes(data))
            try:
                batch = list(self._parser.replies())
            except ProtocolError as exc:
                self.closed = True
                raise RedisUnavailable(f"Redis sent garbage: {exc}") from exc
            if batch:
                return batch

    async def receive(self) -> Reply:
        """The next reply."""
        if not self._pending:
            self._pending = await self.receive_batch()
        return self._pending.pop(0)

    async def execute(self, *commands: tuple[bytes | str | int, ...]) -> list[Reply]:
        """Send commands in one write, then read one reply each (error replies included)."""
        return await self.execute_encoded(
            b"".join(encode_command(*command) for command in commands), len(commands)
        )

    async def execute_encoded(self, data: bytes, count: int) -> list[Reply]:
        """Send ``data`` (``count`` encoded commands), then read ``count`` replies.

        Not for a subscribed connection (pushes would be taken for replies). If it is
        cancelled between the write and the last reply, the replies are out of step:
        the caller must close the connection.
        """
        await self.send(data)
        replies: list[Reply] = []
        while len(replies) < count:
            if not self._pending:
                self._pending = await self.receive_batch()
            take = count - len(replies)
            replies += self._pending[:take]
            del self._pending[:take]
        return replies

    async def command(self, *args: bytes | str | int) -> Reply:
        """One command; an error reply is raised as :class:`ReplyError`."""
        (reply,) = await self.execute(args)
        if isinstance(reply, ReplyError):
            raise reply
        return reply

    async def aclose(self) -> None:
        """Close at once (never waits on a dead peer)."""
        self.closed = True
        await trio.aclose_forcefully(self._stream)
