"""Typed messages of protocol v1.

Client messages are small frozen attrs classes, structured from JSON by
``runtime.protocol.codec`` with cattrs. Server messages are plain dicts built
by the functions at the bottom: they are encoded once and the same bytes go to
every member, so there is no object per recipient.
"""

from __future__ import annotations

from typing import Any

import attrs

from runtime.security.validation import valid_id

JSON = Any
Ref = str | int | None


class FieldError(ValueError):
    """A field's value is well-typed but not allowed; names the field as on the wire."""

    def __init__(self, attribute: attrs.Attribute[Any], message: str) -> None:
        head, *rest = attribute.name.split("_")
        self.field = head + "".join(part.title() for part in rest)
        super().__init__(message)


def id_validator(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    """attrs validator: an id of 1-128 characters of ``[A-Za-z0-9_.:@-]``."""
    if not valid_id(value):
        raise FieldError(attribute, "must be 1-128 characters of [A-Za-z0-9_.:@-]")


def _event_name(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not 1 <= len(value) <= 128:
        raise FieldError(attribute, "must be 1-128 characters")


def _non_negative(_: object, attribute: attrs.Attribute[int | None], value: int | None) -> None:
    if value is not None and value < 0:
        raise FieldError(attribute, "must be >= 0")


def _object(_: object, attribute: attrs.Attribute[JSON], value: JSON) -> None:
    if not isinstance(value, dict):
        raise FieldError(attribute, "must be a JSON object")


def ref_validator(_: object, attribute: attrs.Attribute[Ref], value: Ref) -> None:
    """attrs validator: a request ``ref`` of at most 64 characters."""
    if isinstance(value, str) and len(value) > 64:
        raise FieldError(attribute, "must be at most 64 characters")


@attrs.frozen
class Join:
    session_id: str = attrs.field(validator=id_validator)
    since: int | None = attrs.field(default=None, validator=_non_negative)
    ref: Ref = attrs.field(default=None, validator=ref_validator)


@attrs.frozen
class Leave:
    session_id: str = attrs.field(validator=id_validator)
    ref: Ref = attrs.field(default=None, validator=ref_validator)


@attrs.frozen
class PresenceUpdate:
    session_id: str = attrs.field(validator=id_validator)
    state: JSON = attrs.field(validator=_object)
    ref: Ref = attrs.field(default=None, validator=ref_validator)


@attrs.frozen
class Publish:
    session_id: str = attrs.field(validator=id_validator)
    name: str = attrs.field(validator=_event_name)
    data: JSON = None
    durable: bool = True  # False: ephemeral (cursor moves): acked at once, never persisted
    sensitive: bool = False  # True: the payload is stored encrypted (when keys are configured)
    ref: Ref = attrs.field(default=None, validator=ref_validator)


@attrs.frozen
class Ping:
    ref: Ref = attrs.field(default=None, validator=ref_validator)


@attrs.frozen
class Auth:
    token: str
    ref: Ref = attrs.field(default=None, validator=ref_validator)


@attrs.frozen
class AuthRefresh:
    """A fresh token for the same user, sent before the current one expires."""

    token: str
    ref: Ref = attrs.field(default=None, validator=ref_validator)


ClientMessage = Join | Leave | PresenceUpdate | Publish | Ping | Auth | AuthRefresh

#: The ``type`` tag of each client message: the tagged union on the wire.
CLIENT_TYPES: dict[str, type[ClientMessage]] = {
    "session:join": Join,
    "session:leave": Leave,
    "presence:update": PresenceUpdate,
    "event:publish": Publish,
    "ping": Ping,
    "auth": Auth,
    "auth:refresh": AuthRefresh,
}


# --- server to client ------------------------------------------------------------


def _with_ref(msg: dict[str, JSON], ref: Ref) -> dict[str, JSON]:
    if ref is not None:
        msg["ref"] = ref
    return msg


def welcome(
    connection_id: str, user_id: str, name: str, guest: bool, heartbeat_s: float
) -> dict[str, JSON]:
    return {
        "type": "welcome",
        "protocol": 1,
        "connectionId": connection_id,
        "userId": user_id,
        "name": name,
        "guest": guest,
        "heartbeat": heartbeat_s,
    }


def joined(
    session_id: str, seq: int, participants: list[JSON], presence: dict[str, JSON], ref: Ref
) -> dict[str, JSON]:
    return _with_ref(
        {
            "type": "session:joined",
            "sessionId": session_id,
            "seq": seq,
            "participants": participants,
            "presence": presence,
        },
        ref,
    )


def left(session_id: str, ref: Ref) -> dict[str, JSON]:
    return _with_ref({"type": "session:left", "sessionId": session_id}, ref)


def reset(session_id: str, seq: int, first_seq: int) -> dict[str, JSON]:
    """Events the client asked for are gone; it must reload state as of ``seq``."""
    return {"type": "session:reset", "sessionId": session_id, "seq": seq, "firstSeq": first_seq}


def event(
    session_id: str, seq: int, name: str, data: JSON, user_id: str, ts: float
) -> dict[str, JSON]:
    return {
        "type": "event",
        "sessionId": session_id,
        "seq": seq,
        "name": name,
        "data": data,
        "userId": user_id,
        "ts": ts,
    }


def ack(session_id: str, seq: int, ref: Ref) -> dict[str, JSON]:
    return _with_ref({"type": "event:ack", "sessionId": session_id, "seq": seq}, ref)


def participant_joined(session_id: str, participant: JSON) -> dict[str, JSON]:
    return {"type": "participant:joined", "sessionId": session_id, "participant": participant}


def participant_left(session_id: str, user_id: str) -> dict[str, JSON]:
    return {"type": "participant:left", "sessionId": session_id, "userId": user_id}


def presence(session_id: str, changes: list[JSON]) -> dict[str, JSON]:
    """``changes``: ``userId`` and only the fields that changed (actors/presence/roster.py)."""
    return {"type": "presence", "sessionId": session_id, "changes": changes}


def pong(ref: Ref) -> dict[str, JSON]:
    return _with_ref({"type": "pong"}, ref)


def authenticated(user_id: str, name: str, ref: Ref) -> dict[str, JSON]:
    return _with_ref({"type": "auth:ok", "userId": user_id, "name": name}, ref)


def error(
    code: str,
    message: str,
    ref: Ref = None,
    *,
    path: str | None = None,
    retry_after: float | None = None,
    session_id: str | None = None,
) -> dict[str, JSON]:
    msg: dict[str, JSON] = {"type": "error", "code": code, "message": message}
    if path is not None:
        msg["path"] = path
    if retry_after is not None:
        msg["retryAfter"] = round(retry_after, 3)
    if session_id is not None:
        msg["sessionId"] = session_id
    return _with_ref(msg, ref)
