"""``check_json_limits`` against the walk it replaced, on hostile JSON-like values.

The fast walk (``_fits``) may only ever say "fine" when the reference walk finds
nothing; every other answer, including the path and reason of the first
violation, must be what the implementation before it reported. That
implementation is kept here verbatim as the oracle, so a later change to the
module cannot quietly move the goalposts.
"""

from __future__ import annotations

import enum
import json
import math
import re
from collections import OrderedDict
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.security.validation import (
    FORBIDDEN_KEYS,
    MAX_SAFE_INT,
    JsonLimitError,
    Limits,
    check_json_limits,
)

# --- the oracle: check_json_limits as of 175c01a, unchanged ----------------------------

_PLAIN_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*", re.ASCII)


def _child_path(path: str, key: str) -> str:
    if _PLAIN_KEY_RE.fullmatch(key):
        return f"{path}.{key}"
    return f"{path}[{json.dumps(key)}]"


def oracle_check_json_limits(
    value: object,
    *,
    max_depth: int = 32,
    max_string: int = 65536,
    max_key: int = 256,
    max_keys: int = 256,
    max_array: int = 10_000,
    max_nodes: int = 100_000,
) -> JsonLimitError | None:
    stack: list[tuple[Any, str, int]] = [(value, "$", 0)]
    nodes = 0
    while stack:
        item, path, depth = stack.pop()
        nodes += 1
        if nodes > max_nodes:
            return JsonLimitError(path, f"more than {max_nodes} values in total")
        if item is None or isinstance(item, bool):
            continue
        if isinstance(item, str):
            if len(item) > max_string:
                return JsonLimitError(path, f"string longer than {max_string} chars")
        elif isinstance(item, int):
            if abs(item) > MAX_SAFE_INT:
                return JsonLimitError(path, "integer outside +/-(2**53-1)")
        elif isinstance(item, float):
            if not math.isfinite(item):
                return JsonLimitError(path, "number is not finite")
        elif isinstance(item, dict | list):
            if depth + 1 > max_depth:
                return JsonLimitError(path, f"nested deeper than {max_depth}")
            if isinstance(item, dict):
                if len(item) > max_keys:
                    return JsonLimitError(path, f"object has more than {max_keys} keys")
                children: list[tuple[Any, str, int]] = []
                for key, child in item.items():
                    if not isinstance(key, str):
                        return JsonLimitError(path, "object key is not a string")
                    if len(key) > max_key:
                        return JsonLimitError(path, f"object key longer than {max_key} chars")
                    if key in FORBIDDEN_KEYS:
                        return JsonLimitError(_child_path(path, key), f"key {key!r} is forbidden")
                    children.append((child, _child_path(path, key), depth + 1))
            else:
                if len(item) > max_array:
                    return JsonLimitError(path, f"array has more than {max_array} items")
                children = [(c, f"{path}[{i}]", depth + 1) for i, c in enumerate(item)]
            stack.extend(reversed(children))
        else:
            return JsonLimitError(path, f"{type(item).__name__} is not a JSON type")
    return None


# --- hostile values -------------------------------------------------------------------


class Color(enum.IntEnum):
    RED = 1


class Text(str):
    """A str subclass: not what orjson yields, still a string to the reference walk."""


_int_edges = st.sampled_from(
    [0, 1, -1, MAX_SAFE_INT, -MAX_SAFE_INT, MAX_SAFE_INT + 1, -MAX_SAFE_INT - 1, 2**64, -(2**70)]
)
# What orjson yields for valid input, within the default limits.
clean_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-MAX_SAFE_INT, MAX_SAFE_INT)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
# Everything the walk must reject or treat with care (subclasses of JSON types).
rare_scalars = (
    _int_edges
    | st.integers()
    | st.sampled_from([math.nan, math.inf, -math.inf])
    | st.text(max_size=12).map(Text)
    | st.just(Color.RED)
    | st.binary(max_size=3)
    | st.tuples(st.integers())
    | st.frozensets(st.integers(), max_size=2)
    | st.builds(set)
    | st.just(object())
)
clean_keys = st.text(max_size=8) | st.sampled_from(["a", "a b", "1x", "ok_1", "é", "k" * 8])
rare_keys = (
    st.sampled_from(sorted(FORBIDDEN_KEYS))
    | st.integers(-3, 3)
    | st.booleans()
    | st.none()
    | st.tuples(st.integers(0, 2))
    | st.text(max_size=4).map(Text)
)


def _sometimes(common: st.SearchStrategy[Any], rare: st.SearchStrategy[Any], odds: int) -> Any:
    """``rare`` about once in ``odds + 1`` draws (``one_of`` picks a branch uniformly)."""
    return st.one_of(*[common] * odds, rare)


def _containers(key_strategy: st.SearchStrategy[Any]) -> Any:
    def extend(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        return (
            st.lists(children, max_size=7)
            | st.dictionaries(key_strategy, children, max_size=7)
            | st.dictionaries(st.text(max_size=3), children, max_size=7).map(OrderedDict)
        )

    return extend


def _nested(value: Any, levels: list[bool]) -> Any:
    for as_list in levels:
        value = [value] if as_list else {"k": value}
    return value


# Anything goes: most values break some limit, often several.
json_like = st.recursive(
    clean_scalars | rare_scalars, _containers(clean_keys | rare_keys), max_leaves=40
)
hostile = json_like | st.builds(_nested, json_like, st.lists(st.booleans(), max_size=40))
# Mostly valid JSON with the odd bad value or key: exercises the fast walk's "fine".
mostly_clean = st.recursive(
    _sometimes(clean_scalars, rare_scalars, 12),
    _containers(_sometimes(clean_keys, rare_keys, 12)),
    max_leaves=30,
)
limits = st.fixed_dictionaries(
    {
        "max_depth": st.integers(0, 8) | st.sampled_from([32, 300]),
        "max_string": st.integers(0, 12),
        "max_key": st.integers(0, 8),
        "max_keys": st.integers(0, 6),
        "max_array": st.integers(0, 6),
        "max_nodes": st.integers(0, 60),
    }
)
# Either generous or small per limit, so each one is sometimes the only one that bites.
loose_limits = st.fixed_dictionaries(
    {
        "max_depth": st.integers(1, 8) | st.just(32),
        "max_string": st.integers(0, 12) | st.just(65536),
        "max_key": st.integers(0, 8) | st.just(256),
        "max_keys": st.integers(0, 7) | st.just(256),
        "max_array": st.integers(0, 7) | st.just(10_000),
        "max_nodes": st.integers(0, 60) | st.just(100_000),
    }
)


@settings(max_examples=1000)
@given(hostile, limits)
def test_same_first_violation_as_the_reference_walk(value: object, kwargs: dict[str, int]) -> None:
    assert check_json_limits(value, **kwargs) == oracle_check_json_limits(value, **kwargs)


@settings(max_examples=1000)
@given(mostly_clean, loose_limits)
def test_same_answer_on_mostly_valid_json(value: object, kwargs: dict[str, int]) -> None:
    assert check_json_limits(value, **kwargs) == oracle_check_json_limits(value, **kwargs)


@settings(max_examples=300)
@given(mostly_clean | hostile)
def test_same_answer_with_default_limits(value: object) -> None:
    assert check_json_limits(value) == oracle_check_json_limits(value)
    assert Limits().check_json(value) == oracle_check_json_limits(value)


def test_cycles_and_deep_limits_agree() -> None:
    loop: list[Any] = [1]
    loop.append(loop)
    looped: dict[str, Any] = {"a": 1}
    looped["b"] = looped
    # 3,000 levels: past Python's recursion limit, so only the iterative walk may see it.
    for value in (loop, looped, _nested(0, [False] * 400), _nested(0, [True] * 3000)):
        for depth in (3, 32, 300, 5000):
            expected = oracle_check_json_limits(value, max_depth=depth, max_nodes=1000)
            assert check_json_limits(value, max_depth=depth, max_nodes=1000) == expected


# --- one defect in otherwise valid JSON -------------------------------------------------
# Random trees seldom break exactly one limit, and a check the fast walk forgets is
# only visible when nothing else fails: so take valid JSON and plant one defect.

clean_json = st.recursive(
    clean_scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(clean_keys, children, max_size=5)
    ),
    max_leaves=25,
)
defect_values = (
    st.sampled_from(
        [
            MAX_SAFE_INT,
            -MAX_SAFE_INT,
            MAX_SAFE_INT + 1,
            -MAX_SAFE_INT - 1,
            2**64,
            math.nan,
            math.inf,
            -math.inf,
            "x" * 65536,
            "x" * 65537,
            b"",
            (1,),
            frozenset(),
            Text("s"),
            Color.RED,
            True,
            None,
            OrderedDict(a=1),
            {str(i): i for i in range(256)},
            {str(i): i for i in range(257)},
            [0] * 10_000,
            [0] * 10_001,
            _nested(0, [False] * 30),
            _nested(0, [True] * 40),
            {"__proto__": 1},
        ]
    )
    | st.builds(set)
    | st.builds(object)
)
defect_keys = st.sampled_from(
    [
        *sorted(FORBIDDEN_KEYS),
        "k" * 256,
        "k" * 257,
        1,
        None,
        True,
        (1,),
        Text("a"),
        Text("__proto__"),
    ]
)


def _containers_in(value: Any) -> list[Any]:
    found = []
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            found.append(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            found.append(item)
            stack.extend(item)
    return found


@settings(max_examples=600)
@given(clean_json, st.booleans(), defect_values, defect_keys, st.data())
def test_a_single_planted_defect_is_reported_as_before(
    value: Any, as_key: bool, bad_value: Any, bad_key: Any, data: st.DataObject
) -> None:
    root: Any = {"v": value}
    target = data.draw(st.sampled_from(_containers_in(root)))
    if isinstance(target, list):
        target.insert(data.draw(st.integers(0, len(target))), bad_value)
    elif as_key:
        target[bad_key] = data.draw(clean_scalars)
    else:
        target[data.draw(clean_keys)] = bad_value
    assert check_json_limits(root) == oracle_check_json_limits(root)
