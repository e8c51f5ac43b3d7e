"""HTTP routes for the browser: the JavaScript client, and the demo page in the dev profile.

* ``GET /client.js`` — the dependency-free ES module client (every profile).
* ``GET /`` (a plain GET; a WebSocket upgrade on ``/`` never reaches the
  router), ``/demo.js``, ``/demo.css``, ``/favicon.svg`` — the live demo page,
  dev profile only.
* ``POST /dev/token {"name": "Ann"}`` — dev profile only: a token for a fresh
  user id with that display name, so the demo can show a chosen name without
  minting anything in the browser. Refused (403) in production, where tokens
  come from the application's own sign-in.

Assets are read once from this package's directory and served with a content
type, ``nosniff`` and a Content-Security-Policy that allows only the page's own
script and style and WebSocket connections to this same origin.
"""

from __future__ import annotations

import secrets
import unicodedata
from importlib import resources
from typing import TYPE_CHECKING

import orjson

from runtime.http import HttpRequest, HttpResponse, HttpRouter, error_response, json_response

if TYPE_CHECKING:
    from runtime.node import TandemNode

#: Tokens handed out by ``POST /dev/token`` live this long (seconds).
DEV_TOKEN_TTL = 12 * 3600.0
MAX_NAME = 64

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}

#: The page's own script and style only; WebSockets to this origin ('self' covers
#: ws: and wss: of the same host in CSP level 3 browsers).
CSP = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)

_SECURITY_HEADERS = (
    ("content-security-policy", CSP),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("x-frame-options", "DENY"),
)

#: path -> asset file; the demo page's assets are served in the dev profile only.
CLIENT_ASSETS = {"/client.js": "client.js"}
DEMO_ASSETS = {
    "/": "index.html",
    "/demo.js": "demo.js",
    "/demo.css": "demo.css",
}

#: The demo's icon, kept here because package data ships *.js, *.html and *.css only.
FAVICON = (
    b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32">'
    b'<rect width="32" height="32" rx="8" fill="#4f46e5"/>'
    b'<circle cx="12" cy="16" r="6" fill="none" stroke="#fff" stroke-width="3"/>'
    b'<circle cx="20" cy="16" r="6" fill="none" stroke="#c7d2fe" stroke-width="3"/></svg>'
)


def asset(filename: str) -> bytes:
    """The bytes of one file shipped in ``runtime/web``."""
    return resources.files(__package__ or "runtime.web").joinpath(filename).read_bytes()


def asset_response(filename: str) -> HttpResponse:
    suffix = filename[filename.rfind(".") :]
    return HttpResponse(200, asset(filename), _TYPES[suffix], _SECURITY_HEADERS)


class WebRoutes:
    """Registers the browser-facing routes of one node."""

    def __init__(self, node: TandemNode) -> None:
        self._node = node
        self._cache: dict[str, HttpResponse] = {}

    def register(self, router: HttpRouter) -> None:
        for path in CLIENT_ASSETS:
            router.add("GET", path, self._serve)
        if not self._node.settings.is_production:
            for path in DEMO_ASSETS:
                router.add("GET", path, self._serve)
            router.add("GET", "/favicon.svg", self._favicon)
        router.add("POST", "/dev/token", self._dev_token)

    async def _serve(self, request: HttpRequest) -> HttpResponse:
        path = request.path
        response = self._cache.get(path)
        if response is None:
            filename = CLIENT_ASSETS.get(path) or DEMO_ASSETS[path]
            response = self._cache[path] = asset_response(filename)
        return response

    async def _favicon(self, request: HttpRequest) -> HttpResponse:
        return HttpResponse(200, FAVICON, _TYPES[".svg"], _SECURITY_HEADERS)

    async def _dev_token(self, request: HttpRequest) -> HttpResponse:
        settings = self._node.settings
        if settings.is_production:
            return error_response(403, "forbidden", "/dev/token exists in the dev profile only")
        try:
            body = orjson.loads(request.body or b"{}")
        except orjson.JSONDecodeError:
            return error_response(400, "invalid_json", "the body is not JSON")
        name = body.get("name") if isinstance(body, dict) else None
        if not isinstance(name, str) or not valid_name(name.strip()):
            return error_response(
                400, "invalid_message", f"name must be 1-{MAX_NAME} printable characters"
            )
        from runtime.app import jwt_secret  # runtime.app imports runtime.node
        from runtime.security.tokens import mint_token

        user_id = f"user-{secrets.token_hex(6)}"
        token = mint_token(
            jwt_secret(settings),
            user_id,
            name=name.strip(),
            ttl_s=DEV_TOKEN_TTL,
            now=self._node.wall_clock(),
        )
        return json_response(200, {"token": token, "userId": user_id, "name": name.strip()})


def valid_name(name: str) -> bool:
    """1-64 characters, none of them a control or format character."""
    return 1 <= len(name) <= MAX_NAME and not any(
        unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in name
    )
