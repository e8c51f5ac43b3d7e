"""The one table of error codes and close codes (protocol v1).

``docs/protocol.md`` is written from these tables, and every code here has a
test that produces it. Close codes follow Centrifugo's idea that the range
tells a client what to do: 4000-4099 means "reconnect and resume", 4400-4499
means "do not reconnect until something changes (new token, new permission)".
"""

from __future__ import annotations

import enum


class ErrorCode(enum.StrEnum):
    """``error.code`` values. The connection stays open after each of these."""

    INVALID_JSON = "invalid_json"  # the frame is not UTF-8 JSON
    INVALID_MESSAGE = "invalid_message"  # JSON, but not a valid message (path in `path`)
    UNKNOWN_TYPE = "unknown_type"  # `type` is not a protocol v1 client message
    UNSUPPORTED_FRAME = "unsupported_frame"  # a binary frame; v1 is JSON text only
    AUTH_REQUIRED = "auth_required"  # send `auth` first (production profile)
    TOKEN_INVALID = "token_invalid"  # bad signature, claims or format
    TOKEN_EXPIRED = "token_expired"
    ALREADY_AUTHENTICATED = "already_authenticated"  # identity can't change mid-connection
    NOT_JOINED = "not_joined"  # the operation needs `session:join` first
    FORBIDDEN = "forbidden"  # the identity's role does not allow the operation
    RATE_LIMITED = "rate_limited"  # slow down; `retryAfter` seconds
    OVERLOADED = "overloaded"  # the session could not take the request in time; retry
    TOO_MANY_SESSIONS = "too_many_sessions"  # per-connection session limit reached
    NOT_FOUND = "not_found"
    INTERNAL = "internal"  # a bug or an unavailable dependency; the request had no effect


class CloseCode(enum.IntEnum):
    """WebSocket close codes Tandem sends."""

    NORMAL = 1000  # the client asked to close
    GOING_AWAY = 1001  # the server is shutting down: reconnect (to another node)
    PROTOCOL_ERROR = 1002  # broken WebSocket framing
    INVALID_DATA = 1007  # a text message (or close reason) that is not valid UTF-8
    MESSAGE_TOO_BIG = 1009  # a frame over the size limit
    INTERNAL_ERROR = 1011  # unexpected server failure: reconnect with backoff
    SLOW_CONSUMER = 4000  # the outbound queue passed its bound: reconnect and resume
    HEARTBEAT_TIMEOUT = 4001  # no sign of life within the presence timeout: reconnect
    AUTH_TIMEOUT = 4002  # no `auth` message in time: reconnect with a token
    TOKEN_EXPIRED = 4401  # get a fresh token, then reconnect
    FORBIDDEN = 4403  # not allowed: do not reconnect automatically
    AUTH_REQUIRED = 4400  # a token is required here: do not reconnect without one
    TOKEN_INVALID = 4402  # the token can never work: do not reconnect with it


#: Whether a client should reconnect (with backoff) after each close code.
RECONNECT: dict[int, bool] = {
    CloseCode.NORMAL: False,
    CloseCode.GOING_AWAY: True,
    CloseCode.PROTOCOL_ERROR: False,
    CloseCode.INVALID_DATA: False,
    CloseCode.MESSAGE_TOO_BIG: True,
    CloseCode.INTERNAL_ERROR: True,
    CloseCode.SLOW_CONSUMER: True,
    CloseCode.HEARTBEAT_TIMEOUT: True,
    CloseCode.AUTH_TIMEOUT: True,
    CloseCode.TOKEN_EXPIRED: False,
    CloseCode.FORBIDDEN: False,
    CloseCode.AUTH_REQUIRED: False,
    CloseCode.TOKEN_INVALID: False,
}


def should_reconnect(code: int | None) -> bool:
    """Reconnect policy for a close code; an abnormal drop (no code, 1006) reconnects."""
    if code is None:
        return True
    return RECONNECT.get(code, 1000 < code < 4400)
