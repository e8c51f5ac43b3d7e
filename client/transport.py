"""Transport helpers: opening a WebSocket by URL, decoding frames, unwrapping error groups."""

from __future__ import annotations

import logging
import ssl
import urllib.parse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, NoReturn

import orjson
import trio
import trio_websocket
from trio_websocket import WebSocketConnection

logger = logging.getLogger(__name__)

Message = dict[str, Any]


def decode_frame(raw: str | bytes) -> list[Message]:
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        logger.warning("tandem: ignoring a frame that is not JSON")
        return []
    items = value if isinstance(value, list) else [value]
    return [item for item in items if isinstance(item, dict)]


@asynccontextmanager
async def open_websocket(
    url: str, *, connect_timeout: float = 10.0
) -> AsyncIterator[WebSocketConnection]:
    """A trio-websocket client connection to ``ws://`` or ``wss://`` ``url``.

    Unlike ``trio_websocket.open_websocket_url`` (0.12), this always closes
    the TCP stream on exit: when the server closes first, trio-websocket's
    ``aclose()`` returns early and leaves the socket open. If cancelled, the
    stream is closed at once without a close handshake.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError(f"not a ws:// or wss:// URL: {url!r}")
    secure = parts.scheme == "wss"
    port = parts.port or (443 if secure else 80)
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host_header = parts.hostname if parts.port is None else f"{parts.hostname}:{port}"
    stream: trio.abc.Stream
    with trio.fail_after(connect_timeout):
        if secure:
            stream = await trio.open_ssl_over_tcp_stream(
                parts.hostname, port, ssl_context=ssl.create_default_context()
            )
        else:
            stream = await trio.open_tcp_stream(parts.hostname, port)
    try:
        async with trio.open_nursery() as nursery:
            with trio.fail_after(connect_timeout):
                ws = await trio_websocket.wrap_client_stream(nursery, stream, host_header, resource)
            try:
                yield ws
            finally:
                with trio.CancelScope(shield=True) as scope:
                    scope.deadline = trio.current_time() + connect_timeout
                    await ws.aclose()
                nursery.cancel_scope.cancel()
    finally:
        await trio.aclose_forcefully(stream)


def with_token(url: str, token: str | None) -> str:
    if token is None:
        return url
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query)
    query.append(("token", token))
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


def single_exception(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The one exception in ``group`` (looking through nested groups), else None."""
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        if len(exc.exceptions) != 1:
            return None
        exc = exc.exceptions[0]
    return exc


def reraise(exc: BaseException) -> NoReturn:
    """Raise ``exc`` unwrapped, keeping its own context (not the group's)."""
    context = exc.__context__
    try:
        raise exc
    finally:
        exc.__context__ = context
        del exc, context
