"""Statements a test runs beside the code under test, on a connection of its own."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, LiteralString

import psycopg
import trio


async def admin_rows(database_url: str, sql: LiteralString, params: Sequence[Any]) -> list[Any]:
    """The rows of ``sql`` run on a fresh autocommit connection (on a worker thread)."""

    def run() -> list[Any]:
        with psycopg.connect(database_url, autocommit=True) as conn:
            return conn.execute(sql, params).fetchall()

    return await trio.to_thread.run_sync(run)
