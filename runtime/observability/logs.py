"""Structured logs: one JSON object per line in production, readable lines in dev.

Context (connection id, session id, user id) lives in context variables: the
connection's reader task binds its connection and user, an actor binds its
session. Trio copies the spawner's context into a new task, so an actor
clears what it inherited (:func:`bind_actor`). Messages and exception texts
pass through :func:`scrub`, which masks credentials in URLs, bearer tokens and
JWTs; message bodies are never logged by Tandem's own code.
"""

from __future__ import annotations

import contextvars
import logging
import re
import sys
import time
from typing import Any

import orjson

CONN_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("tandem_conn", default=None)
SESSION_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "tandem_session", default=None
)
USER_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("tandem_user", default=None)

_SECRETS = [
    (re.compile(r"(\w+://)[^/@\s:]*:[^/@\s]*@"), r"\1***@"),  # scheme://user:password@
    (re.compile(r"eyJ[\w-]{4,}\.[\w-]{4,}\.[\w-]*"), "<jwt>"),  # a JWT
    (re.compile(r"(?i)(bearer\s+)[\w.~+/=-]+"), r"\1***"),
    (
        re.compile(r"(?i)((?:password|passwd|secret|token)[\"']?\s*[=:]\s*[\"']?)[^\s\"'&,;]+"),
        r"\1***",
    ),
]


def scrub(text: str) -> str:
    """``text`` with credentials masked (URL passwords, JWTs, bearer tokens, key=secret)."""
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


def bind_connection(conn_id: str, user_id: str | None) -> None:
    """In a connection's reader task: later log lines of this task carry both ids."""
    CONN_ID.set(conn_id)
    USER_ID.set(user_id)
    SESSION_ID.set(None)


def bind_user(user_id: str | None) -> None:
    USER_ID.set(user_id)


def bind_actor(session_id: str) -> None:
    """In an actor task: its session, and not the connection that happened to spawn it."""
    SESSION_ID.set(session_id)
    CONN_ID.set(None)
    USER_ID.set(None)


class ContextFilter(logging.Filter):
    """Copies the context variables onto each record (unless the call passed ``extra``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for attr, var in (("conn", CONN_ID), ("session", SESSION_ID), ("user", USER_ID)):
            if getattr(record, attr, None) is None:
                setattr(record, attr, var.get())
        return True


_RESERVED = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "conn",
    "session",
    "user",
}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, context ids, extras, exc."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": scrub(record.getMessage()),
        }
        for attr in ("conn", "session", "user"):
            value = getattr(record, attr, None)
            if value is not None:
                out[attr] = value
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                out[key] = value if isinstance(value, int | float | bool | None) else str(value)
        if record.exc_info:
            out["exc"] = scrub(self.formatException(record.exc_info))
        return orjson.dumps(out, default=str).decode()


class TextFormatter(logging.Formatter):
    """Human-readable: time, level, logger, message, then the context ids that apply."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return (
            time.strftime("%H:%M:%S", time.localtime(record.created)) + f".{int(record.msecs):03d}"
        )

    def format(self, record: logging.LogRecord) -> str:
        line = scrub(super().format(record))
        ids = [
            f"{attr}={value}"
            for attr in ("conn", "session", "user")
            if (value := getattr(record, attr, None)) is not None
        ]
        return f"{line}  [{' '.join(ids)}]" if ids else line


def configure_logging(level: str, log_format: str, *, profile: str = "dev") -> logging.Handler:
    """Install one stderr handler on the root logger; ``log_format`` is json, text or auto
    (json in production, text in dev). Returns the handler."""
    use_json = log_format == "json" or (log_format == "auto" and profile == "production")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if use_json else TextFormatter())
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    return handler
