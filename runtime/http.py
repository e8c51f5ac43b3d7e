"""HTTP requests and responses as plain values, and a small router.

The transport (``runtime.transport.http11``) parses bytes into
:class:`HttpRequest` and writes :class:`HttpResponse`; handlers never see a
socket. JSON bodies are encoded with orjson.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

import attrs
import orjson
import trio

from runtime import metrics


@attrs.frozen
class HttpRequest:
    method: str
    target: str
    headers: dict[str, str]  # lower-cased names
    body: bytes = b""
    peer: str = ""
    params: dict[str, str] = attrs.field(factory=dict)  # from the route pattern

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    @property
    def query(self) -> dict[str, str]:
        if "?" not in self.target:
            return {}
        return {k: v[-1] for k, v in parse_qs(self.target.split("?", 1)[1]).items()}


@attrs.frozen
class HttpResponse:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()


def json_response(status: int, value: Any) -> HttpResponse:
    return HttpResponse(status, orjson.dumps(value, option=orjson.OPT_INDENT_2) + b"\n")


def error_response(status: int, code: str, message: str) -> HttpResponse:
    return json_response(status, {"error": {"code": code, "message": message}})


Handler = Callable[[HttpRequest], Awaitable[HttpResponse]]


def _timed(handler: Handler, histogram: metrics.Histogram) -> Handler:
    """``handler``, observing its duration in the route's histogram."""

    async def timed(request: HttpRequest) -> HttpResponse:
        start = trio.current_time()
        try:
            return await handler(request)
        finally:
            histogram.observe(trio.current_time() - start)

    return timed


class HttpRouter:
    """Routes by method and path pattern (``/v1/sessions/{id}``)."""

    def __init__(self) -> None:
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []

    def add(self, method: str, pattern: str, handler: Handler) -> None:
        regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern)
        timed = _timed(handler, metrics.http_route(f"{method} {pattern}"))
        self._routes.append((method, re.compile(f"^{regex}$"), timed))

    async def dispatch(self, request: HttpRequest) -> HttpResponse:
        allowed = []
        for method, regex, handler in self._routes:
            match = regex.match(request.path)
            if match is None:
                continue
            if method != request.method:
                allowed.append(method)
                continue
            return await handler(attrs.evolve(request, params=match.groupdict()))
        if allowed:
            return error_response(405, "method_not_allowed", f"use {', '.join(allowed)}")
        return error_response(404, "not_found", f"no route for {request.path}")
