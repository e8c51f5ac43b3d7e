"""permessage-deflate (RFC 7692) as Tandem uses it: negotiated without context takeover.

Why: a presence storm sends every change to every member, and most of the
server's time went into ``socket.send`` of those frames (docs/performance.md).
Browsers offer ``permessage-deflate`` on every connection. Without context
takeover in both directions a compressed message depends on nothing before
it, so:

* the server compresses a fan-out frame **once** and writes the same bytes to
  every member that negotiated the extension (``server_no_context_takeover``);
* the server keeps **no compression state per connection**: an inbound
  compressed message is inflated on its own (``client_no_context_takeover``),
  so an idle connection costs no zlib window (32 KB or more each).

Sans-IO like the rest of :mod:`runtime.protocol`: header values and payload
bytes in, header values and payload bytes out. The frame decoder
(:mod:`runtime.protocol.websocket`) inflates; :mod:`runtime.protocol.frames`
builds compressed frames.
"""

from __future__ import annotations

import zlib

EXTENSION = "permessage-deflate"

#: What the server answers to an offer it accepts. Both sides start every
#: message from an empty window; the client's window size is not limited
#: (the server inflates with the largest, 15 bits, which reads any smaller one).
RESPONSE = f"{EXTENSION}; server_no_context_takeover; client_no_context_takeover"

#: Payloads shorter than this go out uncompressed (RFC 7692 lets a sender choose
#: per message): below it zlib's setup costs more than the bytes saved.
MIN_COMPRESS_BYTES = 256

#: zlib level 1: about twice as fast as the default level 6 on Tandem's JSON
#: for a ~3 % larger output (measured on a presence flush, docs/performance.md).
LEVEL = 1

#: The empty stored block a sync flush ends with; RFC 7692 section 7.2.1 has the
#: sender drop it and the receiver put it back.
TAIL = b"\x00\x00\xff\xff"

_PARAMETERS = frozenset(
    {
        "server_no_context_takeover",
        "client_no_context_takeover",
        "server_max_window_bits",
        "client_max_window_bits",
    }
)


def negotiate(header_values: list[str]) -> str | None:
    """The ``Sec-WebSocket-Extensions`` response value for the client's offers, or None.

    ``header_values`` are the request's ``Sec-WebSocket-Extensions`` values (the
    header may repeat; each value is a comma-separated list of offers in the
    client's order of preference). The first ``permessage-deflate`` offer Tandem
    can honour wins. An offer is declined when it is malformed (an unknown or
    repeated parameter, a value where none belongs, a window size outside
    8-15) or asks the server for a window under 15 bits: shared frames are
    compressed once, with one window, for every member.
    """
    for value in header_values:
        for offer in value.split(","):
            name, *params = (part.strip() for part in offer.split(";"))
            if name.lower() == EXTENSION and _acceptable(params):
                return RESPONSE
    return None


def _acceptable(params: list[str]) -> bool:
    seen: set[str] = set()
    for param in params:
        key, has_value, raw = param.partition("=")
        key = key.strip().lower()
        value = raw.strip().strip('"')
        if key not in _PARAMETERS or key in seen:
            return False
        seen.add(key)
        if key.endswith("no_context_takeover"):
            if has_value:
                return False
        elif key == "client_max_window_bits":
            # A value is optional here: without one the client only says it can limit it.
            if has_value and not _window_bits(value):
                return False
        elif not has_value or _window_bits(value) != 15:  # server_max_window_bits
            return False
    return True


def _window_bits(value: str) -> int:
    """``value`` as a window size (8-15), or 0 if it is not one."""
    if not value.isdigit() or len(value) > 2:
        return 0
    bits = int(value)
    return bits if 8 <= bits <= 15 else 0


def compress(payload: bytes) -> bytes:
    """``payload`` as one message's compressed data (RFC 7692 section 7.2.1), on its own.

    The window is as small as the payload allows: zlib's setup (its window
    and hash tables) is most of the cost of compressing a short message.
    """
    bits = min(15, max(9, (len(payload) - 1).bit_length()))
    compressor = zlib.compressobj(LEVEL, zlib.DEFLATED, -bits, min(8, bits - 7))
    data = compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return data[:-4] if data.endswith(TAIL) else data


def inflater() -> zlib._Decompress:
    """A decompressor for one inbound message (the client took no context over)."""
    return zlib.decompressobj(-zlib.MAX_WBITS)
