"""Several nodes of one cluster in one trio process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from runtime.app import Stores
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
