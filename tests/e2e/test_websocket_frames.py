"""The connection's framing, byte for byte: what a client's frames make the server send.

wsproto opens the connection (the HTTP upgrade); after that the client writes
hand-made frames and reads the server's frames raw, so the test sees exactly
the bytes of each pong and close frame.
"""

from __future__ import annotations

import orjson
import trio
import trio.testing
from wsproto import WSConnection
from wsproto.connection import ConnectionType
from wsproto.events import AcceptConnection, Request

from runtime.testing import TestServer, open_test_server
from runtime.transport.wire import MemoryClientStream

MASK = b"\x01\x02\x03\x04"


def client_frame(opcode: int, payload: bytes = b"", *, fin: bool = True) -> bytes:
    assert len(payload) < 126
    masked = bytes(b ^ MASK[i % 4] for i, b in enumerate(payload))
    return bytes(((0x80 if fin else 0) | opcode, 0x80 | len(payload))) + MASK + masked


class RawSocket:
    """The client end after the upgrade: frames out as given, server frames in as parsed."""

    def __init__(self, stream: MemoryClientStream) -> None:
        self.stream = stream
        self.buffer = b""

    @classmethod
    async def open(cls, server: TestServer) -> RawSocket:
        stream = server.connect_stream()
        ws = WSConnection(ConnectionType.CLIENT)
        await stream.send_all(ws.send(Request(host="tandem.test", target="/")))
        raw = cls(stream)
        while b"\r\n\r\n" not in raw.buffer:
            raw.buffer += await stream.receive_some(65536)
        head, raw.buffer = raw.buffer.split(b"\r\n\r\n", 1)
        ws.receive_data(head + b"\r\n\r\n")
        assert any(isinstance(e, AcceptConnection) for e in ws.events())
        assert (await raw.frame())[0] == 0x1  # welcome
        return raw

    async def frame(self) -> tuple[int, bytes]:
        """The next server frame as (opcode, payload); (-1, b"") at the end of the stream."""
        while True:
            if len(self.buffer) >= 2:
                assert self.buffer[1] & 0x80 == 0, "server frames are never masked"
                n, at = self.buffer[1], 2
                if n == 126:
                    n, at = int.from_bytes(self.buffer[2:4], "big"), 4
                if len(self.buffer) >= at + n:
                    first, payload = self.buffer[0], self.buffer[at : at + n]
                    self.buffer = self.buffer[at + n :]
                    assert first & 0x80, "server frames are whole"
                    return first & 0x0F, payload
            try:
                data = await self.stream.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            if not data:
                return -1, b""
            self.buffer += data

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)


async def test_a_ping_is_answered_with_its_payload(autojump_clock: trio.testing.MockClock) -> None:
    async with open_test_server() as server:
        raw = await RawSocket.open(server)
        await raw.send(client_frame(0x9, b"are you there"))
        assert await raw.frame() == (0xA, b"are you there")


async def test_a_fragmented_message_with_a_ping_between_is_one_message(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_test_server() as server:
        raw = await RawSocket.open(server)
        await raw.send(client_frame(0x1, b'{"type":"pi', fin=False))
        await raw.send(client_frame(0x9, b"mid"))
        await raw.send(client_frame(0x0, b'ng","ref":7}'))
        assert await raw.frame() == (0xA, b"mid")
        opcode, payload = await raw.frame()
        assert opcode == 0x1 and orjson.loads(payload)["ref"] == 7


async def test_a_client_close_is_echoed_with_its_code_and_reason(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_test_server() as server:
        raw = await RawSocket.open(server)
        await raw.send(client_frame(0x8, (4001).to_bytes(2, "big") + b"bye"))
        assert await raw.frame() == (0x8, (4001).to_bytes(2, "big") + b"bye")
        assert await raw.frame() == (-1, b"")


async def test_a_bare_close_is_echoed_bare(autojump_clock: trio.testing.MockClock) -> None:
    async with open_test_server() as server:
        raw = await RawSocket.open(server)
        await raw.send(client_frame(0x8))
        assert await raw.frame() == (0x8, b"")


async def test_invalid_utf8_closes_with_1007(autojump_clock: trio.testing.MockClock) -> None:
    async with open_test_server() as server:
        raw = await RawSocket.open(server)
        await raw.send(client_frame(0x1, b'{"type":"ping"}'))
        assert (await raw.frame())[0] == 0x1  # the message before is still answered
        await raw.send(client_frame(0x1, b'"\xff"'))
        opcode, payload = await raw.frame()
        assert (opcode, payload[:2]) == (0x8, (1007).to_bytes(2, "big"))
        assert await raw.frame() == (-1, b"")


async def test_an_invalid_close_code_closes_with_1002(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_test_server() as server:
        raw = await RawSocket.open(server)
        await raw.send(client_frame(0x8, (1006).to_bytes(2, "big")))
        opcode, payload = await raw.frame()
        assert (opcode, payload[:2]) == (0x8, (1002).to_bytes(2, "big"))


async def test_connections_opened_together_are_pinged_spread_over_the_period(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # presence_timeout 15 s: each connection is checked every 2.5 s and pinged once
    # idle for 5 s. Thirty quiet connections opened at one instant must not all be
    # pinged at one instant (their pongs would come back as one burst, every time).
    async with open_test_server(presence_timeout=15.0) as server:
        raws = [await RawSocket.open(server) for _ in range(30)]
        opened = trio.current_time()
        pinged_at: list[float] = []

        async def first_ping(raw: RawSocket) -> None:
            while (await raw.frame())[0] != 0x9:
                pass
            pinged_at.append(trio.current_time() - opened)

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for raw in raws:
                    nursery.start_soon(first_ping, raw)
        assert len(pinged_at) == 30
        # Idle for a third of the timeout, pinged within one check period after that.
        assert all(5.0 <= t <= 5.0 + 2.5 for t in pinged_at), sorted(pinged_at)
        assert len({round(t, 3) for t in pinged_at}) >= 10, sorted(pinged_at)
