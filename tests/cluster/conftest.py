"""Fixtures for cluster tests: a real Redis (skipped when unreachable) and PostgreSQL.

Each test gets its own Redis database number is not enough (pub/sub channels are
global to a server), so each test gets its own key and channel prefix, and its
keys are deleted afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import redis

from runtime.app import Stores
from runtime.gateways.database import open_database_gateway
from runtime.gateways.migrate import migrate
from runtime.gateways.postgres import PostgresEventStore, PostgresSessionRepository
from tests.integration.conftest import database_url, pg_options, pg_schema  # noqa: F401

REDIS_URL = os.environ.get("TANDEM_TEST_REDIS_URL", "redis://127.0.0.1:6379/9")


@pytest.fixture
def redis_url() -> str:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.skip(f"Redis is unreachable at {REDIS_URL}: {exc}")
    finally:
        client.close()
    return REDIS_URL


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    prefix = f"t{uuid.uuid4().hex[:10]}:"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=prefix + "*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def kill_clients(redis_url: str, name_part: str = "") -> int:
    """CLIENT KILL every connection but this one's (optionally only names containing a part)."""
    client = redis.Redis.from_url(redis_url)
    try:
        me = client.client_id()
        killed = 0
        for info in client.client_list():
            if int(info["id"]) != me and name_part in info.get("name", ""):
                client.client_kill_filter(_id=int(info["id"]))
                killed += 1
        return killed
    finally:
        client.close()


@pytest.fixture
async def pg_stores(database_url: str, pg_options: str) -> AsyncIterator[Stores]:  # noqa: F811
    """Stores on a fresh PostgreSQL schema, shared by the in-process nodes of a test."""
    async with open_database_gateway(
        database_url, min_size=1, max_size=8, statement_timeout_s=10, options=pg_options
    ) as db:
        await migrate(db)
        yield Stores(PostgresEventStore(db), PostgresSessionRepository(db), db)
