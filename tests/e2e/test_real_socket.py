"""Over a real loopback socket, with clients from other libraries (real clock, fail_after)."""

from __future__ import annotations

import json

import trio
from websockets.sync.client import connect as sync_connect

from client.transport import open_websocket
from runtime.testing import open_test_server


async def test_a_client_from_another_library_joins_and_sees_events() -> None:
    with trio.fail_after(20):
        async with open_test_server(real_socket=True) as server:
            url = server.url

            def websockets_client() -> list[dict[str, object]]:
                # the `websockets` library, in a thread: as foreign a client as it gets here
                with sync_connect(url) as ws:
                    assert json.loads(ws.recv())["type"] == "welcome"
                    ws.send('{"type":"session:join","sessionId":"test"}')
                    joined = json.loads(ws.recv())
                    ws.send(
                        '{"type":"event:publish","sessionId":"test","name":"hi","data":1,"ref":"r"}'
                    )
                    seen = [joined]
                    while len(seen) < 4:
                        frame = json.loads(ws.recv())
                        seen.extend(frame if isinstance(frame, list) else [frame])
                    return seen

            async with open_websocket(url) as trio_ws:
                await trio_ws.get_message()  # welcome
                await trio_ws.send_message('{"type":"session:join","sessionId":"test"}')
                await trio_ws.get_message()
                seen = await trio.to_thread.run_sync(websockets_client)
                types = [m["type"] for m in seen]
                assert types[0] == "session:joined"
                assert "event" in types and "event:ack" in types
                frames = []
                while not any(m.get("type") == "event" for m in frames):
                    frame = json.loads(await trio_ws.get_message())
                    frames.extend(frame if isinstance(frame, list) else [frame])
                event = next(m for m in frames if m["type"] == "event")
                assert (event["seq"], event["name"], event["data"]) == (1, "hi", 1)


async def test_http_and_websocket_share_one_port() -> None:
    with trio.fail_after(20):
        async with open_test_server(real_socket=True) as server:
            stream = await trio.open_tcp_stream("127.0.0.1", server.node.public_port or 0)
            await stream.send_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            response = b""
            while b"\r\n\r\n" not in response or not response.endswith(b"}\n"):
                response += await stream.receive_some(4096)
            assert response.startswith(b"HTTP/1.1 200")
            assert b'"ok"' in response
            await stream.aclose()
            for path in ("/", "/v1/ws"):
                async with open_websocket(server.url.rstrip("/") + path) as ws:
                    assert json.loads(await ws.get_message())["type"] == "welcome"


async def test_internal_port_moves_status_off_the_public_port() -> None:
    async def get(port: int, path: str) -> bytes:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(
            f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
        )
        response = b""
        while chunk := await stream.receive_some(65536):
            response += chunk
        await stream.aclose()
        return response

    with trio.fail_after(20):
        async with open_test_server(real_socket=True, internal_port=0) as server:
            public, internal = server.node.public_port, server.node.internal_port
            assert public and internal and public != internal
            assert (await get(public, "/status")).startswith(b"HTTP/1.1 404")
            status = await get(internal, "/status")
            assert status.startswith(b"HTTP/1.1 200") and b'"actors"' in status
            assert (await get(public, "/healthz")).startswith(b"HTTP/1.1 200")
