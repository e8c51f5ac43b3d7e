"""The generator's minimal WebSocket client: framing, batching and counting."""

from __future__ import annotations

import asyncio
import time
import zlib

import orjson
import pytest

from loadgen.wsclient import Stats, WsConnection
from runtime.protocol import messages as wire
from runtime.protocol.codec import encode


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def abort(self) -> None:
        pass

    def close(self) -> None:
        pass


def server_frame(payload: bytes, opcode: int = 1) -> bytes:
    n = len(payload)
    head = bytes((0x80 | opcode, n)) if n < 126 else bytes((0x80 | opcode, 126)) + n.to_bytes(2)
    return head + payload


def make_conn(
    socketio: bool = False, *, compression: bool = False
) -> tuple[WsConnection, Stats, list[str], FakeTransport]:
    stats = Stats()
    joined: list[str] = []
    conn = WsConnection(
        "127.0.0.1",
        1,
        "/",
        socketio,
        b'{"type":"session:join"}',
        stats,
        lambda c: joined.append("j"),
        lambda c, r: joined.append(r),
        compression=compression,
    )
    transport = FakeTransport()
    conn.connection_made(transport)
    return conn, stats, joined, transport


def test_counts_every_event_of_a_batched_frame_even_when_split_across_reads() -> None:
    conn, stats, joined, transport = make_conn()
    conn.data_received(b"HTTP/1.1 101 Switching Protocols\r\n\r\n")
    assert transport.written.endswith(b'{"type":"session:join"}')
    conn.data_received(server_frame(b'{"type":"session:joined","sessionId":"s1","seq":0}'))
    assert joined == ["j"]
    t = time.time_ns() // 1000
    batch = orjson.dumps(
        [{"type": "event", "seq": i, "data": {"t": t, "pad": "x" * 40}, "ts": 1} for i in range(3)]
        + [{"type": "event:ack", "ref": "r1", "seq": 3}]
    )
    wire = server_frame(batch)
    conn.data_received(wire[:5])
    conn.data_received(wire[5:])
    assert stats.events == 3
    assert stats.acks == 1
    assert len(stats.latency_us) == 3


def test_socketio_handshake_and_engine_io_ping() -> None:
    conn, stats, joined, transport = make_conn(socketio=True)
    conn.data_received(b"HTTP/1.1 101 Switching Protocols\r\n\r\n" + server_frame(b'0{"sid":"a"}'))
    assert transport.written.endswith(b"40")
    conn.data_received(server_frame(b'40{"sid":"b"}'))
    assert transport.written.endswith(b'42["msg",{"type":"session:join"}]')
    conn.data_received(server_frame(b'42["msg",{"type":"session:joined"}]') + server_frame(b"2"))
    assert joined == ["j"]
    assert transport.written.endswith(b"3")
    conn.data_received(server_frame(b'42["msg",{"type":"presence","state":{"pt":1,"pad":""}}]'))
    assert stats.presence == 1


def test_presence_echoed_to_its_sender_is_not_counted() -> None:
    conn, stats, _, _ = make_conn()
    conn.own_id = b"7"
    conn.data_received(b"HTTP/1.1 101 Switching Protocols\r\n\r\n")
    conn.data_received(server_frame(b'{"type":"session:joined"}'))
    changes = b'{"type":"presence","changes":[{"state":{"pt":5,"pc":7}},{"state":{"pt":5,"pc":8}}]}'
    conn.data_received(server_frame(changes))
    assert (stats.presence, stats.self_echoes) == (1, 1)


def test_lean_presence_entries_as_the_server_encodes_them_are_counted() -> None:
    conn, stats, _, _ = make_conn()
    conn.data_received(b"HTTP/1.1 101 Switching Protocols\r\n\r\n")
    conn.data_received(server_frame(b'{"type":"session:joined"}'))
    changes = [
        {"userId": "user-1", "state": {"pt": 5, "pc": 8, "pad": "x" * 40}},  # a cursor move
        {"userId": "user-2", "status": "away"},  # no state: nothing to count
    ]
    conn.data_received(server_frame(encode(wire.presence("s", changes))))
    assert stats.presence == 1
    assert conn.presence_seen == {b"8": 5}


def test_a_non_observer_answers_pings_but_counts_nothing() -> None:
    conn, stats, joined, transport = make_conn()
    conn.observes = False
    conn.data_received(b"HTTP/1.1 101 Switching Protocols\r\n\r\n")
    conn.data_received(server_frame(b'{"type":"session:joined"}'))
    assert joined == ["j"]  # joining is still seen
    conn.data_received(server_frame(b'{"type":"presence","changes":[{"state":{"pt":5,"pc":8}}]}'))
    assert (stats.presence, conn.presence_seen) == (0, {})
    conn.data_received(bytes((0x89, 2)) + b"hi")  # ping
    assert transport.written.endswith(bytes((0x8A, 0x80 | 2)) + b"\0\0\0\0hi")


def _compressed(payloads: list[bytes], *, takeover: bool) -> list[bytes]:
    """Server frames for ``payloads``, RSV1 set, with one context for all or one each."""
    frames = []
    shared = zlib.compressobj(1, zlib.DEFLATED, -15)
    for payload in payloads:
        packer = shared if takeover else zlib.compressobj(1, zlib.DEFLATED, -15)
        data = (packer.compress(payload) + packer.flush(zlib.Z_SYNC_FLUSH))[:-4]
        n = len(data)
        head = bytes((0xC1, n)) if n < 126 else bytes((0xC1, 126)) + n.to_bytes(2)
        frames.append(head + data)
    return frames


@pytest.mark.parametrize("takeover", [False, True], ids=["no-context-takeover", "takeover"])
def test_compressed_frames_are_inflated_with_the_servers_context_choice(takeover: bool) -> None:
    conn, stats, joined, transport = make_conn(compression=True)
    assert b"Sec-WebSocket-Extensions: permessage-deflate" in transport.written
    answer = b"permessage-deflate" + (b"" if takeover else b"; server_no_context_takeover")
    conn.data_received(b"HTTP/1.1 101 OK\r\nSec-WebSocket-Extensions: " + answer + b"\r\n\r\n")
    t = time.time_ns() // 1000
    event = orjson.dumps({"type": "event", "data": {"t": t, "pad": "x" * 300}})
    frames = _compressed(
        [b'{"type":"session:joined","pad":"' + b"y" * 300 + b'"}', event, event], takeover=takeover
    )
    conn.data_received(b"".join(frames))
    assert joined == ["j"]
    assert stats.events == 2 and stats.protocol_errors == 0
