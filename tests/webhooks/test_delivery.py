"""Webhooks on a real PostgreSQL with the real clock, against a local trio HTTP receiver.

The receiver fails for a while then recovers: every event arrives at least once,
with a stable id, a valid signature, in order per session. A node stopped with
undelivered events leaves them in the outbox; a new node on the same database
delivers them.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any
from urllib.parse import quote

import h11
import orjson
import pytest
import trio

from runtime.testing import open_test_server
from runtime.webhooks.signing import verify

pytestmark = pytest.mark.integration
SECRET = "s" * 8 + "0123456789abcdef"


@pytest.fixture
def schema_url(database_url: str, pg_schema: str) -> str:
    options = quote(f"-c search_path={pg_schema} -c application_name={pg_schema}")
    return f"{database_url}?options={options}"


class Receiver:
    """A tiny HTTP server: answers 503 while ``failing``, else 200; records what it got."""

    def __init__(self) -> None:
        self.failing = True
        self.received: list[dict[str, Any]] = []  # accepted deliveries
        self.attempts = 0
        self.bad_signatures = 0
        self.port = 0
        self.changed = trio.Event()

    async def handle(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        headers: dict[str, str] = {}
        body = b""
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(65536))
            elif isinstance(event, h11.Request):
                headers = {k.decode().lower(): v.decode() for k, v in event.headers}
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
        self.attempts += 1
        ok = verify(SECRET, body, headers.get("tandem-signature", ""), now=time.time())
        if not ok:
            self.bad_signatures += 1
        status = 503 if self.failing or not ok else 200
        if status == 200:
            self.received.append(orjson.loads(body))
        self.changed.set()
        self.changed = trio.Event()
        await stream.send_all(
            conn.send(h11.Response(status_code=status, headers=[("content-length", "0")]))
            + conn.send(h11.EndOfMessage())
        )
        await stream.aclose()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Receiver]:
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(
                partial(trio.serve_tcp, self.handle, 0, host="127.0.0.1")
            )
            self.port = listeners[0].socket.getsockname()[1]
            yield self
            nursery.cancel_scope.cancel()

    async def wait_for(self, predicate: Any) -> None:
        while not predicate():
            await self.changed.wait()


def _settings(url: str) -> dict[str, Any]:
    return {
        "database_url": url,
        "webhook_retry_base": 0.05,
        "webhook_retry_cap": 0.2,
        "db_pool_min": 1,
        "db_pool_max": 4,
    }


async def test_fails_then_recovers_in_order_signed_stable_ids(schema_url: str) -> None:
    with trio.fail_after(60):
        async with (
            Receiver().running() as receiver,
            open_test_server(**_settings(schema_url)) as server,
        ):
            status, hook = await server.http(
                "POST",
                "/v1/webhooks",
                {"url": f"http://127.0.0.1:{receiver.port}/hook", "secret": SECRET},
            )
            assert status == 201
            service = server.node.collab.comments
            expected: dict[str, list[str]] = {}
            for sid in ("doc-a", "doc-b"):
                thread = (await service.create_thread("alice", sid, body="root")).result
                for i in range(5):
                    await service.create_comment("bob", sid, thread["id"], body=f"c{i}")
                expected[sid] = [f"session:{sid}:{seq}" for seq in range(1, 7)]
            await receiver.wait_for(lambda: receiver.attempts >= 10)
            assert receiver.received == []
            _, listed = await server.http("GET", "/v1/webhooks")
            assert listed["webhooks"][0]["lastError"] == "HTTP 503"
            assert server.node.status()["webhooks"]["failing"][0]["id"] == hook["id"]
            receiver.failing = False
            session_ids = {i for ids in expected.values() for i in ids}
            await receiver.wait_for(lambda: session_ids <= {e["id"] for e in receiver.received})
            assert receiver.bad_signatures == 0
            for sid, ids in expected.items():
                got = [e["id"] for e in receiver.received if e["id"].startswith(f"session:{sid}:")]
                assert list(dict.fromkeys(got)) == ids  # in order (repeats allowed: at least once)
            kinds = {e["type"] for e in receiver.received}
            assert {"thread:created", "comment:created", "notification:created"} <= kinds
            assert server.node.status()["webhooks"]["failing"] == []


async def test_restart_resumes_undelivered(schema_url: str) -> None:
    with trio.fail_after(60):
        async with Receiver().running() as receiver:
            async with open_test_server(**_settings(schema_url)) as server:
                await server.http(
                    "POST",
                    "/v1/webhooks",
                    {"url": f"http://127.0.0.1:{receiver.port}/", "secret": SECRET},
                )
                thread = (
                    await server.node.collab.comments.create_thread("a", "doc", body="x")
                ).result
                for i in range(3):
                    await server.node.collab.comments.create_comment(
                        "a", "doc", thread["id"], body=str(i)
                    )
                await receiver.wait_for(lambda: receiver.attempts >= 1)
            # the node is gone with 4 events undelivered
            assert receiver.received == []
            receiver.failing = False
            async with open_test_server(**_settings(schema_url)) as server:
                ids = [f"session:doc:{seq}" for seq in range(1, 5)]
                await receiver.wait_for(lambda: set(ids) <= {e["id"] for e in receiver.received})
                got = [e["id"] for e in receiver.received]
                assert list(dict.fromkeys(got)) == ids
                _, listed = await server.http("GET", "/v1/webhooks")
                assert listed["webhooks"][0]["pending"] == 0 or receiver.received


async def test_endpoint_failing_too_long_is_disabled(schema_url: str) -> None:
    with trio.fail_after(60):
        async with (
            Receiver().running() as receiver,
            open_test_server(**_settings(schema_url), webhook_disable_after=0.3) as server,
        ):
            await server.http(
                "POST",
                "/v1/webhooks",
                {"url": f"http://127.0.0.1:{receiver.port}/", "secret": SECRET},
            )
            await server.node.collab.comments.create_thread("a", "doc", body="x")
            while not server.node.status()["webhooks"]["disabled"]:  # noqa: ASYNC110 (status poll)
                await trio.sleep(0.05)
            [disabled] = server.node.status()["webhooks"]["disabled"]
            assert "HTTP 503" in disabled["reason"]
            _, listed = await server.http("GET", "/v1/webhooks")
            assert listed["webhooks"][0]["disabled"] is True
