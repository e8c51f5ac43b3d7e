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
    """A batch payload with its wire encoding computed at most once."""

    __slots__ = ("_websocket", "payload")

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self._websocket: bytes | None = None

    @property
    def websocket(self) -> bytes:
        if self._websocket is None:
            self._websocket = text_frame(self.payload)
        return self._websocket
