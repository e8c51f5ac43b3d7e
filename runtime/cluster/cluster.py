"""The cluster layer of one node: what it shares through Redis, and its tasks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import trio

from runtime.cluster.bus import ClusterBus
from runtime.cluster.invalidation import Invalidation
from runtime.cluster.rates import RedisBuckets
from runtime.cluster.sessions import ClusterSessions
from runtime.gateways.redis import RedisGateway, RedisUnavailable

if TYPE_CHECKING:
    from runtime.node import TandemNode


class Cluster:
    """Wires a node to the others: shared rate limits, cache invalidation."""

    def __init__(self, node: TandemNode, redis: RedisGateway) -> None:
        prefix = node.settings.redis_prefix
        self.node = node
        self.redis = redis
        self.bus = ClusterBus(redis, prefix)
        node.rates.shared = RedisBuckets(redis, prefix)
        self.invalidation = Invalidation(node, self.bus)
        self.sessions = ClusterSessions(node, redis, self.bus)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.bus.run_publisher)
            nursery.start_soon(self.bus.run_dispatcher)
            nursery.start_soon(self.sessions.run_requests)
            try:
                await self.sessions.heartbeat_once()  # alive before anything is forwarded
            except RedisUnavailable:
                pass  # the heartbeat task keeps trying
            nursery.start_soon(self.sessions.run_heartbeat)
            nursery.start_soon(self.sessions.run_node_watch)
            await self.invalidation.start()
            await self.sessions.start()
            task_status.started()


@asynccontextmanager
async def open_cluster(node: TandemNode, redis: RedisGateway) -> AsyncIterator[Cluster]:
    """Attach the cluster layer to ``node`` (before it runs) and run its tasks in the block."""
    cluster = Cluster(node, redis)
    async with trio.open_nursery() as nursery:
        await nursery.start(cluster.run)
        try:
            yield cluster
        finally:
            nursery.cancel_scope.cancel()
