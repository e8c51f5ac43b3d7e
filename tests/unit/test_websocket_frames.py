"""The server's WebSocket frame decoder (runtime.protocol.websocket), fed by hand and by wsproto.

Frames here are built by :func:`frame`, which masks byte by byte (the slow,
obvious way), so a mistake in the decoder's unmasking cannot cancel out; the
property test at the end uses wsproto's client as the encoder instead.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto.frame_protocol import FrameProtocol

from runtime.protocol.websocket import (
    BinaryMessage,
    Close,
    Event,
    Failure,
    Ping,
    Pong,
    ServerWebSocket,
    State,
    close_frame,
    ping_frame,
    pong_frame,
    valid_close_code,
)

TEXT, BINARY, CONTINUATION, CLOSE, PING, PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA
MASK = b"\x37\xfa\x21\x3d"


def frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    masked: bool = True,
    length_bytes: int | None = None,
) -> bytes:
    """A client frame; ``length_bytes`` forces the 2- or 8-byte length form."""
    n = len(payload)
    first = (0x80 if fin else 0) | rsv | opcode
    mask_bit = 0x80 if masked else 0
    if length_bytes is None:
        length_bytes = 0 if n < 126 else 2 if n < 1 << 16 else 8
    if length_bytes == 0:
        header = bytes((first, mask_bit | n))
    elif length_bytes == 2:
        header = bytes((first, mask_bit | 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((first, mask_bit | 127)) + n.to_bytes(8, "big")
    if not masked:
        return header + payload
    return header + MASK + bytes(b ^ MASK[i % 4] for i, b in enumerate(payload))


def feed(*chunks: bytes, limit: int = 65536) -> list[Event]:
    ws = ServerWebSocket(limit)
    events: list[Event] = []
    for chunk in chunks:
        events += ws.receive_data(chunk)
    return events


def failure_code(*chunks: bytes, limit: int = 65536) -> int:
    events = feed(*chunks, limit=limit)
    assert isinstance(events[-1], Failure), events
    return events[-1].code


# -- messages and control frames ---------------------------------------------------------


def test_text_ping_pong_and_close_in_one_read() -> None:
    ws = ServerWebSocket(65536)
    events = ws.receive_data(
        frame(TEXT, b'{"type":"ping"}')
        + frame(PING, b"p")
        + frame(PONG, b"q")
        + frame(TEXT, "h\u00e9".encode())
        + frame(CLOSE, (1000).to_bytes(2, "big") + b"bye")
    )
    assert events == ['{"type":"ping"}', Ping(b"p"), Pong(b"q"), "h\u00e9", Close(1000, "bye")]
    assert ws.state is State.REMOTE_CLOSING


def test_lengths_at_each_encoding_edge() -> None:
    for n in (0, 1, 125, 126, 127, 383, 384, 385, 1000, 65535, 65536, 70000):
        text = "".join(chr(0x61 + i % 26) for i in range(n))
        assert feed(frame(TEXT, text.encode()), limit=1 << 20) == [text], n


def test_unmasking_matches_a_bytewise_xor_on_both_paths() -> None:
    # Below and above the int/translate crossover, on random bytes.
    for n in (1, 2, 3, 4, 5, 383, 384, 385, 4099):
        data = os.urandom(n)
        assert feed(frame(BINARY, data), limit=1 << 20) == [BinaryMessage(n)]
        masked = frame(PING, data[:125])
        assert feed(masked) == [Ping(data[:125])]


def test_binary_message_is_reported_whole_without_its_bytes() -> None:
    events = feed(frame(BINARY, b"ab", fin=False), frame(CONTINUATION, b"cde"))
    assert events == [BinaryMessage(5)]


def test_fragmented_text_with_pings_between_fragments() -> None:
    events = feed(
        frame(TEXT, b"one ", fin=False)
        + frame(PING, b"1")
        + frame(CONTINUATION, b"two ", fin=False)
        + frame(PONG, b"")
        + frame(PING, b"2")
        + frame(CONTINUATION, b"three")
        + frame(TEXT, b"next")
    )
    assert events == [Ping(b"1"), Pong(b""), Ping(b"2"), "one two three", "next"]


def test_utf8_character_split_across_fragments_and_reads() -> None:
    euro = "\u20ac".encode()  # three bytes
    smile = "\U0001f600".encode()  # four bytes
    data = (
        frame(TEXT, b"a" + euro[:1], fin=False)
        + frame(CONTINUATION, euro[1:2], fin=False)
        + frame(CONTINUATION, euro[2:] + smile[:3], fin=False)
        + frame(CONTINUATION, smile[3:] + b"z")
    )
    expected = ["a\u20ac\U0001f600z"]
    assert feed(data) == expected
    for cut in range(1, len(data)):
        assert feed(data[:cut], data[cut:]) == expected, cut


def test_a_stream_split_at_every_byte_boundary() -> None:
    data = (
        frame(TEXT, b"short")
        + frame(TEXT, b"x" * 300)
        + frame(PING, b"ping")
        + frame(TEXT, b"frag", fin=False)
        + frame(CONTINUATION, b"mented")
        + frame(TEXT, b"y" * 70000)
        + frame(CLOSE, (4001).to_bytes(2, "big"))
    )
    expected: list[Event] = ["short", "x" * 300, Ping(b"ping"), "fragmented", "y" * 70000]
    expected.append(Close(4001, ""))
    # Every two-piece cut inside the small frames, then byte by byte.
    for cut in range(1, 400):
        assert feed(data[:cut], data[cut:], limit=1 << 20) == expected, cut
    assert feed(*(data[i : i + 1] for i in range(len(data))), limit=1 << 20) == expected


def test_nothing_is_parsed_after_a_close() -> None:
    ws = ServerWebSocket(65536)
    events = ws.receive_data(frame(CLOSE) + frame(TEXT, b"late"))
    assert events == [Close(1005, "")]
    assert ws.receive_data(frame(TEXT, b"later")) == []


# -- failures ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(frame(TEXT, b"hi", masked=False), id="unmasked"),
        pytest.param(frame(TEXT, b"hi", rsv=0x40), id="rsv1"),
        pytest.param(frame(TEXT, b"hi", rsv=0x20), id="rsv2"),
        pytest.param(frame(TEXT, b"hi", rsv=0x10), id="rsv3"),
        *(pytest.param(frame(op, b"hi"), id=f"opcode-{op:#x}") for op in (3, 4, 5, 6, 7)),
        *(pytest.param(frame(op, b"hi"), id=f"opcode-{op:#x}") for op in range(0xB, 0x10)),
        pytest.param(frame(PING, b"p", fin=False), id="fragmented-ping"),
        pytest.param(frame(CLOSE, b"", fin=False), id="fragmented-close"),
        pytest.param(frame(PING, b"p" * 126), id="ping-over-125"),
        pytest.param(frame(PONG, b"p" * 126), id="pong-over-125"),
        pytest.param(frame(CLOSE, b"\x03\xe8" + b"r" * 124), id="close-over-125"),
        pytest.param(frame(CONTINUATION, b"x"), id="continuation-without-message"),
        pytest.param(frame(TEXT, b"a", fin=False) + frame(TEXT, b"b"), id="text-inside-a-message"),
        pytest.param(frame(BINARY, b"a", fin=False) + frame(TEXT, b"b"), id="text-inside-binary"),
        pytest.param(frame(TEXT, b"x" * 10, length_bytes=2), id="length-16-not-minimal"),
        pytest.param(frame(TEXT, b"x" * 200, length_bytes=8), id="length-64-not-minimal"),
        pytest.param(b"\x81\xff\x80" + b"\x00" * 7 + MASK, id="length-64-top-bit"),
        pytest.param(frame(CLOSE, b"\x03"), id="close-1-byte"),
    ],
)
def test_protocol_errors_fail_with_1002(data: bytes) -> None:
    assert failure_code(data) == 1002


@pytest.mark.parametrize(
    "code",
    [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535],
)
def test_close_codes_a_client_may_not_send_fail_with_1002(code: int) -> None:
    assert not valid_close_code(code)
    assert failure_code(frame(CLOSE, code.to_bytes(2, "big"))) == 1002


@pytest.mark.parametrize(
    "code", [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 4999]
)
def test_close_codes_a_client_may_send(code: int) -> None:
    assert feed(frame(CLOSE, code.to_bytes(2, "big") + b"why")) == [Close(code, "why")]


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(frame(TEXT, b"\xff"), id="whole"),
        pytest.param(frame(TEXT, b"\xe2\x82"), id="truncated-character"),
        pytest.param(frame(TEXT, b"\xed\xa0\x80"), id="surrogate"),
        pytest.param(frame(TEXT, b"ok", fin=False) + frame(CONTINUATION, b"\xc0"), id="fragment"),
        pytest.param(
            frame(TEXT, b"\xe2\x82", fin=False) + frame(CONTINUATION, b"x"), id="split-character"
        ),
        pytest.param(
            frame(TEXT, b"ok", fin=False) + frame(CONTINUATION, b"\xe2\x82"), id="ends-inside"
        ),
        pytest.param(frame(CLOSE, b"\x03\xe8\xff"), id="close-reason"),
    ],
)
def test_invalid_utf8_fails_with_1007(data: bytes) -> None:
    assert failure_code(data) == 1007


def test_invalid_utf8_fails_at_the_fragment_not_at_the_end() -> None:
    events = feed(frame(TEXT, b"ok", fin=False), frame(CONTINUATION, b"\xff", fin=False))
    assert events == [Failure(1007, "text message is not valid UTF-8")]


def test_events_before_a_failure_are_kept_and_nothing_after_is_parsed() -> None:
    ws = ServerWebSocket(65536)
    events = ws.receive_data(
        frame(TEXT, b"a") + frame(PING, b"p") + frame(TEXT, b"b", masked=False) + frame(TEXT, b"c")
    )
    assert events[:2] == ["a", Ping(b"p")]
    assert isinstance(events[2], Failure) and events[2].code == 1002
    assert len(events) == 3
    assert ws.receive_data(frame(TEXT, b"d")) == []
    assert ws.state is State.OPEN  # the connection still has to send its close frame


# -- the size limit ----------------------------------------------------------------------


def test_a_message_of_exactly_the_limit_passes_and_one_byte_more_fails_with_1009() -> None:
    assert feed(frame(TEXT, b"x" * 4096), limit=4096) == ["x" * 4096]
    assert failure_code(frame(TEXT, b"x" * 4097), limit=4096) == 1009
    assert failure_code(frame(BINARY, b"x" * 4097), limit=4096) == 1009


def test_the_limit_counts_every_fragment_of_a_message() -> None:
    ok = frame(TEXT, b"x" * 2048, fin=False) + frame(CONTINUATION, b"y" * 2048)
    assert feed(ok, limit=4096) == ["x" * 2048 + "y" * 2048]
    over = frame(TEXT, b"x" * 2048, fin=False) + frame(CONTINUATION, b"y" * 2049)
    assert failure_code(over, limit=4096) == 1009
    # Control frames between fragments do not count.
    with_ping = frame(TEXT, b"x" * 4000, fin=False) + frame(PING, b"p" * 125) + frame(CONTINUATION)
    assert feed(with_ping, limit=4096) == [Ping(b"p" * 125), "x" * 4000]


def test_a_huge_declared_length_is_refused_on_the_header_alone() -> None:
    ws = ServerWebSocket(4096)
    header = b"\x81\xff" + (1 << 40).to_bytes(8, "big")
    # Not even the mask has arrived: the header's length is enough to refuse.
    events = ws.receive_data(header)
    assert events == [Failure(1009, "message over 4096 bytes")]
    assert ws.receive_data(b"\x00" * 65536) == []  # and the rest is never kept
    assert ws._buffer is None


def test_a_trickled_header_is_refused_once_its_length_is_known() -> None:
    ws = ServerWebSocket(4096)
    header = b"\x81\xfe" + (5000).to_bytes(2, "big")
    assert ws.receive_data(header[:3]) == []
    assert ws.receive_data(header[3:]) == [Failure(1009, "message over 4096 bytes")]


def test_an_incomplete_frame_buffers_only_itself() -> None:
    ws = ServerWebSocket(65536)
    data = frame(TEXT, b"z" * 60000) + frame(TEXT, b"next")[:8]  # and half of the next
    last = len(data) - 20
    for i in range(0, last, 1000):
        assert ws.receive_data(data[i : min(i + 1000, last)]) == []
        assert ws._buffer is not None and len(ws._buffer) == min(i + 1000, last)
    assert ws.receive_data(data[last:]) == ["z" * 60000]
    assert ws._buffer == data[-8:]  # only the unfinished frame is kept


# -- the closing handshake and the frames the server sends --------------------------------


def test_close_handshake_states() -> None:
    remote = ServerWebSocket(65536)
    assert remote.receive_data(frame(CLOSE)) == [Close(1005, "")]
    assert remote.state is State.REMOTE_CLOSING
    assert remote.send_close(1005) == b"\x88\x00"  # a bare close is echoed bare
    assert remote.state is State.CLOSED
    with pytest.raises(RuntimeError):
        remote.send_close(1000)

    local = ServerWebSocket(65536)
    assert local.send_close(1009, "too big") == b"\x88\x09\x03\xf1too big"
    assert local.state is State.LOCAL_CLOSING
    assert local.receive_data(frame(TEXT, b"still") + frame(CLOSE, b"\x03\xe8")) == [
        "still",
        Close(1000, ""),
    ]
    assert local.state is State.CLOSED


def test_close_frame_reason_is_cut_to_125_bytes_between_characters() -> None:
    data = close_frame(4000, "\u00e9" * 100)  # 200 bytes of reason
    assert data[0] == 0x88 and data[1] == len(data) - 2 <= 125
    assert data[2:4] == (4000).to_bytes(2, "big")
    assert data[4:].decode() == "\u00e9" * 61
    assert close_frame(1000, "") == b"\x88\x02\x03\xe8"


def test_ping_and_pong_frames_are_unmasked_and_bounded() -> None:
    assert ping_frame(b"tandem") == b"\x89\x06tandem"
    assert pong_frame(b"") == b"\x8a\x00"
    with pytest.raises(ValueError):
        pong_frame(b"x" * 126)


# -- wsproto's client as the oracle -------------------------------------------------------

short_text = st.text(max_size=40)
long_text = st.integers(min_value=100, max_value=70000).map(lambda n: "\u00e9" * (n // 2) + "!")
control_payload = st.binary(max_size=125)

# One operation: ("text", fragments, pings between them) | ("binary", b) | ("ping", b) | ("pong", b)
operations = st.one_of(
    st.tuples(
        st.just("text"),
        st.lists(st.one_of(short_text, long_text), min_size=1, max_size=4),
        st.lists(control_payload, max_size=3),
    ),
    st.tuples(st.just("binary"), st.binary(max_size=300)),
    st.tuples(st.just("ping"), control_payload),
    st.tuples(st.just("pong"), control_payload),
)


def encode_with_wsproto(ops: list[tuple[object, ...]]) -> tuple[bytes, list[Event]]:
    """The client's bytes as wsproto writes them, and the events the server must see."""
    client = FrameProtocol(client=True, extensions=[])
    data = bytearray()
    expected: list[Event] = []
    for op in ops:
        kind = op[0]
        if kind == "text":
            fragments, pings = op[1], op[2]
            assert isinstance(fragments, list) and isinstance(pings, list)
            for i, fragment in enumerate(fragments):
                data += client.send_data(fragment, fin=i == len(fragments) - 1)
                if i < len(pings) and i < len(fragments) - 1:  # between fragments
                    data += client.ping(pings[i])
                    expected.append(Ping(pings[i]))
            expected.append("".join(fragments))
        else:
            payload = op[1]
            assert isinstance(payload, bytes)
            if kind == "binary":
                data += client.send_data(payload)
                expected.append(BinaryMessage(len(payload)))
            elif kind == "ping":
                data += client.ping(payload)
                expected.append(Ping(payload))
            else:
                data += client.pong(payload)
                expected.append(Pong(payload))
    return bytes(data), expected


@settings(max_examples=150, deadline=None)
@given(
    ops=st.lists(operations, max_size=8),
    close=st.one_of(st.none(), st.tuples(st.sampled_from([1000, 1001, 3000, 4999]), short_text)),
    cuts=st.lists(st.integers(min_value=0), max_size=12),
)
def test_wsproto_client_streams_decode_to_the_same_messages_in_any_chunking(
    ops: list[tuple[object, ...]], close: tuple[int, str] | None, cuts: list[int]
) -> None:
    data, expected = encode_with_wsproto(ops)
    if close is not None:
        code, reason = close
        data += FrameProtocol(client=True, extensions=[]).close(code, reason)
        data += b"\x81\x80" + MASK  # after the close: must be ignored
        expected.append(Close(code, reason))
    points = sorted({cut % (len(data) + 1) for cut in cuts})
    chunks = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    ws = ServerWebSocket(1 << 20)
    events: list[Event] = []
    for chunk in chunks:
        events += ws.receive_data(chunk)
    assert events == expected
    assert ws.state is (State.OPEN if close is None else State.REMOTE_CLOSING)
