"""The generator's minimal WebSocket client: framing, batching and counting."""

from __future__ import annotations

import asyncio
import time

import orjson

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


def make_conn(socketio: bool = False) -> tuple[WsConnection, Stats, list[str], FakeTransport]:
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
