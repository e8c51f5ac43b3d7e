"""permessage-deflate end to end: a client that offers it, next to one that does not.

The compressing client is wsproto's with its own PerMessageDeflate, as a client
library would negotiate it; the plain one is trio-websocket's, which offers no
extension (it would fail on a compressed frame, so it also checks that the server
compresses only for those who asked).
"""

from __future__ import annotations

import zlib
from typing import Any

import orjson
import trio
import trio.testing
from wsproto import WSConnection
from wsproto.connection import ConnectionType
from wsproto.events import AcceptConnection, CloseConnection, Request, TextMessage
from wsproto.extensions import PerMessageDeflate

from runtime.protocol.deflate import TAIL
from runtime.testing import TestServer, open_test_server
from runtime.transport.wire import MemoryClientStream
from tests.e2e.conftest import Inbox


class DeflateClient:
    """A client that offers permessage-deflate; counts the bytes it reads off the wire."""

    def __init__(self, stream: MemoryClientStream, ws: WSConnection) -> None:
        self.stream = stream
        self.ws = ws
        self.pending: list[Any] = []
        self.bytes_in = 0
        self.extensions: list[object] = []
        self.accepted = False

    @classmethod
    async def open(cls, server: TestServer, user: str) -> DeflateClient:
        stream = server.connect_stream()
        ws = WSConnection(ConnectionType.CLIENT)
        client = cls(stream, ws)
        request = Request(
            host="t", target=f"/?token={server.token(user)}", extensions=[PerMessageDeflate()]
        )
        await stream.send_all(ws.send(request))
        while not client.accepted:
            client.receive(await stream.receive_some(65536))
        return client

    def receive(self, data: bytes) -> None:
        self.bytes_in += len(data)
        self.ws.receive_data(data)
        for event in self.ws.events():
            if isinstance(event, AcceptConnection):
                self.accepted = True
                self.extensions = list(event.extensions)
            elif isinstance(event, TextMessage):
                message = orjson.loads(event.data)
                self.pending.extend(message if isinstance(message, list) else [message])
            elif isinstance(event, CloseConnection):
                self.pending.append(event)

    async def next(self) -> Any:
        """The next server event: a decoded JSON message, or a CloseConnection."""
        while not self.pending:
            data = await self.stream.receive_some(65536)
            assert data, "the server ended the stream without a close frame"
            self.receive(data)
        return self.pending.pop(0)

    async def next_of(self, kind: str) -> dict[str, Any]:
        while True:
            message = await self.next()
            if isinstance(message, dict) and message["type"] == kind:
                return message

    async def send(self, **message: Any) -> None:
        await self.stream.send_all(self.ws.send(TextMessage(orjson.dumps(message).decode())))


async def test_the_server_accepts_deflate_without_context_takeover(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_test_server() as server:
        client = await DeflateClient.open(server, "ann")
        [extension] = client.extensions
        assert isinstance(extension, PerMessageDeflate)
        assert extension.server_no_context_takeover and extension.client_no_context_takeover
        assert (await client.next())["type"] == "welcome"


async def test_compressed_and_plain_members_get_the_same_events(
    autojump_clock: trio.testing.MockClock,
) -> None:
    big = {"text": "the quick brown fox " * 200}  # ~4 KB, compresses well
    async with open_test_server() as server, server.websocket(token=server.token("bob")) as b:
        ann = await DeflateClient.open(server, "ann")
        bob = Inbox(b)
        await ann.send(type="session:join", sessionId="doc", ref=1)
        await ann.next_of("session:joined")
        await bob.request(type="session:join", sessionId="doc")
        before = ann.bytes_in
        # Bob (plain) publishes; Ann reads it compressed.
        await bob.request(type="event:publish", sessionId="doc", name="note", data=big)
        assert (await ann.next_of("event"))["data"] == big
        assert ann.bytes_in - before < 1000  # ~4 KB of text in well under 1 KB
        # Ann's client compresses what it sends; the server inflates it.
        await ann.send(type="event:publish", sessionId="doc", name="note", data=big, ref=2)
        assert (await ann.next_of("event:ack"))["seq"] == 2
        event = await bob.next_of("event")
        assert (event["seq"], event["data"], event["userId"]) == (2, big, "ann")


async def test_a_server_with_compression_off_answers_uncompressed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_test_server(compression=False) as server:
        client = await DeflateClient.open(server, "ann")
        assert client.extensions == []
        assert (await client.next())["type"] == "welcome"


async def test_a_zip_bomb_closes_only_its_own_connection_with_1009(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_test_server() as server, server.websocket(token=server.token("bob")) as b:
        bomber = await DeflateClient.open(server, "mallory")
        assert (await bomber.next())["type"] == "welcome"
        bob = Inbox(b)
        await bob.request(type="session:join", sessionId="doc")
        packer = zlib.compressobj(9, zlib.DEFLATED, -15)
        bomb = packer.compress(b" " * 20_000_000) + packer.flush(zlib.Z_SYNC_FLUSH)
        assert bomb.endswith(TAIL) and len(bomb) < 65536  # 20 MB inflated
        payload = bomb[:-4]
        header = bytes((0xC1, 0x80 | 126)) + len(payload).to_bytes(2, "big")
        await bomber.stream.send_all(header + b"\x00\x00\x00\x00" + payload)  # zero mask
        close = await bomber.next()
        assert isinstance(close, CloseConnection) and close.code == 1009
        ack = await bob.request(type="event:publish", sessionId="doc", name="n", data=1)
        assert ack["type"] == "event:ack"
