"""permessage-deflate (RFC 7692): the offer Tandem accepts, and compressed frames both ways.

wsproto's own permessage-deflate is the other side of the wire here: it
compresses what a client sends, and inflates what the server sends, the way a
client library would.
"""

from __future__ import annotations

import random
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import FrameProtocol, Opcode

from runtime.protocol import deflate
from runtime.protocol.frames import SharedFrame, deflated_text_frame, text_frame
from runtime.protocol.websocket import (
    INVALID_DATA,
    MESSAGE_TOO_BIG,
    PROTOCOL_ERROR,
    BinaryMessage,
    Event,
    Failure,
    Ping,
    ServerWebSocket,
)

MASK = b"\x37\xfa\x21\x3d"
TEXT, BINARY, CONTINUATION, PING = 0x1, 0x2, 0x0, 0x9
RSV1, RSV2, RSV3 = 0x40, 0x20, 0x10


def frame(opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0) -> bytes:
    """A masked client frame, built byte by byte."""
    n = len(payload)
    first = (0x80 if fin else 0) | rsv | opcode
    if n < 126:
        header = bytes((first, 0x80 | n))
    elif n < 1 << 16:
        header = bytes((first, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((first, 0x80 | 127)) + n.to_bytes(8, "big")
    return header + MASK + bytes(b ^ MASK[i % 4] for i, b in enumerate(payload))


def compressed(data: bytes) -> bytes:
    """``data`` as a client compresses one message: sync flush, tail dropped."""
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    out = c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(deflate.TAIL)
    return out[:-4]


def feed(*chunks: bytes, limit: int = 65536, negotiated: bool = True) -> list[Event]:
    ws = ServerWebSocket(limit, deflate=negotiated)
    events: list[Event] = []
    for chunk in chunks:
        events += ws.receive_data(chunk)
    return events


def failure_code(*chunks: bytes, limit: int = 65536, negotiated: bool = True) -> int:
    events = feed(*chunks, limit=limit, negotiated=negotiated)
    assert isinstance(events[-1], Failure), events
    return events[-1].code


# -- negotiation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "offers",
    [
        ["permessage-deflate; client_max_window_bits"],  # what Chromium and Firefox send
        ["permessage-deflate"],
        ["permessage-deflate; server_max_window_bits=15; client_max_window_bits=10"],
        ['permessage-deflate; server_max_window_bits="15"'],
        ["permessage-deflate; server_no_context_takeover; client_no_context_takeover"],
        ["x-webkit-deflate-frame", "PERMESSAGE-DEFLATE"],  # another extension first
        # The first offer asks for a small server window; the fallback is taken.
        ["permessage-deflate; server_max_window_bits=10, permessage-deflate"],
    ],
)
def test_an_acceptable_offer_is_answered_without_context_takeover(offers: list[str]) -> None:
    assert deflate.negotiate(offers) == (
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
    )


@pytest.mark.parametrize(
    "offers",
    [
        [],
        ["x-webkit-deflate-frame"],
        ["permessage-deflate; server_max_window_bits=10"],  # one window for every member
        ["permessage-deflate; server_max_window_bits"],  # the value is required
        ["permessage-deflate; client_max_window_bits=7"],
        ["permessage-deflate; client_max_window_bits=16"],
        ["permessage-deflate; client_max_window_bits=0x0f"],
        ["permessage-deflate; server_no_context_takeover=1"],
        ["permessage-deflate; client_no_context_takeover; client_no_context_takeover"],
        ["permessage-deflate; level=9"],  # an unknown parameter
    ],
)
def test_an_offer_tandem_cannot_honour_is_declined(offers: list[str]) -> None:
    assert deflate.negotiate(offers) is None


def test_what_the_server_answers_is_what_wsproto_s_client_accepts() -> None:
    client = PerMessageDeflate()
    offered = f"{client.name}; {client.offer()}"
    answer = deflate.negotiate([offered])
    assert answer is not None
    client.finalize(answer)
    assert client.server_no_context_takeover and client.client_no_context_takeover


# -- inbound: the decoder inflates ---------------------------------------------------------


def test_a_compressed_text_message_is_inflated() -> None:
    message = b'{"type":"ping","pad":"' + b"ab" * 500 + b'"}'
    assert feed(frame(TEXT, compressed(message), rsv=RSV1)) == [message.decode()]


def test_a_fragmented_compressed_message_with_a_ping_between_is_one_message() -> None:
    message = "é".join(str(n) for n in range(300)).encode()
    data = compressed(message)
    third = len(data) // 3
    events = feed(
        frame(TEXT, data[:third], fin=False, rsv=RSV1),
        frame(PING, b"mid"),
        frame(CONTINUATION, data[third : 2 * third], fin=False),
        frame(CONTINUATION, data[2 * third :]),
    )
    assert events == [Ping(b"mid"), message.decode()]


def test_compressed_and_plain_messages_mix_and_each_compressed_one_stands_alone() -> None:
    one, two = b'{"n":1,"text":"hello hello"}', b'{"n":2,"text":"hello hello"}'
    events = feed(
        frame(TEXT, compressed(one), rsv=RSV1),
        frame(TEXT, b'{"plain":true}'),
        frame(TEXT, compressed(two), rsv=RSV1),  # needs nothing of the first's window
    )
    assert events == [one.decode(), '{"plain":true}', two.decode()]


def test_a_compressed_binary_message_counts_its_inflated_size() -> None:
    assert feed(frame(BINARY, compressed(b"\x00" * 5000), rsv=RSV1)) == [BinaryMessage(5000)]


def test_rsv1_without_the_extension_is_a_protocol_error() -> None:
    assert failure_code(frame(TEXT, compressed(b"{}"), rsv=RSV1), negotiated=False) == (
        PROTOCOL_ERROR
    )


@pytest.mark.parametrize(
    "frames",
    [
        [frame(TEXT, b"{}", rsv=RSV2)],
        [frame(TEXT, b"{}", rsv=RSV1 | RSV3)],
        [frame(PING, b"", rsv=RSV1)],
        [frame(TEXT, b"{", fin=False), frame(CONTINUATION, b"}", rsv=RSV1)],
    ],
    ids=["rsv2", "rsv3", "rsv1-on-a-ping", "rsv1-on-a-continuation"],
)
def test_reserved_bits_permessage_deflate_does_not_use_are_protocol_errors(
    frames: list[bytes],
) -> None:
    assert failure_code(*frames) == PROTOCOL_ERROR


def test_data_that_does_not_inflate_closes_with_1007() -> None:
    # 0b111 as a DEFLATE block header: BTYPE 11 is reserved.
    assert failure_code(frame(TEXT, b"\x07\x00\x00\x00", rsv=RSV1)) == INVALID_DATA


def test_inflated_text_that_is_not_utf8_closes_with_1007() -> None:
    assert failure_code(frame(TEXT, compressed(b'"\xff"'), rsv=RSV1)) == INVALID_DATA


def test_a_zip_bomb_is_refused_once_inflating_passes_the_limit() -> None:
    bomb = compressed(b" " * 10_000_000)  # ~10 KB on the wire
    assert len(bomb) < 65536
    ws = ServerWebSocket(65536, deflate=True)
    [failure] = ws.receive_data(frame(TEXT, bomb, rsv=RSV1))
    assert failure == Failure(MESSAGE_TOO_BIG, "message over 65536 bytes once inflated")


def test_the_limit_counts_inflated_bytes_over_all_fragments() -> None:
    data = compressed(b"a" * 3000)
    half = len(data) // 2
    fragments = (frame(TEXT, data[:half], fin=False, rsv=RSV1), frame(CONTINUATION, data[half:]))
    assert feed(*fragments, limit=3000) == ["a" * 3000]  # exactly the limit: fine
    assert failure_code(*fragments, limit=2999) == MESSAGE_TOO_BIG


def test_after_a_refused_message_nothing_more_is_read() -> None:
    bomb = frame(TEXT, compressed(b" " * 100_000), rsv=RSV1)
    events = feed(bomb + frame(TEXT, b'{"after":1}'), limit=1024)
    assert [type(e) for e in events] == [Failure]


@settings(max_examples=60, deadline=None)
@given(
    messages=st.lists(st.text(max_size=3000), min_size=1, max_size=6),
    cuts=st.lists(st.integers(min_value=0, max_value=50_000), max_size=8),
)
def test_what_wsproto_s_client_compresses_decodes_to_the_same_text_in_any_chunking(
    messages: list[str], cuts: list[int]
) -> None:
    extension = PerMessageDeflate()
    extension.finalize(deflate.RESPONSE)  # as the server answered
    client = FrameProtocol(client=True, extensions=[extension])
    data = b"".join(client.send_data(m) for m in messages)
    points = sorted({cut % (len(data) + 1) for cut in cuts})
    chunks = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    assert feed(*chunks, limit=1 << 20) == messages


# -- outbound: compressed frames -------------------------------------------------------------


def server_frames_as_a_client_reads_them(data: bytes) -> list[str]:
    extension = PerMessageDeflate()
    extension.finalize(deflate.RESPONSE)
    client = FrameProtocol(client=True, extensions=[extension])
    client.receive_bytes(data)
    texts = []
    for received in client.received_frames():
        assert received.opcode is Opcode.TEXT and received.message_finished
        assert isinstance(received.payload, str)
        texts.append(received.payload)
    return texts


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(max_size=4000), min_size=1, max_size=5))
def test_deflated_frames_read_back_as_the_same_text(payloads: list[str]) -> None:
    data = b"".join(deflated_text_frame(p.encode()) for p in payloads)
    assert server_frames_as_a_client_reads_them(data) == payloads


def test_long_payloads_are_compressed_and_short_ones_sent_as_they_are() -> None:
    long = b'{"type":"presence","changes":[' + b'{"userId":"u","state":{}},' * 40 + b"{}]}"
    short = b'{"type":"event:ack","seq":1}'
    long_frame, short_frame = deflated_text_frame(long), deflated_text_frame(short)
    assert long_frame[0] == 0xC1 and len(long_frame) < len(long) // 4  # FIN, RSV1, text
    assert short_frame == text_frame(short)


def test_a_payload_that_does_not_shrink_goes_out_plain() -> None:
    rng = random.Random(7)
    hex_text = rng.randbytes(200).hex().encode()  # 400 hex digits: 4 bits of 8 are entropy
    assert deflated_text_frame(hex_text)[0] == 0xC1  # so they shrink: compressed
    incompressible = rng.randbytes(400)
    # Not UTF-8 text, but the frame builder only sees bytes: it must not grow them.
    assert deflated_text_frame(incompressible) == text_frame(incompressible)


def test_a_shared_frame_is_compressed_once_for_every_member() -> None:
    shared = SharedFrame(b'{"type":"event","data":"' + b"x" * 1000 + b'"}')
    first = shared.deflated()
    assert shared.deflated() is first
    assert server_frames_as_a_client_reads_them(first) == [shared.payload.decode()]
    assert shared.websocket == text_frame(shared.payload)  # members without the extension
