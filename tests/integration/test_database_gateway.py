"""DatabaseGateway against a real PostgreSQL: queries, timeouts, cancellation, outages."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
import trio

from runtime.gateways.database import (
    DatabaseGateway,
    DatabaseUnavailable,
    StatementTimeout,
    open_database_gateway,
)
from runtime.gateways.migrate import load_migrations, migrate
from tests.integration.pg_admin import admin_rows

pytestmark = pytest.mark.integration


async def _terminate_backends(database_url: str, schema: str) -> int:
    """Kill this test's server processes, as a PostgreSQL restart would."""
    rows = await admin_rows(
        database_url,
        "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE application_name = %s",
        (schema,),
    )
    return len(rows)


async def test_basic_queries(raw_db: DatabaseGateway) -> None:
    with trio.fail_after(10):
        await raw_db.execute("CREATE TABLE t (k int PRIMARY KEY, v text)")
        assert await raw_db.execute("INSERT INTO t VALUES (%s, %s)", (1, "a")) == 1
        await raw_db.executemany("INSERT INTO t VALUES (%s, %s)", [(2, "b"), (3, "c")])
        await raw_db.copy_rows("t", ["k", "v"], [(4, "d"), (5, "é\n\t")])
        assert await raw_db.fetch_one("SELECT v FROM t WHERE k = %s", (5,)) == ("é\n\t",)
        assert await raw_db.fetch_one("SELECT v FROM t WHERE k = 99") is None
        rows = await raw_db.fetch_all("SELECT k FROM t ORDER BY k")
        assert [r[0] for r in rows] == [1, 2, 3, 4, 5]


async def test_batches_are_all_or_nothing(raw_db: DatabaseGateway) -> None:
    with trio.fail_after(10):
        await raw_db.execute("CREATE TABLE t (k int PRIMARY KEY)")
        with pytest.raises(psycopg.errors.UniqueViolation):
            await raw_db.executemany("INSERT INTO t VALUES (%s)", [(1,), (2,), (1,)])
        with pytest.raises(psycopg.errors.UniqueViolation):
            await raw_db.copy_rows("t", ["k"], [(7,), (7,)])

        def two_then_fail(conn: psycopg.Connection[Any]) -> None:
            conn.execute("INSERT INTO t VALUES (10), (11)")
            raise RuntimeError("boom")

        with pytest.raises(RuntimeError):
            await raw_db.run_in_transaction(two_then_fail)
        assert await raw_db.fetch_all("SELECT k FROM t") == []

        def two(conn: psycopg.Connection[Any]) -> int:
            conn.execute("INSERT INTO t VALUES (10), (11)")
            row = conn.execute("SELECT count(*) FROM t").fetchone()
            assert row is not None
            return int(row[0])

        assert await raw_db.run_in_transaction(two) == 2


async def test_exchange_binds_values_as_data_and_returns_each_statements_rows(
    raw_db: DatabaseGateway,
) -> None:
    # Values are bound client-side: whatever they hold must arrive as data.
    awkward = ["'); DROP TABLE t; --", 'quote " and \\ backslash', "é\n\t%s%%", ""]
    blob = bytes(range(256))

    with trio.fail_after(10):
        results = await raw_db.exchange(
            [
                ("BEGIN", ()),
                ("CREATE TABLE t (k int PRIMARY KEY, v text, b bytea, a text[], f float8)", ()),
                (
                    "INSERT INTO t VALUES (%s, %s, %s, %s::text[], %s), (%s, %s, %s, %s, %s)",
                    (1, awkward[0], blob, awkward, 0.1 + 0.2, 2, None, None, [], -1e-300),
                ),
                ("SELECT k, v, b, a, f FROM t ORDER BY k", ()),
                ("SELECT k FROM t WHERE v = ANY(%s::text[])", (awkward,)),
                ("COMMIT", ()),
            ],
        )
        assert results[:3] == [[], [], []]  # BEGIN, CREATE, INSERT: no rows
        assert results[3] == [
            (1, awkward[0], blob, awkward, 0.1 + 0.2),
            (2, None, None, [], -1e-300),
        ]
        assert results[4:] == [[(1,)], []]
        assert await raw_db.fetch_one("SELECT count(*) FROM t") == (2,)  # committed


async def test_a_failed_exchange_rolls_back_and_leaves_the_connection_as_lent(
    database_url: str,
) -> None:
    async with open_database_gateway(database_url, min_size=1, max_size=1) as db:
        await db.execute("CREATE TEMP TABLE IF NOT EXISTS u (k int PRIMARY KEY)")

        with trio.fail_after(10):
            with pytest.raises(psycopg.errors.UniqueViolation):
                async with db.connection() as conn:
                    await conn.exchange([("BEGIN", ()), ("INSERT INTO u VALUES (1), (2)", ())])
                    await conn.exchange([("INSERT INTO u VALUES (2)", ()), ("COMMIT", ())])
            # The first message's rows went with the transaction, and the one connection
            # is back in the pool with autocommit off: a transaction there is still atomic.
            assert await db.fetch_all("SELECT k FROM u") == []

            def state(conn: psycopg.Connection[Any]) -> bool:
                return conn.autocommit

            assert await db.run_in_transaction(state) is False
            assert await db.write_returning("INSERT INTO u VALUES (3) RETURNING k") == [(3,)]
            assert await db.fetch_all("SELECT k FROM u") == [(3,)]


async def test_statement_timeout(database_url: str) -> None:
    async with open_database_gateway(
        database_url, min_size=1, max_size=2, statement_timeout_s=0.2
    ) as db:
        with trio.fail_after(5), pytest.raises(StatementTimeout):
            await db.fetch_one("SELECT pg_sleep(3)")
        with trio.fail_after(5):  # the connection is fine afterwards
            assert await db.fetch_one("SELECT 1") == (1,)
        assert db.health().ok


async def test_cancelled_call_cancels_its_query(database_url: str) -> None:
    # One connection and a long statement_timeout: if cancelling the caller left
    # the query running, the next call would wait 30 s for the connection.
    async with open_database_gateway(
        database_url, min_size=1, max_size=1, statement_timeout_s=30
    ) as db:
        with trio.fail_after(5):
            with trio.move_on_after(0.2) as scope:
                await db.fetch_one("SELECT pg_sleep(20)")
            assert scope.cancelled_caught
            assert await db.fetch_one("SELECT 2") == (2,)


async def test_capacity_limit_and_health(database_url: str) -> None:
    async with open_database_gateway(database_url, min_size=1, max_size=2) as db:
        health = db.health()
        assert health.ok and health.max_size == 2 and health.in_use == 0
        results: list[Any] = []
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                for i in range(6):
                    sql = f"SELECT {i}, pg_sleep(0.05)"
                    nursery.start_soon(_append_result, db, results, sql)
        assert sorted(r[0] for r in results) == list(range(6))
        assert db.health().pool_size <= 2


async def _append_result(db: DatabaseGateway, results: list[Any], sql: Any) -> None:
    results.append(await db.fetch_one(sql))


async def test_survives_terminated_backends(
    database_url: str, pg_schema: str, pg_options: str
) -> None:
    async with open_database_gateway(
        database_url, min_size=2, max_size=4, options=pg_options
    ) as db:
        with trio.fail_after(15):
            await db.execute("CREATE TABLE t (k int)")
            # A request in flight when its backend dies fails with DatabaseUnavailable...
            async with trio.open_nursery() as nursery:
                failures: list[BaseException] = []

                async def in_flight() -> None:
                    try:
                        await db.execute("SELECT pg_sleep(10)")
                    except DatabaseUnavailable as exc:
                        failures.append(exc)

                nursery.start_soon(in_flight)
                while db.health().in_use == 0:  # until the query holds its connection
                    await trio.lowlevel.checkpoint()
                while await _terminate_backends(database_url, pg_schema) == 0:
                    await trio.lowlevel.checkpoint()
            assert len(failures) == 1
            assert db.health().ok is False
            assert db.health().last_error is not None
            # ...and later requests, writes included, get fresh connections.
            await _terminate_backends(database_url, pg_schema)  # kill idle ones too
            assert await db.execute("INSERT INTO t VALUES (1)") == 1
            assert await db.fetch_one("SELECT count(*) FROM t") == (1,)
            assert db.health().ok


async def test_unreachable_server_is_unavailable() -> None:
    url = "postgresql://postgres@127.0.0.1:1/nowhere"  # nothing listens on port 1
    with trio.fail_after(10), pytest.raises(DatabaseUnavailable):
        async with open_database_gateway(url, connect_timeout_s=1):
            pass


async def test_migrations_apply_once(raw_db: DatabaseGateway) -> None:
    with trio.fail_after(20):
        applied = await migrate(raw_db)
        assert applied == [m.version for m in load_migrations()]
        assert await migrate(raw_db) == []
        rows = await raw_db.fetch_all("SELECT version FROM schema_migrations ORDER BY version")
        assert [r[0] for r in rows] == applied


async def test_concurrent_migrations_do_not_race(database_url: str, pg_options: str) -> None:
    results: list[list[str]] = []
    with trio.fail_after(20):
        async with (
            open_database_gateway(database_url, options=pg_options) as a,
            open_database_gateway(database_url, options=pg_options) as b,
            trio.open_nursery() as nursery,
        ):
            for gw in (a, b, a, b):
                nursery.start_soon(_migrate_into, gw, results)
    all_versions = [m.version for m in load_migrations()]
    assert sorted(v for r in results for v in r) == all_versions


async def _migrate_into(db: DatabaseGateway, results: list[list[str]]) -> None:
    results.append(await migrate(db))
