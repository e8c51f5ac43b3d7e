from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from runtime.security.validation import (
    FORBIDDEN_KEYS,
    MAX_SAFE_INT,
    JsonLimitError,
    Limits,
    check_json_limits,
    check_metadata,
    check_text,
    valid_id,
)


@pytest.mark.parametrize(
    ("s", "ok"),
    [
        ("a", True),
        ("user@example.com", True),
        ("session:1.2_3-x", True),
        ("x" * 128, True),
        ("", False),
        ("x" * 129, False),
        ("has space", False),
        ("slash/no", False),
        ("newline\n", False),
        ("unicodé", False),
        ("٣", False),  # a Unicode digit is not an ASCII digit
        (42, False),
        (None, False),
    ],
)
def test_valid_id(s: object, ok: bool) -> None:
    assert valid_id(s) is ok


def test_accepts_ordinary_json() -> None:
    doc = {"type": "publish", "data": {"a": [1, 2.5, "x", None, True, {"b": []}]}}
    assert check_json_limits(doc) is None


def test_reports_path_of_first_violation_in_document_order() -> None:
    doc = {"data": {"a": [0, 1, 2, "x" * 11, "y" * 11]}}
    err = check_json_limits(doc, max_string=10)
    assert err == JsonLimitError("$.data.a[3]", "string longer than 10 chars")
    assert str(err) == "$.data.a[3]: string longer than 10 chars"


def test_unusual_keys_are_quoted_in_paths() -> None:
    err = check_json_limits({"a b": {"1x": "long!"}}, max_string=3)
    assert err is not None
    assert err.path == '$["a b"]["1x"]'


@pytest.mark.parametrize("key", sorted(FORBIDDEN_KEYS))
def test_prototype_pollution_keys_rejected_at_any_depth(key: str) -> None:
    err = check_json_limits({"data": [{"ok": 1, key: {"isAdmin": True}}]})
    assert err is not None
    assert err.path == f"$.data[0].{key}"
    assert "forbidden" in err.reason


def _nest(depth: int) -> Any:
    value: Any = 0
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


def test_depth_limit_boundary() -> None:
    assert check_json_limits(_nest(32), max_depth=32) is None
    err = check_json_limits(_nest(33), max_depth=32)
    assert err is not None and "deeper than 32" in err.reason


def test_pathological_nesting_does_not_recurse() -> None:
    err = check_json_limits(_nest(100_000))
    assert err is not None and "deeper" in err.reason


@pytest.mark.parametrize(
    ("value", "kwargs", "reason"),
    [
        ({str(i): i for i in range(4)}, {"max_keys": 3}, "more than 3 keys"),
        ([0] * 4, {"max_array": 3}, "more than 3 items"),
        ([[0, 0], [0, 0]], {"max_nodes": 5}, "more than 5 values"),
        ({"k" * 5: 1}, {"max_key": 4}, "key longer than 4"),
        ({1: "x"}, {}, "key is not a string"),
        (MAX_SAFE_INT + 1, {}, "integer outside"),
        (-(MAX_SAFE_INT + 1), {}, "integer outside"),
        (float("inf"), {}, "not finite"),
        (float("nan"), {}, "not finite"),
        ({"a": (1, 2)}, {}, "tuple is not a JSON type"),
        ({"a": b"bytes"}, {}, "bytes is not a JSON type"),
    ],
)
def test_limit_violations(value: object, kwargs: dict[str, int], reason: str) -> None:
    err = check_json_limits(value, **kwargs)
    assert err is not None and reason in err.reason


def test_boundaries_are_inclusive() -> None:
    assert check_json_limits("x" * 10, max_string=10) is None
    assert check_json_limits({str(i): i for i in range(3)}, max_keys=3) is None
    assert check_json_limits([0] * 3, max_array=3) is None
    assert check_json_limits(MAX_SAFE_INT) is None
    assert check_json_limits([[0, 0], [0, 0]], max_nodes=7) is None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.text(max_size=10).filter(lambda k: k not in FORBIDDEN_KEYS), children)
    ),
    max_leaves=30,
)


def _depth(v: object) -> int:
    if isinstance(v, dict):
        return 1 + max((_depth(c) for c in v.values()), default=0)
    if isinstance(v, list):
        return 1 + max((_depth(c) for c in v), default=0)
    return 0


@given(json_values, st.integers(min_value=0, max_value=6))
def test_depth_check_agrees_with_a_recursive_definition(value: object, limit: int) -> None:
    err = check_json_limits(value, max_depth=limit)
    assert (err is None) == (_depth(value) <= limit)


@given(json_values, st.sampled_from(sorted(FORBIDDEN_KEYS)), st.integers(0, 5))
def test_proto_key_anywhere_is_found(value: object, key: str, depth: int) -> None:
    doc: object = {key: value}
    for _ in range(depth):
        doc = {"wrap": [doc]}
    err = check_json_limits(doc, max_depth=64)
    assert err is not None and err.reason == f"key {key!r} is forbidden"


@given(st.text(min_size=1, max_size=200), st.integers(0, 199))
def test_huge_string_anywhere_is_found(s: str, limit: int) -> None:
    err = check_json_limits({"data": {"list": [1, s]}}, max_string=limit)
    if len(s) > limit:
        assert err == JsonLimitError("$.data.list[1]", f"string longer than {limit} chars")
    else:
        assert err is None


def test_limits_defaults_and_check_json() -> None:
    limits = Limits()
    assert (limits.max_frame_bytes, limits.max_json_depth) == (65536, 32)
    assert (limits.max_metadata_keys, limits.max_metadata_bytes) == (64, 4096)
    assert limits.max_comment_chars == 10_000
    assert limits.check_json({"a": 1}) is None
    err = Limits(max_json_depth=1).check_json({"a": [1]})
    assert err is not None and err.path == "$.a"


def test_metadata_limits() -> None:
    assert check_metadata({"color": "#f00", "n": 1}) is None
    assert check_metadata([1]) == JsonLimitError("$", "metadata must be an object")
    too_many = {f"k{i}": i for i in range(65)}
    err = check_metadata(too_many, path="$.meta")
    assert err is not None and err.path == "$.meta" and "64 keys" in err.reason
    big = {"blob": "x" * 4090}
    assert len(orjson.dumps(big)) > 4096
    err = check_metadata(big)
    assert err is not None and "bytes" in err.reason
    err = check_metadata({"a": {"__proto__": 1}}, path="$.meta")
    assert err is not None and err.path == "$.meta.a.__proto__"


def test_check_text() -> None:
    assert check_text("hello\n\tworld ✓", 100) is None
    assert check_text("x" * 11, 10) == JsonLimitError("$", "longer than 10 chars")
    assert check_text(5, 10, path="$.body") == JsonLimitError("$.body", "must be a string")
    err = check_text("evil\x1b[2J", 100)
    assert err is not None and "U+001B at index 4" in err.reason
