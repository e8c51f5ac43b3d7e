"""Exceptions the Tandem client raises."""

from __future__ import annotations

from typing import Any


class TandemError(Exception):
    """The server answered a request with ``error``; the connection is still open.

    ``code`` is one of ``runtime.protocol.errors.ErrorCode`` (``not_joined``,
    ``forbidden``, ``rate_limited``, ...). ``retry_after`` is set for
    ``rate_limited``; ``path`` names the offending field of an invalid message.
    """

    def __init__(
        self,
        code: str,
        message: str,
        *,
        path: str | None = None,
        retry_after: float | None = None,
        session_id: str | None = None,
    ) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message
        self.path = path
        self.retry_after = retry_after
        self.session_id = session_id

    @classmethod
    def from_message(cls, msg: dict[str, Any]) -> TandemError:
        retry_after = msg.get("retryAfter")
        return cls(
            str(msg.get("code", "unknown")),
            str(msg.get("message", "")),
            path=msg.get("path"),
            retry_after=float(retry_after) if retry_after is not None else None,
            session_id=msg.get("sessionId"),
        )

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class Disconnected(Exception):
    """The connection dropped while a request was in flight (or the client is closed).

    The request may or may not have reached the server: a ``publish`` that
    fails with this is at-most-once from the client's point of view. Retry it
    if a duplicate is acceptable (or make the event idempotent).
    """


class ConnectionEnded(Disconnected):
    """The server closed the connection with a code that says not to reconnect.

    Raised from :meth:`TandemClient.messages` (after every message received
    before the close was delivered) and from every request made afterwards.
    ``code`` is the WebSocket close code (e.g. 4403 forbidden, 4401 token
    expired), or ``None`` when no connection could be made.
    """

    def __init__(self, code: int | None, reason: str | None) -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason

    def __str__(self) -> str:
        return f"connection ended ({self.code}): {self.reason or ''}".rstrip()
