"""The browser-facing HTTP routes, over the in-memory wire (no browser needed).

``GET /`` serves the demo page in the dev profile while a WebSocket upgrade on
``/`` still becomes a WebSocket; ``/client.js`` is served in every profile;
``POST /dev/token`` mints a token for a fresh user in dev and is refused in
production.
"""

from __future__ import annotations

import h11
import orjson

from runtime.testing import open_test_server
from runtime.testing.server import TestServer
from runtime.web.routes import CSP, asset, valid_name

PRODUCTION = {
    "profile": "production",
    "jwt_secret": "k3Jq9vX2mP7wL4tR8yB1nC6dF0gH5sZa",
    "api_key": "test-api-key-0123456789",
}


async def request(
    server: TestServer, method: str, path: str, body: bytes = b""
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP request; returns (status, headers with lower-cased names, body)."""
    stream = server.connect_stream()
    conn = h11.Connection(h11.CLIENT)
    headers = [("host", "tandem.test"), ("content-length", str(len(body)))]
    await stream.send_all(
        conn.send(h11.Request(method=method, target=path, headers=headers))
        + conn.send(h11.Data(data=body))
        + conn.send(h11.EndOfMessage())
    )
    status, got, chunks = 0, {}, []
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await stream.receive_some(65536))
        elif isinstance(event, h11.Response):
            status = event.status_code
            got = {k.decode().lower(): v.decode() for k, v in event.headers}
        elif isinstance(event, h11.Data):
            chunks.append(bytes(event.data))
        elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            break
    await stream.aclose()
    return status, got, b"".join(chunks)


async def test_dev_serves_the_demo_page_and_assets_with_types_and_csp() -> None:
    async with open_test_server() as server:
        for path, content_type, filename in [
            ("/", "text/html; charset=utf-8", "index.html"),
            ("/?board=x", "text/html; charset=utf-8", "index.html"),
            ("/demo.js", "text/javascript; charset=utf-8", "demo.js"),
            ("/demo.css", "text/css; charset=utf-8", "demo.css"),
            ("/client.js", "text/javascript; charset=utf-8", "client.js"),
        ]:
            status, headers, body = await request(server, "GET", path)
            assert status == 200, path
            assert headers["content-type"] == content_type
            assert headers["content-security-policy"] == CSP
            assert headers["x-content-type-options"] == "nosniff"
            assert body == asset(filename)
        status, headers, body = await request(server, "GET", "/favicon.svg")
        assert status == 200 and headers["content-type"] == "image/svg+xml"
        assert body.startswith(b"<svg")
    assert "script-src 'self'" in CSP and "connect-src 'self'" in CSP
    assert "unsafe-inline" not in CSP and "unsafe-eval" not in CSP


async def test_a_websocket_upgrade_on_root_is_still_a_websocket() -> None:
    async with open_test_server() as server, server.websocket(path="/") as ws:
        welcome = orjson.loads(await ws.get_message())
        assert welcome["type"] == "welcome" and welcome["guest"] is True


async def test_dev_token_gives_a_fresh_user_with_the_chosen_name() -> None:
    async with open_test_server() as server:
        status, _, body = await request(
            server, "POST", "/dev/token", orjson.dumps({"name": "  Ann Lee "})
        )
        assert status == 200
        minted = orjson.loads(body)
        assert minted["name"] == "Ann Lee" and minted["userId"].startswith("user-")
        identity = server.node.verifier.verify(minted["token"], now=server.node.wall_clock())
        assert (identity.user_id, identity.name, identity.guest) == (
            minted["userId"],
            "Ann Lee",
            False,
        )
        _, _, again = await request(server, "POST", "/dev/token", orjson.dumps({"name": "Ann"}))
        assert orjson.loads(again)["userId"] != minted["userId"]  # never an existing user
        async with server.websocket(token=minted["token"]) as ws:
            welcome = orjson.loads(await ws.get_message())
            assert welcome["name"] == "Ann Lee" and welcome["guest"] is False


async def test_dev_token_refuses_bad_input() -> None:
    async with open_test_server() as server:
        for body in [b"not json", b"[]", b"{}", b'{"name": ""}', b'{"name": 7}']:
            status, _, answer = await request(server, "POST", "/dev/token", body)
            assert status == 400, body
            assert orjson.loads(answer)["error"]["code"] in ("invalid_json", "invalid_message")
        status, _, _ = await request(server, "POST", "/dev/token", orjson.dumps({"name": "x" * 65}))
        assert status == 400
        status, _, _ = await request(server, "GET", "/dev/token")
        assert status == 405


async def test_production_serves_the_client_but_no_demo_and_no_dev_tokens() -> None:
    async with open_test_server(**PRODUCTION) as server:
        status, headers, _ = await request(server, "GET", "/client.js")
        assert status == 200 and headers["content-type"].startswith("text/javascript")
        for path in ("/", "/demo.js", "/demo.css", "/favicon.svg"):
            status, _, _ = await request(server, "GET", path)
            assert status == 404, path
        status, _, body = await request(
            server, "POST", "/dev/token", orjson.dumps({"name": "Mallory"})
        )
        assert status == 403
        assert orjson.loads(body)["error"]["code"] == "forbidden"


def test_valid_name() -> None:
    assert valid_name("Ann") and valid_name("Zoë 🚀") and valid_name("x" * 64)
    assert not valid_name("") and not valid_name("x" * 65)
    assert not valid_name("a\nb") and not valid_name("a\u202eb") and not valid_name("\x00")
