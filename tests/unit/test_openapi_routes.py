"""The OpenAPI document can't drift: every /v1 route a running node serves is in it."""

from __future__ import annotations

import re

import trio
import trio.testing

from runtime.api.openapi import OPENAPI
from runtime.http import HttpRouter
from runtime.testing import open_test_server

_METHODS = {"get", "post", "put", "patch", "delete"}
_PARAM = re.compile(r"\(\?P<(\w+)>\[\^/\]\+\)")


def _routes(router: HttpRouter) -> set[tuple[str, str]]:
    """(method, pattern) of every route, the pattern as registered (``/v1/sessions/{id}``)."""
    out = set()
    for method, regex, _ in router._routes:
        pattern = _PARAM.sub(r"{\1}", regex.pattern.removeprefix("^").removesuffix("$"))
        out.add((method.lower(), pattern))
    return out


async def test_every_v1_route_is_documented(autojump_clock: trio.testing.MockClock) -> None:
    async with open_test_server() as server:
        node = server.node
        served = _routes(node.http) | _routes(node.internal_http)
    v1 = {(method, path) for method, path in served if path.startswith("/v1")}
    assert ("post", "/v1/sessions/{id}/threads") in v1  # the patterns were recovered
    documented = {
        (method, path)
        for path, operations in OPENAPI["paths"].items()
        for method in operations
        if method in _METHODS
    }
    missing = sorted(v1 - documented)
    assert not missing, f"routes missing from runtime/api/openapi.py: {missing}"


def test_documented_operations_are_well_formed() -> None:
    for path, operations in OPENAPI["paths"].items():
        names = set(re.findall(r"\{(\w+)\}", path))
        shared = operations.get("parameters", [])
        for method, op in operations.items():
            if method not in _METHODS:
                continue
            assert op["summary"] and op["responses"], (method, path)
            params = [*shared, *op.get("parameters", [])]
            given = {p["name"] for p in params if p["in"] == "path"}
            assert given == names, (method, path, given, names)
    refs = re.findall(r"#/components/schemas/(\w+)", repr(OPENAPI))
    assert set(refs) <= set(OPENAPI["components"]["schemas"]), "a $ref names no schema"
