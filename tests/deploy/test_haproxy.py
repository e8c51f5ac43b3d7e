"""The deployment's shape without Docker: three node processes behind HAProxy.

``deploy/haproxy.cfg`` is the file compose.yaml mounts; only its backend
addresses differ (environment variables). Clients all use the balancer's one
URL, with no stickiness: they land on different nodes, share one ordered
session, and when a node is SIGKILLed they reconnect through the same URL to a
survivor and resume with nothing lost or repeated. Skipped without `haproxy`
(``.ci/run`` installs it, as the workflow does).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from client import open_tandem_client
from client.connection import TandemClient
from client.errors import Disconnected, TandemError
from runtime.security.tokens import mint_token
from tests.cluster.helpers import SECRET
from tests.cluster.processes import (
    NodeProcess,
    free_port,
    http_get,
    is_ready,
    open_node_processes,
    schema_url,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed"),
]

CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "haproxy.cfg"
PER_CLIENT = 20


@asynccontextmanager
async def open_haproxy(nodes: list[NodeProcess]) -> AsyncIterator[int]:
    """HAProxy with the deployment's config in front of ``nodes``; yields its port."""
    port = free_port()
    env = dict(os.environ, TANDEM_LISTEN=f"127.0.0.1:{port}")
    for i, node in enumerate(nodes, start=1):
        env[f"TANDEM_NODE{i}"] = f"127.0.0.1:{node.port}"
    process = await trio.lowlevel.open_process(
        ["haproxy", "-f", str(CONFIG), "-db"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with trio.fail_after(10):
            while not await is_ready(port):  # noqa: ASYNC110 (polling another process)
                await trio.sleep(0.05)
        yield port
    finally:
        process.kill()
        with trio.CancelScope(shield=True), trio.move_on_after(5):
            await process.wait()


def node_of(client: TandemClient) -> str:
    """The node a client is connected to: connection ids are ``<node id>-<n>``."""
    assert client.connection_id is not None
    return client.connection_id.rsplit("-", 1)[0]


async def test_three_nodes_behind_haproxy_survive_a_sigkill(
    redis_url: str, redis_prefix: str, database_url: str, pg_schema: str
) -> None:
    async with (
        open_node_processes(
            3,
            redis_url=redis_url,
            redis_prefix=redis_prefix,
            database_url=schema_url(database_url, pg_schema),
            trusted_proxies="127.0.0.1",
            presence_timeout=2.0,
            session_lease=1.0,
            db_pool_min=1,
            db_pool_max=4,
        ) as nodes,
        open_haproxy(nodes) as port,
    ):
        url = f"ws://127.0.0.1:{port}/"
        users = [f"u{i}" for i in range(6)]
        received: dict[str, list[dict[str, Any]]] = {user: [] for user in users}
        acked: list[tuple[str, int]] = []
        cut_off: list[tuple[str, int]] = []
        clients: dict[str, TandemClient] = {}

        async def run_client(user: str, task_status: trio.TaskStatus[None]) -> None:
            token = mint_token(SECRET, user, ttl_s=600, now=time.time())
            async with open_tandem_client(
                url, token=token, backoff_initial=0.05, backoff_max=0.5
            ) as client:
                clients[user] = client
                await client.join("doc")
                task_status.started()
                async for message in client.messages():
                    if message["type"] == "event" and message["sessionId"] == "doc":
                        received[user].append(message)

        async with trio.open_nursery() as nursery:
            with trio.fail_after(20):
                for user in users:
                    await nursery.start(run_client, user)
            placed = {user: node_of(client) for user, client in clients.items()}
            assert len(set(placed.values())) >= 2, placed  # leastconn spread them

            # The node of the last client that is not on the first client's node dies.
            victim_id = placed[users[-1]]
            statuses = [await node.status() for node in nodes]
            victim = next(
                node
                for node, status in zip(nodes, statuses, strict=True)
                if status["node"] == victim_id
            )

            async def publish(user: str) -> None:
                for k in range(PER_CLIENT):
                    if k == PER_CLIENT // 2 and user == users[-1]:
                        victim.kill()
                    try:
                        await clients[user].publish("doc", "n", {"u": user, "k": k})
                        acked.append((user, k))
                    except (Disconnected, TandemError):
                        cut_off.append((user, k))
                    await trio.sleep(0.01)

            with trio.fail_after(40):
                async with trio.open_nursery() as burst:
                    for user in users:
                        burst.start_soon(publish, user)
                survivor = next(node for node in nodes if node is not victim)
                status, body = await http_get(survivor.port, "/v1/sessions/doc/events?limit=1000")
                assert status == 200, body
                stored = body["events"]
                for user in users:
                    while not received[user] or received[user][-1]["seq"] < stored[-1]["seq"]:  # noqa: ASYNC110
                        await trio.sleep(0.05)
            moved = {user: node_of(client) for user, client in clients.items()}
            nursery.cancel_scope.cancel()

    log = [(e["seq"], e["data"]["u"], e["data"]["k"]) for e in stored]
    assert [seq for seq, _, _ in log] == list(range(1, len(log) + 1))
    for user in users:  # every client: the whole log, in order, once
        assert [(e["seq"], e["data"]["u"], e["data"]["k"]) for e in received[user]] == log
    stored_pairs = {(u, k) for _, u, k in log}
    assert len(stored_pairs) == len(log)
    assert set(acked) <= stored_pairs <= set(acked) | set(cut_off)
    # The victim's clients came back through the same URL, on survivors.
    assert victim_id not in moved.values()
    assert any(placed[u] == victim_id for u in users)
