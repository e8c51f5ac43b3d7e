"""The pytest plugin users get: a server fixture that works on a MockClock."""

from __future__ import annotations

import trio
import trio.testing

from runtime.testing import TestServer


async def test_tandem_server_fixture_serves_clients(
    tandem_server: TestServer, autojump_clock: trio.testing.MockClock
) -> None:
    async with tandem_server.websocket() as ws:
        await ws.get_message()  # welcome
        await ws.send_message('{"type":"ping","ref":7}')
        assert await ws.get_message() == '{"type":"pong","ref":7}'
    status, body = await tandem_server.http("GET", "/readyz")
    assert (status, body) == (200, {"status": "ready"})
