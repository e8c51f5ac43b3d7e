"""Sans-IO codec for protocol v1: bytes in, typed messages out; dicts in, bytes out.

No sockets and no trio here (h11 and wsproto are the model). The transport
feeds whole WebSocket text payloads to :func:`decode` and writes what
:func:`encode` and :func:`encode_batch` return.
"""

from __future__ import annotations

import re
import typing
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import attrs
import cattrs
import orjson
from cattrs.gen import make_dict_structure_fn, override

from runtime.protocol.errors import ErrorCode
from runtime.protocol.messages import CLIENT_TYPES, JSON, ClientMessage, FieldError, Ref
from runtime.security.validation import Limits

T = TypeVar("T")

#: Most messages one client frame may carry as a JSON array.
MAX_MESSAGES_PER_FRAME = 64


@attrs.frozen
class DecodeError:
    """A message that could not be decoded; answered with an ``error``, never fatal."""

    code: ErrorCode
    message: str
    path: str | None = None
    ref: Ref = None


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _strict(expected: type, label: str) -> Any:
    def hook(value: object, _: object) -> object:
        # bool is an int in Python; JSON true is not a number.
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise ValueError(f"expected {label}")
        return value

    return hook


def _ref_hook(value: object, _: object) -> Ref:
    if value is None or (isinstance(value, str | int) and not isinstance(value, bool)):
        return value
    raise ValueError("expected a string or an integer")


def _optional_int(value: object, _: object) -> int | None:
    if value is None:
        return None
    return _strict(int, "an integer")(value, _)  # type: ignore[no-any-return]


def _make_converter() -> cattrs.Converter:
    conv = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)
    conv.register_structure_hook(str, _strict(str, "a string"))
    conv.register_structure_hook(int, _strict(int, "an integer"))
    conv.register_structure_hook(bool, _strict(bool, "true or false"))
    conv.register_structure_hook(Ref, _ref_hook)
    conv.register_structure_hook(int | None, _optional_int)
    conv.register_structure_hook(Any, lambda value, _: value)
    for cls in CLIENT_TYPES.values():
        _register_camel(conv, cls)
    return conv


def _is_str(value: object) -> bool:
    return type(value) is str


def _is_int(value: object) -> bool:
    return type(value) is int


def _is_bool(value: object) -> bool:
    return type(value) is bool


def _is_ref(value: object) -> bool:
    return value is None or type(value) is str or type(value) is int


def _is_optional_int(value: object) -> bool:
    return value is None or type(value) is int


# For each field type the converter above structures by returning the value as it
# is, a test that passes only values its hook accepts (exact types, so never a bool
# for an int, never a subclass); None: the hook takes anything (``Any``). A hook
# changed in _make_converter must change here: tests/unit/test_codec_fast_path.py
# compares the shortcut with cattrs alone.
_FAST_CHECKS: dict[object, Callable[[object], bool] | None] = {
    str: _is_str,
    int: _is_int,
    bool: _is_bool,
    Ref: _is_ref,
    int | None: _is_optional_int,
    Any: None,
}

FastStructure = Callable[[dict[str, Any]], Any]


def _fast_structure(cls: type) -> FastStructure | None:
    """A shortcut past cattrs for a message that has exactly the shape ``cls`` accepts.

    cattrs with detailed validation costs ~3 µs a message (a try block, notes and
    an intermediate dict per field), and every inbound message pays it. The
    shortcut returns ``cls(**fields)`` (the same call, so the same validators)
    when every key is a field's camelCase name, every required field is there
    and every value passes the check of its type in ``_FAST_CHECKS``; otherwise,
    or when the constructor raises, it returns None and the caller takes the
    cattrs path, which then reports the error exactly as before. None for a
    class with a field type outside ``_FAST_CHECKS``, a field not in ``__init__``
    or one named ``type`` on the wire.
    """
    hints = typing.get_type_hints(cls)
    spec: list[tuple[str, str, Callable[[object], bool] | None, bool]] = []
    for field in attrs.fields(cls):
        wire = _camel(field.name)
        if not field.init or wire == "type" or hints[field.name] not in _FAST_CHECKS:
            return None
        check = _FAST_CHECKS[hints[field.name]]
        spec.append((wire, field.alias, check, field.default is attrs.NOTHING))
    fields = tuple(spec)

    def structure(value: dict[str, Any]) -> Any:
        # ``value`` is the whole message, so it also holds "type".
        kwargs: dict[str, object] = {}
        for wire, alias, check, required in fields:
            if wire in value:
                item = value[wire]
                if check is not None and not check(item):
                    return None
                kwargs[alias] = item
            elif required:
                return None
        if len(kwargs) + 1 != len(value):
            return None  # a key that is not a field: cattrs names it
        try:
            return cls(**kwargs)
        except Exception:
            return None  # a validator refused: cattrs runs it again and reports it

    return structure


def _register_camel(conv: cattrs.Converter, cls: type) -> None:
    """Structure ``cls`` from camelCase keys, refusing unknown ones."""
    renames = {
        field.name: override(rename=_camel(field.name))
        for field in attrs.fields(cls)
        if _camel(field.name) != field.name
    }
    hook: Any = make_dict_structure_fn(cls, conv, _cattrs_forbid_extra_keys=True, **renames)  # type: ignore[arg-type]
    conv.register_structure_hook(cls, hook)


_converter = _make_converter()
_fast_structures: dict[type, FastStructure | None] = {
    cls: _fast_structure(cls) for cls in CLIENT_TYPES.values()
}
_AT_PATH = re.compile(r"^(?P<what>.*) @ (?P<path>\$.*)$")


def _field_error(exc: BaseException) -> FieldError | None:
    if isinstance(exc, FieldError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _field_error(inner)
            if found is not None:
                return found
    return None


def _first_error(exc: Exception) -> tuple[str, str | None]:
    """The first failure of a cattrs error as (message, JSON path), with camelCase keys."""
    field_error = _field_error(exc)
    if field_error is not None:
        return str(field_error), f"$.{field_error.field}"
    if isinstance(exc, cattrs.BaseValidationError):
        for line in cattrs.transform_error(exc, path="$"):
            match = _AT_PATH.match(line)
            if match:
                path = re.sub(
                    r"\.([a-z]+(?:_[a-z]+)+)", lambda m: "." + _camel(m[1]), match["path"]
                )
                return match["what"], path
            return line, None
    return str(exc), None


def decode(payload: bytes | str, limits: Limits) -> list[ClientMessage | DecodeError]:
    """Decode one text frame into its messages; every failure is a :class:`DecodeError`.

    A frame is one JSON object or an array of up to ``MAX_MESSAGES_PER_FRAME``
    objects. Each element is decoded on its own, so one bad message in an
    array does not cost the others.
    """
    try:
        value = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        return [DecodeError(ErrorCode.INVALID_JSON, f"frame is not valid JSON: {exc}")]
    if isinstance(value, list):
        if not value:
            return [DecodeError(ErrorCode.INVALID_MESSAGE, "empty message array", "$")]
        if len(value) > MAX_MESSAGES_PER_FRAME:
            return [
                DecodeError(
                    ErrorCode.INVALID_MESSAGE,
                    f"at most {MAX_MESSAGES_PER_FRAME} messages per frame",
                    "$",
                )
            ]
        return [decode_value(item, limits, f"$[{i}]") for i, item in enumerate(value)]
    return [decode_value(value, limits, "$")]


def decode_value(
    value: JSON, limits: Limits, path: str = "$", *, fast: bool = True
) -> ClientMessage | DecodeError:
    """Structure one decoded JSON value into a client message.

    ``fast=False`` skips the shortcut past cattrs (:func:`_fast_structure`): the
    reference behaviour the tests compare the shortcut with.
    """
    if not isinstance(value, dict):
        return DecodeError(ErrorCode.INVALID_MESSAGE, "a message must be a JSON object", path)
    ref = value.get("ref")
    if not (ref is None or isinstance(ref, str | int)) or isinstance(ref, bool):
        ref = None
    problem = limits.check_json(value)
    if problem is not None:
        return DecodeError(
            ErrorCode.INVALID_MESSAGE, problem.reason, path + problem.path.removeprefix("$"), ref
        )
    kind = value.get("type")
    cls = CLIENT_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        return DecodeError(
            ErrorCode.UNKNOWN_TYPE, f"unknown message type {kind!r}", path + ".type", ref
        )
    if fast and type(value) is dict:
        shortcut = _fast_structures.get(cls)
        if shortcut is not None:
            message = shortcut(value)
            if message is not None:
                return message  # type: ignore[no-any-return]
    fields = {k: v for k, v in value.items() if k != "type"}
    try:
        return _converter.structure(fields, cls)
    except (cattrs.BaseValidationError, ValueError, TypeError) as exc:
        what, where = _first_error(exc)
        where = path + where.removeprefix("$") if where else path
        return DecodeError(ErrorCode.INVALID_MESSAGE, what, where, ref)


def decode_body(body: bytes, cls: type[T], limits: Limits) -> T | DecodeError:
    """Decode an HTTP JSON body into the attrs class ``cls`` with the same rules as messages."""
    try:
        value = orjson.loads(body or b"{}")
    except orjson.JSONDecodeError as exc:
        return DecodeError(ErrorCode.INVALID_JSON, f"body is not valid JSON: {exc}")
    if not isinstance(value, dict):
        return DecodeError(ErrorCode.INVALID_MESSAGE, "the body must be a JSON object", "$")
    problem = limits.check_json(value)
    if problem is not None:
        return DecodeError(ErrorCode.INVALID_MESSAGE, problem.reason, problem.path)
    if cls not in _registered_bodies:
        _register_camel(_converter, cls)
        _registered_bodies.add(cls)
    try:
        return _converter.structure(value, cls)
    except (cattrs.BaseValidationError, ValueError, TypeError) as exc:
        what, where = _first_error(exc)
        return DecodeError(ErrorCode.INVALID_MESSAGE, what, where or "$")


_registered_bodies: set[type] = set()


def encode(message: dict[str, JSON]) -> bytes:
    """One server message as the UTF-8 JSON payload of a text frame."""
    return orjson.dumps(message)


def encode_batch(parts: Sequence[bytes]) -> bytes:
    """Several encoded messages as one payload: a JSON array when more than one."""
    if len(parts) == 1:
        return parts[0]
    return b"[" + b",".join(parts) + b"]"


def register_client_type(tag: str, cls: type) -> None:
    """Add a client message type from another module (camelCase keys, unknown ones refused)."""
    CLIENT_TYPES[tag] = cls
    _register_camel(_converter, cls)
    _fast_structures[cls] = _fast_structure(cls)
