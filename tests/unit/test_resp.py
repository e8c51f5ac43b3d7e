"""RESP2 sans-IO: encoding, parsing, and feeding in pieces of every size."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runtime.gateways.resp import (
    ProtocolError,
    Reply,
    ReplyError,
    RespParser,
    encode_command,
    encode_reply,
)

line_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=20
)
scalars: st.SearchStrategy[Reply] = st.one_of(
    st.none(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.binary(max_size=40),
    line_text,
    line_text.map(ReplyError),
)
replies: st.SearchStrategy[Reply] = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=5), max_leaves=20
)


def parse_all(*chunks: bytes) -> list[Reply]:
    parser = RespParser()
    out: list[Reply] = []
    for chunk in chunks:
        parser.feed(chunk)
        out.extend(parser.replies())
    assert parser.buffered == 0
    return out


def test_encode_command() -> None:
    assert encode_command("PUBLISH", "ch", b"a\r\nb") == (
        b"*3\r\n$7\r\nPUBLISH\r\n$2\r\nch\r\n$4\r\na\r\nb\r\n"
    )
    assert encode_command("SELECT", 9) == b"*2\r\n$6\r\nSELECT\r\n$1\r\n9\r\n"
    with pytest.raises(ValueError):
        encode_command()
    with pytest.raises(TypeError):
        encode_command("SELECT", True)  # type: ignore[arg-type]


def test_each_type() -> None:
    data = (
        b"+OK\r\n-ERR wrong\r\n:-42\r\n$3\r\nfoo\r\n$0\r\n\r\n$-1\r\n*-1\r\n*0\r\n"
        b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$4\r\n\r\n\r\n\r\n"
    )
    assert parse_all(data) == [
        "OK",
        ReplyError("ERR wrong"),
        -42,
        b"foo",
        b"",
        None,
        None,
        [],
        [b"message", b"ch", b"\r\n\r\n"],
    ]


def test_a_partial_reply_waits_for_the_rest() -> None:
    parser = RespParser()
    parser.feed(b":1\r\n*2\r\n$1\r\na")
    assert list(parser.replies()) == [1]
    assert parser.buffered == len(b"*2\r\n$1\r\na")
    parser.feed(b"\r\n$1\r\nb\r\n")
    assert list(parser.replies()) == [[b"a", b"b"]]
    assert parser.buffered == 0


@pytest.mark.parametrize(
    "data",
    [
        b"?what\r\n",
        b":12a\r\n",
        b": 1\r\n",
        b":1_0\r\n",
        b"$-2\r\n",
        b"$3\r\nfooX\r\n",
        b"*-5\r\n",
        b"+\xff\r\n",
    ],
)
def test_garbage_is_a_protocol_error(data: bytes) -> None:
    parser = RespParser()
    parser.feed(data)
    with pytest.raises(ProtocolError):
        list(parser.replies())


def test_a_bulk_string_past_the_limit_is_refused() -> None:
    parser = RespParser(max_bulk=10)
    parser.feed(b"$11\r\n")
    with pytest.raises(ProtocolError):
        list(parser.replies())


def test_a_header_line_without_end_is_refused() -> None:
    parser = RespParser()
    parser.feed(b"+" + b"x" * 70_000)
    with pytest.raises(ProtocolError):
        list(parser.replies())


def test_split_at_every_byte() -> None:
    values: list[Reply] = [
        "OK",
        [b"message", b"session:S", b'{"o":"n1"}\n' + bytes(range(256))],
        [b"subscribe", b"node:x", 3],
        ReplyError("NOAUTH Authentication required."),
        [[1, None], [], b""],
        None,
        -7,
    ]
    data = b"".join(encode_reply(v) for v in values)
    for cut in range(len(data) + 1):
        assert parse_all(data[:cut], data[cut:]) == values, cut
    assert parse_all(*(data[i : i + 1] for i in range(len(data)))) == values


@given(replies)
def test_round_trip(value: Reply) -> None:
    assert parse_all(encode_reply(value)) == [value]


@given(st.lists(replies, max_size=8), st.data())
def test_round_trip_in_random_pieces(values: list[Reply], data: st.DataObject) -> None:
    encoded = b"".join(encode_reply(v) for v in values)
    cuts = sorted(data.draw(st.sets(st.integers(0, len(encoded)), max_size=10)))
    pieces = [encoded[a:b] for a, b in zip([0, *cuts], [*cuts, len(encoded)], strict=True)]
    assert parse_all(*pieces) == values


@given(st.lists(st.one_of(st.binary(max_size=30), line_text, st.integers()), min_size=1))
def test_a_command_parses_as_an_array_of_bulk_strings(args: list[bytes | str | int]) -> None:
    expected = [a if isinstance(a, bytes) else str(a).encode() for a in args]
    assert parse_all(encode_command(*args)) == [expected]
