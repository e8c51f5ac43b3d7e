"""RESP2, sans-IO: commands encoded to bytes, replies parsed from bytes fed in.

No sockets here. :func:`encode_command` turns one command into the bytes Redis
expects; :class:`RespParser` is fed whatever the socket returned, in pieces of
any size, and hands back every complete reply in order:

====================  ===========================
RESP2                 Python
====================  ===========================
``+OK``               ``str``
``-ERR ...``          :class:`ReplyError` (returned, not raised)
``:42``               ``int``
``$3 foo``            ``bytes``
``$-1`` / ``*-1``     ``None``
``*2 ...``            ``list``
====================  ===========================

A pub/sub push (``message``, ``subscribe`` confirmations...) is an array like
any other reply; telling them apart is the connection's business.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Union

#: A parsed reply (recursive through lists).
Reply = Union[str, bytes, int, None, "ReplyError", list["Reply"]]

#: A bulk string may be at most this long (Redis's own proto-max-bulk-len default).
MAX_BULK = 512 * 1024 * 1024

_CRLF = b"\r\n"


class ReplyError(Exception):
    """An error reply (``-ERR ...``); the parser returns it, the caller decides to raise."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ReplyError) and other.args == self.args

    def __hash__(self) -> int:
        return hash(self.args)


class ProtocolError(Exception):
    """The bytes are not RESP2: the connection cannot be trusted any more."""


class _Incomplete(Exception):
    """Not enough bytes yet for a whole reply."""


def _arg(value: bytes | str | int) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value).encode()
    raise TypeError(f"a command argument must be bytes, str or int, not {type(value).__name__}")


def encode_command(*args: bytes | str | int) -> bytes:
    """One command as an array of bulk strings (``PUBLISH ch data`` -> bytes)."""
    if not args:
        raise ValueError("an empty command")
    parts = [b"*%d\r\n" % len(args)]
    for value in args:
        data = _arg(value)
        parts.append(b"$%d\r\n" % len(data))
        parts.append(data)
        parts.append(_CRLF)
    return b"".join(parts)


def encode_reply(value: Reply) -> bytes:
    """A reply as Redis would send it: the inverse of :class:`RespParser` (tests, fakes)."""
    if value is None:
        return b"$-1\r\n"
    if isinstance(value, ReplyError):
        text = str(value.args[0]) if value.args else ""
        _check_line(text)
        return b"-" + text.encode() + _CRLF
    if isinstance(value, str):
        _check_line(value)
        return b"+" + value.encode() + _CRLF
    if isinstance(value, bool):
        raise TypeError("bool is not a RESP2 value")
    if isinstance(value, int):
        return b":%d\r\n" % value
    if isinstance(value, bytes):
        return b"$%d\r\n%s\r\n" % (len(value), value)
    if isinstance(value, list):
        return b"*%d\r\n" % len(value) + b"".join(encode_reply(item) for item in value)
    raise TypeError(f"not a RESP2 value: {type(value).__name__}")


def _check_line(text: str) -> None:
    if "\r" in text or "\n" in text:
        raise ValueError("a simple string or error cannot contain CR or LF")


class RespParser:
    """Incremental RESP2 parser: :meth:`feed` bytes, then take replies with :meth:`replies`."""

    def __init__(self, *, max_bulk: int = MAX_BULK) -> None:
        self._buf = bytearray()
        self._pos = 0  # start of the first reply not yet returned
        self._max_bulk = max_bulk

    def feed(self, data: bytes) -> None:
        self._buf += data

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as part of a reply."""
        return len(self._buf) - self._pos

    def replies(self) -> Iterator[Reply]:
        """Every complete reply buffered, in order; stops (keeping the rest) when one is partial.

        Raises :class:`ProtocolError` on bytes that are not RESP2.
        """
        try:
            while self._pos < len(self._buf):
                try:
                    value, self._pos = self._parse(self._pos)
                except _Incomplete:
                    return
                yield value
        finally:
            if self._pos:  # drop what was consumed (one copy per batch, not per reply)
                del self._buf[: self._pos]
                self._pos = 0

    def _line(self, pos: int) -> int:
        end = self._buf.find(_CRLF, pos)
        if end < 0:
            if len(self._buf) - pos > 64 * 1024:  # a header line is never this long
                raise ProtocolError("no CRLF in 64 KiB")
            raise _Incomplete
        return end

    def _int(self, pos: int, end: int) -> int:
        raw = bytes(self._buf[pos:end])
        # int() would accept " 1", "1_0", "+1": RESP does not.
        body = raw[1:] if raw[:1] == b"-" else raw
        if not body.isdigit() or not body.isascii():
            raise ProtocolError(f"not an integer: {raw!r}")
        return int(raw)

    def _parse(self, pos: int) -> tuple[Reply, int]:
        buf = self._buf
        end = self._line(pos)
        kind = buf[pos]
        if kind == 0x24:  # $ bulk string
            n = self._int(pos + 1, end)
            if n == -1:
                return None, end + 2
            if n < 0 or n > self._max_bulk:
                raise ProtocolError(f"bad bulk length {n}")
            start = end + 2
            stop = start + n
            if len(buf) < stop + 2:
                raise _Incomplete
            if buf[stop : stop + 2] != _CRLF:
                raise ProtocolError("bulk string not followed by CRLF")
            return bytes(buf[start:stop]), stop + 2
        if kind == 0x2A:  # * array
            n = self._int(pos + 1, end)
            if n == -1:
                return None, end + 2
            if n < 0:
                raise ProtocolError(f"bad array length {n}")
            items: list[Reply] = []
            pos = end + 2
            for _ in range(n):
                item, pos = self._parse(pos)
                items.append(item)
            return items, pos
        if kind == 0x2B:  # + simple string
            return self._text(pos, end), end + 2
        if kind == 0x3A:  # : integer
            return self._int(pos + 1, end), end + 2
        if kind == 0x2D:  # - error
            return ReplyError(self._text(pos, end)), end + 2
        raise ProtocolError(f"unknown reply type {bytes([kind])!r}")

    def _text(self, pos: int, end: int) -> str:
        try:
            return self._buf[pos + 1 : end].decode()
        except UnicodeDecodeError as exc:
            raise ProtocolError(f"simple string is not UTF-8: {exc}") from exc
