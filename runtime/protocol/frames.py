"""Server-to-client WebSocket text frames, built once and shared by every member.

A server's frames are unmasked and Tandem negotiates no extensions, so the
bytes of a frame do not depend on the recipient: a session encodes each batch
once (RFC 6455 section 5.2) and writes the same bytes to every socket.
"""

from __future__ import annotations

import struct


def text_frame(payload: bytes) -> bytes:
    """One final, unmasked text frame carrying ``payload``."""
    n = len(payload)
    if n < 126:
        header = bytes((0x81, n))
    elif n < 1 << 16:
        header = struct.pack("!BBH", 0x81, 126, n)
    else:
        header = struct.pack("!BBQ", 0x81, 127, n)
    return header + payload


class SharedFrame:
    """A batch payload and its wire encoding, built once and written to every member.

    ``websocket`` is a plain attribute (not a lazy property): every shared frame
    goes to at least one socket, and the fan-out loop reads it once per member.
    """

    __slots__ = ("payload", "websocket")

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.websocket = text_frame(payload)
