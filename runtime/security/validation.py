"""Shape limits for untrusted input, applied after JSON decoding and before cattrs.

cattrs checks types; these checks bound the *cost* of a value (depth, sizes,
node count) and reject keys that are dangerous to JavaScript clients that merge
objects (prototype pollution), so hostile input fails fast with a JSON path.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections.abc import Iterable
from typing import Any

import attrs
import orjson

# One alphabet for every identifier a client can name (users, sessions, events):
# safe in URLs, log lines, Redis keys and SQL without quoting surprises.
_ID_RE = re.compile(r"[A-Za-z0-9_.:@-]{1,128}", re.ASCII)
_PLAIN_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*", re.ASCII)

MAX_ID_LENGTH = 128
FORBIDDEN_KEYS = frozenset({"__proto__", "constructor", "prototype"})
# JavaScript clients read numbers as doubles; larger ints would silently change.
MAX_SAFE_INT = 2**53 - 1


def valid_id(s: object) -> bool:
    """True if ``s`` is a str of 1..128 chars from ``[A-Za-z0-9_.:@-]``."""
    return isinstance(s, str) and _ID_RE.fullmatch(s) is not None


@attrs.frozen
class Limits:
    """Inbound size limits; one instance is shared by the transport and the actors."""

    max_frame_bytes: int = 65536
    max_json_depth: int = 32
    max_string_chars: int = 65536
    max_key_chars: int = 256
    max_object_keys: int = 256
    max_array_items: int = 10_000
    max_json_nodes: int = 100_000
    max_metadata_keys: int = 64
    max_metadata_bytes: int = 4096
    max_comment_chars: int = 10_000
    max_name_chars: int = 128

    def check_json(self, value: object) -> JsonLimitError | None:
        """:func:`check_json_limits` with these limits."""
        return check_json_limits(
            value,
            max_depth=self.max_json_depth,
            max_string=self.max_string_chars,
            max_key=self.max_key_chars,
            max_keys=self.max_object_keys,
            max_array=self.max_array_items,
            max_nodes=self.max_json_nodes,
        )


_DEFAULT_LIMITS = Limits()


@attrs.frozen
class JsonLimitError:
    """Where (``path``, e.g. ``$.data.a[3]``) and why a value was rejected."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


def _child_path(path: str, key: str) -> str:
    if _PLAIN_KEY_RE.fullmatch(key):
        return f"{path}.{key}"
    return f"{path}[{json.dumps(key)}]"


# The fast walker recurses once per nesting level, bounded by ``max_depth`` before it
# descends; above this depth limit only the iterative walker runs, so a generous limit
# cannot make the Python stack the bound.
_MAX_RECURSIVE_DEPTH = 256
_NEG_MAX_SAFE_INT = -MAX_SAFE_INT
_isfinite = math.isfinite


def check_json_limits(
    value: object,
    *,
    max_depth: int = 32,
    max_string: int = 65536,
    max_key: int = 256,
    max_keys: int = 256,
    max_array: int = 10_000,
    max_nodes: int = 100_000,
) -> JsonLimitError | None:
    """Return the first violation in a decoded JSON ``value``, or None.

    Depth counts containers (``{}`` at the top is depth 1). Strings are measured
    in characters. Only JSON types are accepted; floats must be finite and ints
    within JavaScript's safe range. The first violation is the first in document
    order; a container's own size and keys are checked before its values.

    Every inbound message passes here, so a value is first run through
    :func:`_fits`, which only answers "certainly fine" and builds no paths; only
    when it cannot say so does :func:`_first_violation` (iterative, so hostile
    nesting cannot exhaust the stack) walk again to name the violation.
    """
    if (type(value) is dict or type(value) is list) and max_depth <= _MAX_RECURSIVE_DEPTH:
        left = _fits(value, 1, max_nodes - 1, max_depth, max_string, max_key, max_keys, max_array)
        if left >= 0:
            return None
    return _first_violation(value, max_depth, max_string, max_key, max_keys, max_array, max_nodes)


def _fits(
    node: dict[Any, Any] | list[Any],
    level: int,
    budget: int,
    max_depth: int,
    max_string: int,
    max_key: int,
    max_keys: int,
    max_array: int,
) -> int:
    """The node budget left after ``node``'s subtree, or -1 if it may break a limit.

    ``node`` is a dict or list at nesting ``level`` (the top container is 1) and
    ``budget`` how many more values may follow. Exact types only (what orjson
    yields): anything else, including subclasses, answers -1 and leaves the
    verdict to :func:`_first_violation`, so this never has to be right about
    them. Recursion depth is at most ``max_depth``, checked before descending.
    """
    if level > max_depth:
        return -1
    items: Iterable[Any]
    if type(node) is dict:
        if len(node) > max_keys:
            return -1
        for key in node:
            if type(key) is not str or len(key) > max_key or key in FORBIDDEN_KEYS:
                return -1
        items = node.values()
    else:
        if len(node) > max_array:
            return -1
        items = node
    budget -= len(node)
    if budget < 0:
        return -1
    for item in items:
        kind = type(item)
        if kind is str:
            if len(item) > max_string:
                return -1
        elif kind is int:
            if item > MAX_SAFE_INT or item < _NEG_MAX_SAFE_INT:
                return -1
        elif kind is dict or kind is list:
            budget = _fits(
                item, level + 1, budget, max_depth, max_string, max_key, max_keys, max_array
            )
            if budget < 0:
                return -1
        elif kind is float:
            if not _isfinite(item):
                return -1
        elif item is not None and kind is not bool:
            return -1
    return budget


def _first_violation(
    value: object,
    max_depth: int,
    max_string: int,
    max_key: int,
    max_keys: int,
    max_array: int,
    max_nodes: int,
) -> JsonLimitError | None:
    """The reference walk: the first violation with its path, or None.

    Iterative, so hostile nesting cannot exhaust the Python stack, and it stops
    at the first violation. Slower than :func:`_fits` (a tuple and a path string
    per value), so it runs only for values that one could not pass.
    """
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
            # Reversed so errors are reported in document order.
            stack.extend(reversed(children))
        else:
            return JsonLimitError(path, f"{type(item).__name__} is not a JSON type")
    return None


def check_metadata(
    meta: object, limits: Limits | None = None, path: str = "$"
) -> JsonLimitError | None:
    """Free-form metadata: an object within key-count and encoded-size limits."""
    limits = limits or _DEFAULT_LIMITS
    if not isinstance(meta, dict):
        return JsonLimitError(path, "metadata must be an object")
    if len(meta) > limits.max_metadata_keys:
        return JsonLimitError(path, f"metadata has more than {limits.max_metadata_keys} keys")
    error = limits.check_json(meta)
    if error is not None:
        return JsonLimitError(path + error.path[1:], error.reason)
    size = len(orjson.dumps(meta))
    if size > limits.max_metadata_bytes:
        return JsonLimitError(
            path, f"metadata encodes to {size} > {limits.max_metadata_bytes} bytes"
        )
    return None


def check_text(text: object, max_chars: int, path: str = "$") -> JsonLimitError | None:
    """User-visible text (comment bodies, names): a str within ``max_chars``.

    Control characters other than newline and tab are rejected: they can forge
    log lines and terminal output and have no place in displayed text.
    """
    if not isinstance(text, str):
        return JsonLimitError(path, "must be a string")
    if len(text) > max_chars:
        return JsonLimitError(path, f"longer than {max_chars} chars")
    for i, c in enumerate(text):
        if c not in "\n\t" and unicodedata.category(c) == "Cc":
            return JsonLimitError(path, f"control character U+{ord(c):04X} at index {i}")
    return None
