"""Server-to-client WebSocket text frames, built once and shared by every member.

A server's frames are unmasked, and permessage-deflate is negotiated without
server context takeover (:mod:`runtime.protocol.deflate`), so the bytes of a
frame do not depend on the recipient: a session encodes each batch once
(RFC 6455 section 5.2), compresses it at most once, and writes the same bytes
to every socket.
"""

from __future__ import annotations

import struct

from runtime.protocol import deflate


def _header(first: int, n: int) -> bytes:
    if n < 126:
        return bytes((first, n))
    if n < 1 << 16:
        return struct.pack("!BBH", first, 126, n)
    return struct.pack("!BBQ", first, 127, n)


def text_frame(payload: bytes) -> bytes:
    """One final, unmasked text frame carrying ``payload``."""
    return _header(0x81, len(payload)) + payload


def deflated_text_frame(payload: bytes) -> bytes:
    """``payload`` for a client that negotiated permessage-deflate.

    Compressed (RSV1 set) when it is long enough to gain from it and did
    shrink, else the plain frame: RFC 7692 lets the sender choose message by
    message.
    """
    if len(payload) < deflate.MIN_COMPRESS_BYTES:
        return text_frame(payload)
    data = deflate.compress(payload)
    if len(data) >= len(payload):  # incompressible (already random or compressed data)
        return text_frame(payload)
    return _header(0xC1, len(data)) + data


class SharedFrame:
    """A batch payload and its wire encodings, built once and written to every member.

    ``websocket`` is a plain attribute (not a lazy property): every shared frame
    goes to at least one socket, and the fan-out loop reads it once per member.
    The compressed encoding is built on the first member that negotiated
    permessage-deflate and reused for the others.
    """

    __slots__ = ("_deflated", "payload", "websocket")

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.websocket = text_frame(payload)
        self._deflated: bytes | None = None

    def deflated(self) -> bytes:
        """The frame for members with permessage-deflate (see :func:`deflated_text_frame`)."""
        frame = self._deflated
        if frame is None:
            frame = self._deflated = deflated_text_frame(self.payload)
        return frame
