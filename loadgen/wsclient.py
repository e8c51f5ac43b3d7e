"""A deliberately minimal WebSocket (and engine.io/socket.io-over-WebSocket) client.

It exists so one generator core can drive thousands of connections: frames are parsed by
hand from raw bytes on asyncio's Protocol callbacks, payloads are never JSON-decoded, and
events are counted by scanning for the publisher's stamp (``"t":<µs>``; microseconds, since
Tandem rejects integers beyond JSON's safe range of +/-(2**53-1), which nanoseconds exceed).
A frame may carry a JSON array of several messages; every stamp inside counts as one delivered
event.

With ``compression`` it offers permessage-deflate the way browsers do
(``client_max_window_bits``, context takeover allowed) and inflates what the server compresses.
It never compresses what it sends (RFC 7692 lets a sender choose per message). A server that
keeps its compression context (no ``server_no_context_takeover``) makes it inflate every
message to keep its window; one without context takeover lets connections that count nothing
skip inflating once they have joined, as they skip parsing.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import socket
import time
import zlib
from array import array
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from loadgen.comments import CommentState

IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)

EVENT_STAMP = re.compile(rb'"t":\s*(\d+)')
# Presence states carry the sender's connection number ("pc") so a server that echoes an update
# back to its sender is not credited with a propagation.
PRESENCE_STAMP = re.compile(rb'"pt":\s*(\d+)(?:,\s*"pc":\s*(\d+))?')
ZERO_MASK = b"\x00\x00\x00\x00"  # a valid mask key; XOR with it is the identity
DEFLATE_OFFER = "permessage-deflate; client_max_window_bits"  # what browsers send
DEFLATE_TAIL = b"\x00\x00\xff\xff"  # RFC 7692 7.2.2: the sender dropped it, put it back


class Stats:
    """Per-process counters shared by every connection of a worker."""

    def __init__(self) -> None:
        self.reset()
        self.frames_in = 0

    def reset(self) -> None:
        self.events = 0
        self.acks = 0
        self.presence = 0
        self.latency_us: array[int] = array("q")
        self.self_echoes = 0
        self.protocol_errors = 0

    def on_payload(
        self, payload: bytes, now_us: int, own_id: bytes, seen: dict[bytes, int]
    ) -> None:
        lat = self.latency_us
        if b'"t":' in payload:
            for m in EVENT_STAMP.finditer(payload):
                lat.append(now_us - int(m.group(1)))
                self.events += 1
        if b"event:ack" in payload:
            self.acks += payload.count(b"event:ack")
        if b'"pt":' in payload:
            for m in PRESENCE_STAMP.finditer(payload):
                sender = m.group(2)
                if sender == own_id:
                    self.self_echoes += 1
                    continue
                stamp = int(m.group(1))
                lat.append(now_us - stamp)
                self.presence += 1
                if sender is not None and stamp > seen.get(sender, 0):
                    seen[sender] = stamp


def _frame(opcode: int, payload: bytes) -> bytes:
    n = len(payload)
    first = 0x80 | opcode
    if n < 126:
        head = bytes((first, 0x80 | n))
    elif n < 65536:
        head = bytes((first, 0xFE)) + n.to_bytes(2, "big")
    else:
        head = bytes((first, 0xFF)) + n.to_bytes(8, "big")
    return head + ZERO_MASK + payload


class WsConnection(asyncio.Protocol):
    """One client connection. Calls ``on_joined`` once the session:joined reply arrives."""

    def __init__(
        self,
        host: str,
        port: int,
        path: str,
        socketio: bool,
        join_message: bytes,
        stats: Stats,
        on_joined: Callable[[WsConnection], None],
        on_lost: Callable[[WsConnection, str], None],
        conn_id: int = 0,
        comments: CommentState | None = None,
        observes: bool = True,
        compression: bool = False,
    ) -> None:
        self.conn_id = conn_id
        self.compression = compression  # offer permessage-deflate
        self.deflate = False  # the server accepted permessage-deflate
        # The server takes its context over: one decompressor (window) for every message.
        self.window: zlib._Decompress | None = None
        self.compressed = False  # the message in flight has RSV1 on its first frame
        self.observes = observes  # False: receive and answer pings, but count nothing
        self.comments = comments  # comments scenario: decode and count comment traffic
        self.own_id = str(conn_id).encode()
        self.presence_seen: dict[bytes, int] = {}  # sender conn id -> newest stamp received
        self.last_presence_sent = 0
        self.host, self.port, self.path = host, port, path
        self.socketio = socketio
        self.join_message = join_message
        self.stats = stats
        self.on_joined = on_joined
        self.on_lost = on_lost
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.fragments = bytearray()
        self.upgraded = False
        self.joined = False
        self.closed = False

    # -- asyncio.Protocol -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            + (f"Sec-WebSocket-Extensions: {DEFLATE_OFFER}\r\n" if self.compression else "")
            + "\r\n"
        )
        transport.write(request.encode())

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed:
            self.closed = True
            self.on_lost(self, repr(exc) if exc else "closed by peer")

    def data_received(self, data: bytes) -> None:
        now = time.time_ns() // 1000
        buf = self.buf
        buf += data
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            response = bytes(buf[:end]).lower()
            status = bytes(buf[: buf.find(b"\r\n")])
            del buf[: end + 4]
            if b" 101 " not in status + b" ":
                self.fail(f"handshake refused: {status.decode(errors='replace')}")
                return
            if b"permessage-deflate" in response:
                self._negotiated(response)
            self.upgraded = True
            if not self.socketio:
                self.send_text(self.join_message)
        pos = 0
        size = len(buf)
        while size - pos >= 2:
            b0 = buf[pos]
            length = buf[pos + 1] & 0x7F
            head = 2
            if length == 126:
                if size - pos < 4:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 4], "big")
                head = 4
            elif length == 127:
                if size - pos < 10:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                head = 10
            if buf[pos + 1] & 0x80:
                self.fail("server sent a masked frame")
                return
            if size - pos < head + length:
                break
            payload = bytes(buf[pos + head : pos + head + length])
            pos += head + length
            self._on_frame(b0, payload, now)
        if pos:
            del buf[:pos]

    # -- frames -----------------------------------------------------------------------------
    def _on_frame(self, b0: int, payload: bytes, now: int) -> None:
        opcode = b0 & 0x0F
        fin = b0 & 0x80
        if opcode in (1, 2, 0):
            if opcode:
                self.compressed = bool(b0 & 0x40)
            if not fin:
                self.fragments += payload
                return
            if self.fragments:
                payload = bytes(self.fragments) + payload
                self.fragments.clear()
            if self.compressed:
                if not self.deflate:
                    self.fail("compressed frame without permessage-deflate")
                    return
                if self.window is not None:
                    payload = self.window.decompress(payload + DEFLATE_TAIL)
                elif self.joined and not self.observes and self.comments is None:
                    self.stats.frames_in += 1  # counts nothing: no need to read it
                    return
                else:
                    payload = zlib.decompressobj(-15).decompress(payload + DEFLATE_TAIL)
            self._on_message(payload, now)
        elif opcode == 9:  # ping
            self._write(_frame(0xA, payload))
        elif opcode == 8:  # close
            self._write(_frame(0x8, payload[:2]))
            self.fail("server closed the WebSocket")

    def _on_message(self, payload: bytes, now: int) -> None:
        self.stats.frames_in += 1
        if self.socketio:
            kind = payload[:2]
            if kind[:1] == b"2":  # engine.io ping -> pong
                self.send_text(b"3")
                return
            if kind[:1] == b"0":  # engine.io open -> socket.io connect to namespace "/"
                self.send_text(b"40")
                return
            if kind == b"40":  # socket.io connected
                self.send_json(self.join_message)
                return
            if kind != b"42":
                return
        if not self.joined:
            if b"session:joined" in payload:
                self.joined = True
                self.on_joined(self)
            elif b'"error"' in payload:
                self.fail(f"join failed: {payload[:200]!r}")
            return
        if self.comments is not None:
            self.comments.on_payload(payload, now, self.conn_id)
            return
        if not self.observes:
            return
        self.stats.on_payload(payload, now, self.own_id, self.presence_seen)

    def _negotiated(self, response: bytes) -> None:
        """The server accepted permessage-deflate; ``response`` is its lower-cased head."""
        line = next(x for x in response.split(b"\r\n") if b"permessage-deflate" in x)
        self.deflate = True
        if b"server_no_context_takeover" not in line:
            # One window for the whole connection, as the server keeps its own (15 bits
            # reads any smaller window).
            self.window = zlib.decompressobj(-15)

    # -- sending ----------------------------------------------------------------------------
    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    def send_text(self, payload: bytes) -> None:
        self._write(_frame(0x1, payload))

    def send_json(self, encoded: bytes) -> None:
        """Send one protocol message (already JSON-encoded), wrapped for socket.io if needed."""
        if self.socketio:
            self.send_text(b'42["msg",' + encoded + b"]")
        else:
            self.send_text(encoded)

    def fail(self, reason: str) -> None:
        self.stats.protocol_errors += 1
        if not self.closed:
            self.closed = True
            self.on_lost(self, reason)
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self._write(_frame(0x8, (1000).to_bytes(2, "big")))
            self.transport.close()


async def open_connection(
    loop: asyncio.AbstractEventLoop,
    factory: Callable[[], WsConnection],
    host: str,
    port: int,
    source_ip: str,
) -> WsConnection:
    """TCP connect from ``source_ip`` (any 127.0.0.x) so each source address has its own
    ephemeral port range; IP_BIND_ADDRESS_NO_PORT defers port choice to connect()."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((source_ip, 0))
        await loop.sock_connect(sock, (host, port))
        _, proto = await loop.create_connection(factory, sock=sock)
    except BaseException:
        sock.close()
        raise
    return proto
