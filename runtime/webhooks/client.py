"""A minimal HTTP/1.1 POST over trio sockets with h11 (already a dependency), TLS via ssl.

One request per connection, bounded by a timeout; any status is returned, any
transport failure raises ``DeliveryError``.
"""

from __future__ import annotations

import ssl
from urllib.parse import urlsplit

import h11
import trio


class DeliveryError(Exception):
    pass


async def post(url: str, body: bytes, headers: list[tuple[str, str]], *, limit_s: float) -> int:
    """POST ``body`` to ``url``; return the response status. Raises ``DeliveryError``."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DeliveryError(f"unsupported URL {url!r}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
    try:
        with trio.fail_after(limit_s):
            stream: trio.abc.Stream = await trio.open_tcp_stream(parts.hostname, port)
            if parts.scheme == "https":
                stream = trio.SSLStream(
                    stream, ssl.create_default_context(), server_hostname=parts.hostname
                )
            async with stream:
                return await _exchange(stream, host, target, body, headers)
    except trio.TooSlowError:
        raise DeliveryError(f"no response within {limit_s} s") from None
    except (OSError, trio.BrokenResourceError, h11.ProtocolError, ssl.SSLError) as exc:
        raise DeliveryError(f"{type(exc).__name__}: {exc}") from exc


async def _exchange(
    stream: trio.abc.Stream, host: str, target: str, body: bytes, headers: list[tuple[str, str]]
) -> int:
    conn = h11.Connection(h11.CLIENT)
    request = h11.Request(
        method="POST",
        target=target,
        headers=[
            ("host", host),
            ("content-type", "application/json"),
            ("content-length", str(len(body))),
            ("connection", "close"),
            ("user-agent", "tandem-webhooks/1"),
            *headers,
        ],
    )
    await stream.send_all(
        conn.send(request) + conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage())
    )
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await stream.receive_some(65536)
            conn.receive_data(bytes(data))
            if not data and conn.their_state is h11.SEND_RESPONSE:
                raise DeliveryError("connection closed before a response")
        elif isinstance(event, h11.Response):
            return int(event.status_code)
        elif isinstance(event, h11.ConnectionClosed):
            raise DeliveryError("connection closed before a response")
