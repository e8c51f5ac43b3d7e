"""Run a Tandem server in-process, for Tandem's tests and for users' own.

By default clients connect over in-memory wires, so a whole server —
heartbeats, passivation, flush timers — runs under
``trio.testing.MockClock(autojump_threshold=0)`` deterministically, with no
sockets and no threads. ``real_socket=True`` listens on a free loopback port
instead (use the real clock and ``trio.fail_after`` there).
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import attrs
import h11
import orjson
import trio
import trio_websocket
from wsproto.utilities import LocalProtocolError

from runtime.app import Stores, jwt_secret, memory_stores, open_node, open_stores
from runtime.config import Settings
from runtime.node import TandemNode
from runtime.security.tokens import mint_token
from runtime.transport.wire import MemoryClientStream, memory_wire_pair


@attrs.define
class TestServer:
    __test__ = False  # not a pytest test class

    node: TandemNode
    settings: Settings

    @property
    def url(self) -> str:
        """ws:// URL when serving on a real socket."""
        return f"ws://127.0.0.1:{self.node.public_port}/"

    def token(
        self,
        user: str,
        *,
        name: str | None = None,
        ttl: float = 3600.0,
        grants: dict[str, str] | None = None,
        issued_at: float | None = None,
    ) -> str:
        return mint_token(
            jwt_secret(self.settings),
            user,
            name=name,
            ttl_s=ttl,
            now=self.node.wall_clock() if issued_at is None else issued_at,
            grants=grants,
        )

    def connect_stream(self, *, capacity: int = 1 << 20) -> MemoryClientStream:
        """A raw in-memory byte stream to the server (speak HTTP or WebSocket on it)."""
        server_wire, client_stream = memory_wire_pair(capacity=capacity)
        self.node.attach(server_wire)
        return client_stream

    @asynccontextmanager
    async def websocket(
        self, *, token: str | None = None, path: str = "/", capacity: int = 1 << 20
    ) -> AsyncIterator[trio_websocket.WebSocketConnection]:
        """A trio-websocket client connection over an in-memory wire."""
        stream = self.connect_stream(capacity=capacity)
        resource = path + (f"?token={token}" if token else "")
        try:
            async with trio.open_nursery() as nursery:
                ws = await trio_websocket.wrap_client_stream(
                    nursery,
                    stream,  # type: ignore[arg-type]  # any trio Stream works
                    "tandem.test",
                    resource,
                )
                try:
                    yield ws
                finally:
                    await ws.aclose()
                    nursery.cancel_scope.cancel()
        except* LocalProtocolError:
            # trio-websocket 0.12 answers a ping that crosses our close frame
            # with a pong in LOCAL_CLOSING and raises; the connection is over anyway.
            pass

    async def http(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        """One HTTP request over an in-memory wire; returns (status, decoded JSON or bytes)."""
        stream = self.connect_stream()
        conn = h11.Connection(h11.CLIENT)
        data = b"" if body is None else orjson.dumps(body)
        hdrs = [
            ("host", "tandem.test"),
            ("content-length", str(len(data))),
            *(headers or {}).items(),
        ]
        await stream.send_all(
            conn.send(h11.Request(method=method, target=path, headers=hdrs))
            + conn.send(h11.Data(data=data))
            + conn.send(h11.EndOfMessage())
        )
        status, chunks = 0, []
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(65536))
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                break
        await stream.aclose()
        raw = b"".join(chunks)
        try:
            return status, orjson.loads(raw)
        except orjson.JSONDecodeError:
            return status, raw


@asynccontextmanager
async def open_test_server(
    *, real_socket: bool = False, stores: Stores | None = None, **overrides: Any
) -> AsyncIterator[TestServer]:
    """A running server for the duration of the block; settings override by keyword.

    Stores are in memory unless ``stores`` is given or ``database_url`` is set
    (PostgreSQL uses threads: use the real clock and ``trio.fail_after`` then).
    """
    with tempfile.TemporaryDirectory(prefix="tandem-test-") as data_dir:
        # Rate limits are off unless a test asks for them: bursts are how tests drive load.
        # The adaptive batching window is off too: it reacts to real CPU time, which a
        # MockClock does not control, so with it a test's batches would vary run to run.
        values: dict[str, Any] = {
            "data_dir": data_dir,
            "port": 0 if real_socket else -1,
            "rate_limits": "off",
            "batch_delay": 0.0,
        }
        values.update(overrides)
        settings = Settings(**values)
        async with AsyncExitStack() as stack:
            if stores is None:
                if settings.database_url:
                    stores = await stack.enter_async_context(open_stores(settings))
                else:
                    stores = memory_stores(settings)
            node = await stack.enter_async_context(open_node(settings, stores=stores))
            yield TestServer(node, settings)
