"""Several nodes of one cluster in one trio process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from runtime.app import Stores
from runtime.cluster.sessions import ClusterSessions
from runtime.testing import open_test_server
from runtime.testing.server import TestServer

SECRET = "cluster-test-secret-0123456789-0123456789"


@asynccontextmanager
async def open_nodes(
    n: int, redis_url: str, redis_prefix: str, *, stores: Stores | None = None, **overrides: Any
) -> AsyncIterator[list[TestServer]]:
    """``n`` nodes sharing Redis (one prefix) and ``stores`` (or ``database_url``)."""
    async with AsyncExitStack() as stack:
        nodes = []
        for _ in range(n):
            nodes.append(
                await stack.enter_async_context(
                    open_test_server(
                        stores=stores,
                        redis_url=redis_url,
                        redis_prefix=redis_prefix,
                        jwt_secret=SECRET,
                        **overrides,
                    )
                )
            )
        yield nodes


def cluster_sessions(server: TestServer) -> ClusterSessions:
    """The cluster layer's session routing of an in-process node."""
    owner = server.node.make_session_actor.__self__
    assert isinstance(owner, ClusterSessions)
    return owner
