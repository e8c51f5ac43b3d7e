"""The server side of an open WebSocket (RFC 6455): client frames in, events out.

Why this exists: wsproto's receive path (a generator step, a ``Buffer`` and a
``Frame`` tuple per frame, an XOR masker object per frame, an event object per
fragment) was about 30 % of the server's CPU in a presence storm of many small
messages (docs/performance.md). Tandem needs little: whole text messages,
pings, pongs, closes, failures with the close code RFC 6455 asks for, and
permessage-deflate without client context takeover (RFC 7692; each compressed
message is inflated on its own, :mod:`runtime.protocol.deflate`). That is small
enough to write plainly, once.

Sans-IO, like h11 and wsproto (which still does the HTTP upgrade): no sockets
and no trio. Feed the bytes read from the socket to
:meth:`ServerWebSocket.receive_data`; it returns what they completed:

* a ``str`` — one whole text message (fragments reassembled, UTF-8 checked);
  the hot case, so it carries no wrapper object;
* :class:`BinaryMessage` — a whole binary message (its bytes are not kept);
* :class:`Ping`, :class:`Pong`, :class:`Close` — control frames from the client;
* :class:`Failure` — the client broke the protocol (or a message is over the
  size limit): send a close frame with its code and stop reading. Nothing
  after a ``Failure`` or a ``Close`` is parsed.

The frames the server sends are built by :func:`close_frame`,
:func:`ping_frame` and :func:`pong_frame` here, and by
:func:`runtime.protocol.frames.text_frame`: server frames are never masked.
"""

from __future__ import annotations

import codecs
import enum
import zlib
from typing import TypeAlias

import attrs

from runtime.protocol import deflate

# Close codes this module produces (RFC 6455 section 7.4.1).
PROTOCOL_ERROR = 1002
NO_STATUS = 1005  # a close frame without a payload; never sent on the wire
INVALID_DATA = 1007
MESSAGE_TOO_BIG = 1009

_CONTINUATION, _TEXT, _BINARY = 0x0, 0x1, 0x2
_CLOSE, _PING, _PONG = 0x8, 0x9, 0xA

#: Payloads shorter than this are unmasked through one big int (a few C calls);
#: longer ones four byte lanes at a time with ``bytes.translate``, which costs
#: less per byte but more per call. Measured crossover: 300-500 bytes.
_INT_XOR_BELOW = 384
_XOR_TABLES = [bytes(a ^ b for a in range(256)) for b in range(256)]

_utf8_decoder = codecs.getincrementaldecoder("utf-8")


@attrs.frozen
class BinaryMessage:
    """A whole binary message; Tandem only refuses these, so only the size is kept."""

    size: int


@attrs.frozen
class Ping:
    payload: bytes


@attrs.frozen
class Pong:
    payload: bytes


@attrs.frozen
class Close:
    """The client's close frame. ``code`` is 1005 when the frame had no payload."""

    code: int
    reason: str


@attrs.frozen
class Failure:
    """The client broke the protocol: close the connection with ``code``."""

    code: int
    reason: str


Event: TypeAlias = str | BinaryMessage | Ping | Pong | Close | Failure


class State(enum.Enum):
    """Where the closing handshake is (RFC 6455 section 7)."""

    OPEN = 1
    REMOTE_CLOSING = 2  # the client sent its close frame; ours answers it
    LOCAL_CLOSING = 3  # we sent ours and wait for the client's
    CLOSED = 4  # both close frames went by


class _Fail(Exception):
    """Internal: unwinds the parse loop into a :class:`Failure` event."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class ServerWebSocket:
    """One accepted connection's framing state, after the HTTP upgrade.

    ``max_message_bytes`` bounds a whole message (all its fragments): a frame
    whose header says it would pass the bound fails with 1009 before any of
    its payload is buffered, so a client cannot make the server hold more than
    one message of at most that size (plus a frame header and one read). A
    compressed message (``deflate``: permessage-deflate was negotiated) is
    bounded twice: its compressed frames as above, and its inflated size, which
    fails with 1009 as soon as inflating passes the bound (no zip bombs). While
    a compressed message is in flight its inflater holds ~40 KB of zlib state,
    less than the 64 KB a plain fragmented message may hold by default.
    """

    # One per client connection: kept to a few slots (docs/performance.md counts
    # the bytes of an idle connection). Text fragments and the inflater live only
    # while a message is in flight.
    __slots__ = (
        "_buffer",
        "_decoder",
        "_deflate",
        "_inflated",
        "_inflater",
        "_max",
        "_need",
        "_opcode",
        "_parts",
        "_size",
        "state",
    )

    def __init__(self, max_message_bytes: int, *, deflate: bool = False) -> None:
        self.state = State.OPEN
        self._max = max_message_bytes
        self._deflate = deflate  # RSV1 marks a compressed message
        self._inflater: zlib._Decompress | None = None  # of the compressed message in flight
        self._inflated = 0  # its inflated bytes so far
        # Unparsed bytes (an incomplete frame); None once a close or failure ended reading.
        self._buffer: bytearray | None = bytearray()
        self._need = 0  # bytes the buffered frame needs before parsing can progress
        self._opcode = 0  # of the fragmented message in flight; 0: none
        self._size = 0  # payload bytes of that message so far
        self._parts: list[str] | None = None  # its text so far
        self._decoder: codecs.IncrementalDecoder | None = None  # UTF-8 across its fragments

    # -- receiving ----------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[Event]:
        """Parse ``data`` (bytes read from the socket); return the events it completes."""
        buffer = self._buffer
        if buffer is None:
            return []
        view: bytes | bytearray
        if buffer:
            buffer += data
            if len(buffer) < self._need:
                return []  # a large frame trickling in: nothing to parse yet
            view = buffer
        else:
            view = data  # the common case: parse the read itself, no copy
        events: list[Event] = []
        try:
            pos = self._parse(view, events)
        except _Fail as failure:
            events.append(Failure(failure.code, failure.reason))
            self._stop()
            return events
        if self._buffer is None:  # a close frame ended the stream
            return events
        # Drop what was parsed once per read, not once per frame.
        if view is buffer:
            del buffer[:pos]
        elif pos < len(data):
            buffer += memoryview(data)[pos:]
        return events

    def _parse(self, view: bytes | bytearray, events: list[Event]) -> int:
        """Append the events of the complete frames in ``view``; return the bytes used."""
        end = len(view)
        pos = 0
        while True:
            available = end - pos
            if available < 2:
                self._need = 2
                return pos
            b0 = view[pos]
            b1 = view[pos + 1]
            opcode = b0 & 0x0F
            length = b1 & 0x7F
            compressed = b0 & 0x40
            if b0 & 0x70:
                self._check_reserved_bits(b0, opcode)
            if not b1 & 0x80:
                raise _Fail(PROTOCOL_ERROR, "client frames must be masked")
            if opcode & 0x08:
                if opcode > _PONG:
                    raise _Fail(PROTOCOL_ERROR, f"unknown opcode {opcode:#x}")
                if not b0 & 0x80:
                    raise _Fail(PROTOCOL_ERROR, "control frames must not be fragmented")
                if length > 125:
                    raise _Fail(PROTOCOL_ERROR, "control frame payload over 125 bytes")
                header = 6
            else:
                if opcode > _BINARY:
                    raise _Fail(PROTOCOL_ERROR, f"unknown opcode {opcode:#x}")
                if length < 126:
                    header = 6
                elif length == 126:
                    if available < 4:
                        self._need = 4
                        return pos
                    length = (view[pos + 2] << 8) | view[pos + 3]
                    if length < 126:
                        raise _Fail(PROTOCOL_ERROR, "payload length not minimally encoded")
                    header = 8
                else:
                    if available < 10:
                        self._need = 10
                        return pos
                    length = int.from_bytes(view[pos + 2 : pos + 10], "big")
                    if length < 1 << 16:
                        raise _Fail(PROTOCOL_ERROR, "payload length not minimally encoded")
                    if length >> 63:
                        raise _Fail(PROTOCOL_ERROR, "payload length has its top bit set")
                    header = 14
                if opcode == _CONTINUATION:
                    if not self._opcode:
                        raise _Fail(PROTOCOL_ERROR, "continuation frame without a message")
                elif self._opcode:
                    raise _Fail(PROTOCOL_ERROR, "new message before the last one finished")
                # Refused on the header alone: the payload is never buffered.
                if self._size + length > self._max:
                    raise _Fail(MESSAGE_TOO_BIG, f"message over {self._max} bytes")
            frame_end = pos + header + length
            if frame_end > end:
                self._need = header + length
                return pos
            payload = _unmask(view[pos + header : frame_end], view[pos + header - 4 : pos + header])
            pos = frame_end
            fin = b0 & 0x80
            if opcode == _TEXT and fin and not compressed:  # the hot case: one whole frame
                try:
                    events.append(payload.decode())
                except UnicodeDecodeError:
                    raise _Fail(INVALID_DATA, "text message is not valid UTF-8") from None
            elif opcode < _CLOSE:
                if compressed:
                    self._inflater = deflate.inflater()
                self._data_frame(opcode, fin, payload, events)
            elif opcode == _PING:
                events.append(Ping(payload))
            elif opcode == _PONG:
                events.append(Pong(payload))
            else:
                events.append(self._close(payload))
                return pos

    def _check_reserved_bits(self, b0: int, opcode: int) -> None:
        """Fail unless the only reserved bit is RSV1 on the first frame of a compressed message."""
        if not self._deflate:
            raise _Fail(PROTOCOL_ERROR, "reserved bits set; no extension was negotiated")
        if b0 & 0x30:
            raise _Fail(PROTOCOL_ERROR, "RSV2 or RSV3 set; permessage-deflate uses only RSV1")
        if opcode == _CONTINUATION or opcode & 0x08:
            # RFC 7692 section 6: only a message's first frame says it is compressed.
            raise _Fail(PROTOCOL_ERROR, "RSV1 set on a continuation or control frame")

    def _data_frame(self, opcode: int, fin: int, payload: bytes, events: list[Event]) -> None:
        """A fragment of a message (or a whole binary one): reassemble, check UTF-8 as it comes."""
        if opcode != _CONTINUATION:
            self._opcode = opcode
            if opcode == _TEXT:
                self._decoder = _utf8_decoder()
                self._parts = []
        self._size += len(payload)
        if self._inflater is not None:
            payload = self._inflate(payload, fin)
        decoder = self._decoder
        if decoder is not None:
            assert self._parts is not None
            try:
                # Checked fragment by fragment: a broken message fails early (RFC 6455 8.1).
                self._parts.append(decoder.decode(payload, bool(fin)))
            except UnicodeDecodeError:
                raise _Fail(INVALID_DATA, "text message is not valid UTF-8") from None
        if not fin:
            return
        if decoder is not None:
            assert self._parts is not None
            events.append("".join(self._parts))
        else:
            events.append(BinaryMessage(self._size if self._inflater is None else self._inflated))
        self._opcode = 0
        self._size = 0
        self._parts = None
        self._decoder = None
        self._inflater = None
        self._inflated = 0

    def _inflate(self, data: bytes, fin: int) -> bytes:
        """Inflate one fragment of a compressed message, never past ``max_message_bytes``."""
        inflater = self._inflater
        assert inflater is not None
        if fin:
            data += deflate.TAIL  # RFC 7692 section 7.2.2: the sender dropped it
        room = self._max - self._inflated
        try:
            # Asking for one byte more than the room left tells "too big" from "exactly full".
            out = inflater.decompress(data, room + 1)
        except zlib.error:
            raise _Fail(INVALID_DATA, "compressed message is not valid DEFLATE data") from None
        if len(out) > room:
            raise _Fail(MESSAGE_TOO_BIG, f"message over {self._max} bytes once inflated")
        self._inflated += len(out)
        return out

    def _close(self, payload: bytes) -> Close:
        if not payload:
            code, reason = NO_STATUS, ""
        elif len(payload) == 1:
            raise _Fail(PROTOCOL_ERROR, "close frame with a 1-byte payload")
        else:
            code = (payload[0] << 8) | payload[1]
            if not valid_close_code(code):
                raise _Fail(PROTOCOL_ERROR, f"close code {code} is not allowed")
            try:
                reason = payload[2:].decode()
            except UnicodeDecodeError:
                # 1007 as wsproto did: RFC 6455 8.1 treats every invalid UTF-8 alike.
                raise _Fail(INVALID_DATA, "close reason is not valid UTF-8") from None
        self.state = State.CLOSED if self.state is State.LOCAL_CLOSING else State.REMOTE_CLOSING
        self._stop()
        return Close(code, reason)

    def _stop(self) -> None:
        """Read nothing more: after a close frame or a failure the stream is over."""
        self._buffer = None
        self._parts = None
        self._decoder = None
        self._inflater = None

    # -- sending ------------------------------------------------------------------

    def send_close(self, code: int, reason: str = "") -> bytes:
        """Our close frame, moving the closing handshake on (OPEN or REMOTE_CLOSING only)."""
        if self.state is State.OPEN:
            self.state = State.LOCAL_CLOSING
        elif self.state is State.REMOTE_CLOSING:
            self.state = State.CLOSED
        else:
            raise RuntimeError(f"close frame already sent (state {self.state.name})")
        return close_frame(code, reason)


def valid_close_code(code: int) -> bool:
    """Whether a client may send ``code`` (RFC 6455 section 7.4, IANA's registry).

    1004 is reserved, 1005, 1006 and 1015 are for local use only, 1016-2999
    are unassigned protocol codes; 3000-4999 belong to libraries and applications.
    """
    if 1000 <= code <= 1014:
        return code not in (1004, 1005, 1006)
    return 3000 <= code <= 4999


def _unmask(payload: bytes | bytearray, mask: bytes | bytearray) -> bytes:
    """XOR ``payload`` with the frame's repeating 4-byte ``mask`` (RFC 6455 section 5.3)."""
    n = len(payload)
    if n < _INT_XOR_BELOW:
        if not n:
            return b""
        # As one integer: four C calls, no per-byte Python work. The mask is
        # repeated past the payload and the surplus sliced off after.
        words = (n >> 2) + 1
        value = int.from_bytes(payload, "little") ^ int.from_bytes(mask * words, "little")
        return value.to_bytes(words << 2, "little")[:n]
    data = bytearray(payload)
    for lane in range(4):
        data[lane::4] = data[lane::4].translate(_XOR_TABLES[mask[lane]])
    return bytes(data)


# -- frames the server sends (unmasked, RFC 6455 section 5.1) -------------------------


def _control_frame(opcode: int, payload: bytes) -> bytes:
    if len(payload) > 125:
        raise ValueError("control frame payloads are at most 125 bytes")
    return bytes((0x80 | opcode, len(payload))) + payload


def close_frame(code: int, reason: str = "") -> bytes:
    """A close frame; ``reason`` is cut to fit 125 bytes, never inside a character.

    1005 ("no status", what a close frame without a payload reads as) is sent
    as a close frame without a payload: echoing a bare close stays bare.
    """
    if code == NO_STATUS:
        return _control_frame(_CLOSE, b"")
    encoded = reason.encode()
    if len(encoded) > 123:
        encoded = encoded[:123].decode(errors="ignore").encode()
    return _control_frame(_CLOSE, code.to_bytes(2, "big") + encoded)


def ping_frame(payload: bytes = b"") -> bytes:
    return _control_frame(_PING, payload)


def pong_frame(payload: bytes = b"") -> bytes:
    """The answer to a client's ping: the same payload (RFC 6455 section 5.5.3)."""
    return _control_frame(_PONG, payload)
