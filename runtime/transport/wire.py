"""Byte pipes under a connection: a real socket, or an in-memory pair for tests.

The server writes through :meth:`Wire.try_send`, which never waits: the
outbox (``runtime.transport.outbox``) sends directly while the socket can
take data and only then queues. Real sockets use the stdlib socket with
trio's ``wait_readable``/``wait_writable``; :func:`memory_wire_pair` gives
the same interface over memory, so whole servers run under
``MockClock(autojump_threshold=0)`` with no threads and no sockets.
"""

from __future__ import annotations

import errno
import socket
from typing import Protocol

import trio


class Wire(Protocol):
    peer: str

    async def receive_some(self, max_bytes: int) -> bytes:
        """Wait for bytes; ``b""`` at end of stream (or a reset)."""
        ...

    def try_send(self, data: bytes | memoryview) -> int:
        """Send what fits without waiting; returns the count. Raises trio.BrokenResourceError."""
        ...

    async def wait_writable(self) -> None: ...

    def close(self) -> None:
        """Close at once; a task waiting on this wire is woken with an error."""
        ...


class SocketWire:
    """A connected TCP socket, non-blocking, driven through trio's I/O waits."""

    def __init__(self, sock: socket.socket, peer: str) -> None:
        sock.setblocking(False)
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = sock
        self.peer = peer
        self._closed = False
        self._drained = False  # the last read took less than asked: wait before the next

    async def receive_some(self, max_bytes: int) -> bytes:
        # As trio's own socket methods: one checkpoint per call. The wait for
        # readability is one; only bytes read without waiting need a yield of
        # their own. (The extra yield cost ~3 of ~21 µs of CPU per read on quiet
        # sockets: python -m loadgen.receive_cost.)
        # After a read that took less than it asked for, the socket was emptied, and
        # a client that sends a message at a time (a cursor at 20 Hz) has sent
        # nothing more yet: wait for readability first rather than pay a recv() that
        # fails with EAGAIN (31.8 → 28.7 µs of CPU per read in receive_cost). A
        # full read goes on reading at once.
        waited = False
        if self._drained and not self._closed:  # closed: recv() below says so
            await trio.lowlevel.wait_readable(self._sock)
            waited = True
        else:
            await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            try:
                data = self._sock.recv(max_bytes)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(self._sock)
                waited = True
                continue
            except OSError:
                if self._closed:
                    raise trio.ClosedResourceError from None
                return b""  # reset by peer: the same as end of stream to us
            self._drained = len(data) < max_bytes
            if not waited:
                await trio.lowlevel.cancel_shielded_checkpoint()
            return data

    def try_send(self, data: bytes | memoryview) -> int:
        try:
            return self._sock.send(data)
        except BlockingIOError:
            return 0
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                return 0
            raise trio.BrokenResourceError(str(exc)) from exc

    async def wait_writable(self) -> None:
        await trio.lowlevel.wait_writable(self._sock)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            trio.lowlevel.notify_closing(self._sock)
            self._sock.close()


class _Pipe:
    """One direction of an in-memory connection, with a byte capacity."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.buffer = bytearray()
        self.closed = False
        self._changed = trio.Event()

    def notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_change(self) -> None:
        await self._changed.wait()


class MemoryServerWire:
    """The server's end of an in-memory connection."""

    def __init__(self, inbound: _Pipe, outbound: _Pipe, peer: str) -> None:
        self._in = inbound
        self._out = outbound
        self.peer = peer

    async def receive_some(self, max_bytes: int) -> bytes:
        return await _receive(self._in, max_bytes)

    def try_send(self, data: bytes | memoryview) -> int:
        if self._out.closed:
            raise trio.BrokenResourceError("peer closed")
        room = self._out.capacity - len(self._out.buffer)
        n = max(0, min(room, len(data)))
        if n:
            self._out.buffer += data[:n]
            self._out.notify()
        return n

    async def wait_writable(self) -> None:
        while len(self._out.buffer) >= self._out.capacity and not self._out.closed:
            await self._out.wait_change()
        await trio.lowlevel.checkpoint()

    def close(self) -> None:
        for pipe in (self._in, self._out):
            pipe.closed = True
            pipe.notify()


class MemoryClientStream(trio.abc.Stream):
    """The client's end of an in-memory connection: a trio Stream (trio-websocket runs on it)."""

    def __init__(self, inbound: _Pipe, outbound: _Pipe) -> None:
        self._in = inbound
        self._out = outbound

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._out.closed:
            raise trio.BrokenResourceError("server closed")
        self._out.buffer += data
        self._out.notify()
        await trio.lowlevel.checkpoint()

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        return await _receive(self._in, max_bytes or 65536)

    async def send_eof(self) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        self.abort()
        await trio.lowlevel.checkpoint()

    def abort(self) -> None:
        """Vanish without a close frame or FIN being read: like a killed client."""
        for pipe in (self._in, self._out):
            pipe.closed = True
            pipe.notify()


async def _receive(pipe: _Pipe, max_bytes: int) -> bytes:
    while not pipe.buffer and not pipe.closed:
        await pipe.wait_change()
    await trio.lowlevel.checkpoint()
    data = bytes(pipe.buffer[:max_bytes])
    del pipe.buffer[:max_bytes]
    pipe.notify()
    return data


def memory_wire_pair(
    *, capacity: int = 1 << 20, peer: str = "memory"
) -> tuple[MemoryServerWire, MemoryClientStream]:
    """A connected (server wire, client stream) pair; ``capacity`` bounds server-to-client bytes."""
    to_server = _Pipe(capacity=1 << 30)
    to_client = _Pipe(capacity=capacity)
    return MemoryServerWire(to_server, to_client, peer), MemoryClientStream(to_client, to_server)
