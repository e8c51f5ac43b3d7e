"""SocketWire's reads over a real socket pair: what they return and what they cost."""

from __future__ import annotations

import socket

import pytest
import trio

from runtime.transport.wire import SocketWire


class CountingSocket(socket.socket):
    """A socket that counts its recv() calls, EAGAIN included."""

    recvs = 0

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        self.recvs += 1
        return super().recv(bufsize, flags)


def _pair() -> tuple[CountingSocket, socket.socket]:
    ours, theirs = socket.socketpair()
    return CountingSocket(fileno=ours.detach()), theirs


async def test_a_quiet_socket_costs_one_recv_per_message() -> None:
    ours, theirs = _pair()
    wire = SocketWire(ours, "test")
    with theirs, trio.fail_after(5):
        got = []
        for n in range(5):
            async with trio.open_nursery() as nursery:

                async def send_later(n: int = n) -> None:
                    await trio.sleep(0.01)  # the reader is waiting by then
                    theirs.send(b"m%d" % n)

                nursery.start_soon(send_later)
                got.append(await wire.receive_some(65536))
        wire.close()
    assert got == [b"m0", b"m1", b"m2", b"m3", b"m4"]
    # The first read finds the socket empty (EAGAIN), then reads; every later one
    # follows a short read, so it waits for readability and reads once.
    assert ours.recvs == 2 + 4


async def test_a_full_read_reads_on_at_once_and_nothing_is_lost() -> None:
    ours, theirs = _pair()
    wire = SocketWire(ours, "test")
    with theirs, trio.fail_after(5):
        theirs.sendall(b"x" * 10 + b"y" * 3)
        assert await wire.receive_some(10) == b"x" * 10  # full: more may be queued
        assert await wire.receive_some(10) == b"yyy"  # read at once, no wait
        assert ours.recvs == 2
        theirs.send(b"z")  # sent before the next call: still read after the short one
        assert await wire.receive_some(10) == b"z"
        theirs.shutdown(socket.SHUT_WR)
        assert await wire.receive_some(10) == b""  # end of stream
        assert await wire.receive_some(10) == b""  # and again, not a hang
        wire.close()


async def test_a_waiting_read_is_cancellable_and_woken_by_close() -> None:
    ours, theirs = _pair()
    wire = SocketWire(ours, "test")
    with theirs, trio.fail_after(5):
        theirs.send(b"a")
        assert await wire.receive_some(100) == b"a"  # short: the next read waits first
        with trio.move_on_after(0.01) as scope:
            await wire.receive_some(100)
        assert scope.cancelled_caught

        async def close_soon() -> None:
            await trio.sleep(0.01)
            wire.close()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(close_soon)
            with pytest.raises(trio.ClosedResourceError):
                await wire.receive_some(100)
        with pytest.raises(trio.ClosedResourceError):  # and a read after the close
            await wire.receive_some(100)
