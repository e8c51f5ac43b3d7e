"""The one-port front door: read an HTTP/1.1 request with h11, then serve it or upgrade it.

A request asking for ``Upgrade: websocket`` at ``/`` or ``/v1/ws`` becomes a
WebSocket connection (with any bytes read past the request head); every other
request goes to the HTTP router. Keep-alive is supported; request heads and
bodies are bounded.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import attrs
import h11
import trio

from runtime.http import HttpRequest, HttpResponse, error_response
from runtime.transport.wire import Wire

logger = logging.getLogger(__name__)

MAX_HEAD = 16 * 1024
MAX_BODY = 1024 * 1024
WEBSOCKET_PATHS = ("/", "/v1/ws")


@attrs.frozen
class Upgrade:
    headers: list[tuple[bytes, bytes]]
    target: str
    leftover: bytes


async def serve_http(
    wire: Wire,
    handle: Callable[[HttpRequest], Awaitable[HttpResponse]],
    *,
    idle_timeout: float,
    client_address: Callable[[str, list[tuple[bytes, bytes]]], str] | None = None,
) -> Upgrade | None:
    """Serve requests on ``wire`` until it closes or asks for a WebSocket upgrade.

    ``client_address(peer, headers)`` names who sent a request
    (behind a trusted proxy, not the proxy); by default the socket peer.
    """
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
    while True:
        request: h11.Request | None = None
        body = b""
        with trio.move_on_after(idle_timeout):  # idle keep-alive and slowloris bound
            try:
                request, body = await _read_request(wire, conn)
            except h11.RemoteProtocolError as exc:
                await _send(
                    wire, conn, error_response(exc.error_status_hint, "bad_request", str(exc))
                )
                return None
            except _BodyTooLarge:
                await _send(
                    wire, conn, error_response(413, "too_large", f"body over {MAX_BODY} bytes")
                )
                return None
        if request is None:
            return None
        if _is_upgrade(request):
            data, _closed = conn.trailing_data
            return Upgrade(list(request.headers), request.target.decode("latin-1"), data)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in request.headers}
        http_request = HttpRequest(
            method=request.method.decode("ascii"),
            target=request.target.decode("latin-1"),
            headers=headers,
            body=body,
            peer=wire.peer
            if client_address is None
            else client_address(wire.peer, list(request.headers)),
        )
        response = await handle(http_request)
        if not await _send(wire, conn, response):
            return None
        if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
            return None
        try:
            conn.start_next_cycle()
        except h11.LocalProtocolError:
            return None


class _BodyTooLarge(Exception):
    pass


async def _read_request(wire: Wire, conn: h11.Connection) -> tuple[h11.Request | None, bytes]:
    request: h11.Request | None = None
    body = bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await wire.receive_some(65536)
            conn.receive_data(data)  # b"" means EOF, which h11 understands
            continue
        if isinstance(event, h11.Request):
            request = event
            if _is_upgrade(event):
                return request, b""
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > MAX_BODY:
                raise _BodyTooLarge
        elif isinstance(event, h11.EndOfMessage):
            return request, bytes(body)
        elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
            return None, b""


def _is_upgrade(request: h11.Request) -> bool:
    path = request.target.split(b"?", 1)[0].decode("latin-1")
    if path not in WEBSOCKET_PATHS or request.method != b"GET":
        return False
    for name, value in request.headers:
        if name == b"upgrade" and value.lower() == b"websocket":
            return True
    return False


async def _send(wire: Wire, conn: h11.Connection, response: HttpResponse) -> bool:
    headers = [
        ("content-type", response.content_type),
        ("content-length", str(len(response.body))),
        ("cache-control", "no-store"),
        *response.headers,
    ]
    try:
        data = conn.send(h11.Response(status_code=response.status, headers=headers))
        data += conn.send(h11.Data(data=response.body)) + conn.send(h11.EndOfMessage())
    except h11.LocalProtocolError:
        return False
    view = memoryview(data)
    try:
        while view:
            sent = wire.try_send(view)
            view = view[sent:]
            if view:
                await wire.wait_writable()
    except trio.BrokenResourceError:
        return False
    return True


async def reject_upgrade(wire: Wire, response: HttpResponse) -> None:
    """Refuse a WebSocket upgrade with a plain HTTP response, then the caller closes."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")  # put h11 in a state to answer
    conn.next_event()
    conn.next_event()
    await _send(
        wire, conn, attrs.evolve(response, headers=(*response.headers, ("connection", "close")))
    )
