"""Fixtures for tests that talk to a real PostgreSQL.

Each test gets its own schema (created here, dropped afterwards) and a gateway
whose connections use it as search_path, so tests never see each other's rows.
The server is ``TANDEM_TEST_DATABASE_URL`` (default: the local test database).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator

import psycopg
import pytest

from runtime.gateways.database import DatabaseGateway, open_database_gateway
from runtime.gateways.migrate import migrate

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture(scope="session")
def database_url() -> str:
    return os.environ.get("TANDEM_TEST_DATABASE_URL", DEFAULT_URL)


@pytest.fixture
def pg_schema(database_url: str) -> Iterator[str]:
    """A fresh, empty schema; dropped with everything in it after the test."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(psycopg.sql.SQL("CREATE SCHEMA {}").format(psycopg.sql.Identifier(name)))
    try:
        yield name
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(
                psycopg.sql.SQL("DROP SCHEMA {} CASCADE").format(psycopg.sql.Identifier(name))
            )


@pytest.fixture
def pg_options(pg_schema: str) -> str:
    """Server options putting a gateway's connections in the test's schema.

    The application_name lets a test find (and terminate) exactly its own backends.
    """
    return f"-c search_path={pg_schema} -c application_name={pg_schema}"


@pytest.fixture
async def raw_db(database_url: str, pg_options: str) -> AsyncIterator[DatabaseGateway]:
    """A gateway on an empty schema (no migrations)."""
    async with open_database_gateway(
        database_url,
        min_size=1,
        max_size=4,
        statement_timeout_s=10,
        options=pg_options,
    ) as db:
        yield db


@pytest.fixture
async def db(raw_db: DatabaseGateway) -> DatabaseGateway:
    """A gateway on a migrated schema."""
    await migrate(raw_db)
    return raw_db
