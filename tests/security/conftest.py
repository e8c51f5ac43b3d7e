"""Fixtures for the storage side of security: a per-test PostgreSQL schema.

Re-exports the schema-isolated fixtures of ``tests/integration/conftest.py``
and adds ``schema_url`` (as in ``tests/integration/test_durability.py``) and a
raw psycopg connection into the test's schema, for looking at rows as stored.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import psycopg
import pytest

from tests.integration.conftest import database_url, db, pg_options, pg_schema, raw_db

__all__ = ["database_url", "db", "pg_options", "pg_schema", "raw_db"]


@pytest.fixture
def schema_url(database_url: str, pg_schema: str) -> str:
    """A database URL whose connections live in the test's own schema."""
    options = quote(f"-c search_path={pg_schema} -c application_name={pg_schema}")
    return f"{database_url}?options={options}"


@pytest.fixture
def raw_sql(database_url: str, pg_schema: str) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection into the test's schema, bypassing Tandem entirely."""
    with psycopg.connect(
        database_url, autocommit=True, options=f"-c search_path={pg_schema}"
    ) as conn:
        yield conn
