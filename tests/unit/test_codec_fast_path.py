"""The shortcut past cattrs in ``decode_value`` against cattrs alone.

For messages built around every client type (right and wrong types for each
field, missing and extra keys, snake_case names, ``ref`` variants, bools where
ints or strings belong), ``decode_value`` must return what ``fast=False`` (the
cattrs path, as before the shortcut) returns: the same message, or the same
error code, message, path and ref.
"""

from __future__ import annotations

import enum
import typing
from collections import OrderedDict
from typing import Any

import attrs
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.protocol import codec
from runtime.protocol.codec import DecodeError, decode, decode_value
from runtime.protocol.messages import CLIENT_TYPES, Ping, PresenceUpdate, Publish
from runtime.security.validation import MAX_SAFE_INT, Limits

LIMITS = Limits()


def _client_types() -> dict[str, type]:
    """Every client type, the comment and notification ones included.

    Importing ``runtime.comments.ws`` registers them, as the comments feature does
    when a node starts; it is imported here, inside the tests, not at collection,
    so modules that parametrise over ``CLIENT_TYPES`` still see the core types.
    """
    import runtime.comments.ws  # noqa: F401

    return CLIENT_TYPES


HOT = ["presence:update", "event:publish", "ping", "session:join", "session:leave"]


class Text(str):
    """A str subclass: cattrs accepts it as a string, the shortcut leaves it to cattrs."""


class Small(enum.IntEnum):
    ONE = 1


def _snake(name: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in name)


good_ids = st.sampled_from(["s1", "bench-0", "user@example.com", "x" * 128])
ids = good_ids | st.sampled_from(["x" * 129, "", "a b", "é"])
field_values = (
    ids
    | st.text(max_size=6)
    | st.builds(Text, ids)
    | st.integers(-3, 3)
    | st.sampled_from([0, 50, 101, MAX_SAFE_INT, -1, 2**60])
    | st.booleans()
    | st.none()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.just(Small.ONE)
    | st.dictionaries(st.text(max_size=3), st.integers(0, 3) | st.text(max_size=3), max_size=3)
    | st.lists(st.text(max_size=3) | st.integers(0, 3), max_size=3)
    | st.just({"__proto__": 1})
)
refs = (
    st.text(max_size=8)
    | st.sampled_from(["r1", "x" * 64, "x" * 65])
    | st.integers(-(2**60), 2**60)
    | st.booleans()
    | st.none()
    | st.floats(allow_nan=False)
    | st.lists(st.integers(), max_size=1)
    | st.builds(Text, st.text(max_size=3))
)


@st.composite
def messages(draw: st.DrawFn, tags: list[str]) -> Any:
    """A message dict for one client type, more often nearly right than not."""
    tag = draw(st.sampled_from(tags))
    cls = CLIENT_TYPES[tag]
    value: dict[Any, Any] = {"type": tag}
    if draw(st.integers(0, 9)) == 0:
        value["type"] = draw(st.sampled_from(["nope", 7, None, Text(tag)]))
    for field in attrs.fields(cls):
        wire = codec._camel(field.name)
        if field.name == "ref":
            if draw(st.booleans()):
                value["ref"] = draw(refs)
            continue
        how = draw(st.integers(0, 19))
        if how == 0:
            continue  # missing
        key = _snake(wire) if how == 1 else wire
        value[key] = draw(field_values) if how <= 4 else draw(_good_value(field.name))
    if draw(st.integers(0, 5)) == 0:
        value[draw(st.sampled_from(["extra", "sessionID", "Type", "data", "ref", "state"]))] = 1
    if draw(st.integers(0, 15)) == 0:
        return OrderedDict(value)
    return value


def _good_value(name: str) -> st.SearchStrategy[Any]:
    """A value of the right type for the fields the hot messages have."""
    if name.endswith("_id"):
        return good_ids
    return {
        "state": st.dictionaries(st.text(max_size=3), st.integers(0, 9), max_size=3),
        "data": st.none() | st.integers() | st.dictionaries(st.text(max_size=3), st.text()),
        "name": st.sampled_from(["bench", "n" * 128]),
        "durable": st.booleans(),
        "sensitive": st.booleans(),
        "since": st.none() | st.integers(-2, 2**53 - 1),
        "token": st.text(max_size=5),
        "limit": st.integers(-1, 120),
        "before": st.none() | st.integers(-2, 9),
        "emoji": st.text(max_size=3),
    }.get(name, field_values)


@settings(max_examples=1500)
@given(st.data(), st.sampled_from(["$", "$[3]"]))
def test_shortcut_answers_as_cattrs_does(data: st.DataObject, path: str) -> None:
    value = data.draw(messages(HOT) | messages(sorted(_client_types())))
    got = decode_value(value, LIMITS, path)
    expected = decode_value(value, LIMITS, path, fast=False)
    assert got == expected
    assert type(got) is type(expected)


@settings(max_examples=300)
@given(st.lists(messages(HOT), min_size=1, max_size=3))
def test_frames_decode_as_cattrs_does(values: list[Any]) -> None:
    try:
        payload = orjson.dumps(values)
    except TypeError:
        return  # e.g. an int beyond 64 bits: not a frame a client can send
    expected = [
        decode_value(v, LIMITS, f"$[{i}]", fast=False) for i, v in enumerate(orjson.loads(payload))
    ]
    assert decode(payload, LIMITS) == expected


@pytest.mark.parametrize(
    ("value", "cls"),
    [
        ({"type": "presence:update", "sessionId": "s", "state": {"x": 1}}, PresenceUpdate),
        ({"type": "event:publish", "sessionId": "s", "name": "n", "ref": 3}, Publish),
        ({"type": "ping"}, Ping),
    ],
)
def test_hot_messages_do_not_reach_cattrs(
    value: dict[str, Any], cls: type, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Refuse:
        def structure(self, *_: object) -> None:
            raise AssertionError("cattrs was called")

    monkeypatch.setattr(codec, "_converter", Refuse())
    assert type(decode_value(value, LIMITS)) is cls


def test_types_with_fields_outside_the_checks_have_no_shortcut() -> None:
    # list[str] and str | None have hooks that are not the identity: cattrs only.
    assert codec._fast_structures[_client_types()["comment:create"]] is None
    assert codec._fast_structures[PresenceUpdate] is not None


def test_invalid_messages_report_as_before() -> None:
    value = {"type": "event:publish", "sessionId": "s", "name": "", "ref": "r"}
    assert decode_value(value, LIMITS) == DecodeError(
        codec.ErrorCode.INVALID_MESSAGE, "must be 1-128 characters", "$.name", "r"
    )


_CONFUSERS = [
    True,
    False,
    None,
    0,
    1,
    -1,
    2**60,
    1.5,
    "s1",
    "",
    Text("s1"),
    Small.ONE,
    {},
    [],
    {"a": 1},
]


def _baseline(cls: type) -> dict[str, Any]:
    """A valid message for ``cls`` with every field present, by the field's type."""
    hints = typing.get_type_hints(cls)
    good = {str: "s1", int: 5, bool: True, Any: {"a": 1}}
    return {codec._camel(f.name): good.get(hints[f.name]) for f in attrs.fields(cls)}


def test_every_field_with_every_confusable_value() -> None:
    """Each field of each shortcut type set to each JSON-ish type in turn, one at a time."""
    types = _client_types()
    tags = [tag for tag, cls in types.items() if codec._fast_structures[cls] is not None]
    assert {"presence:update", "event:publish", "ping"} <= set(tags)
    for tag in tags:
        base = {"type": tag, **_baseline(types[tag])}
        for key in [k for k in base if k != "type"]:
            for bad in _CONFUSERS:
                value = {**base, key: bad}
                assert decode_value(value, LIMITS) == decode_value(value, LIMITS, fast=False), value
