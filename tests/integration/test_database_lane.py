"""The gateway's lane: statements sent from the Trio thread over pool connections.

What must hold whatever happens to a call: a connection goes back to use only when
every message it was sent was answered and no transaction is left open on it.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
import trio
from psycopg.adapt import PyFormat

from runtime.gateways.database import DatabaseGateway, open_database_gateway
from runtime.gateways.libpq_io import positional
from tests.integration.pg_admin import admin_rows

pytestmark = pytest.mark.integration


def test_positional_placeholders() -> None:
    assert positional(b"SELECT %s, %b, %t, 100 %% 7") == (
        b"SELECT $1, $2, $3, 100 % 7",
        (PyFormat.AUTO, PyFormat.BINARY, PyFormat.TEXT),
    )
    assert positional(b"SELECT 1") == (b"SELECT 1", ())
    with pytest.raises(psycopg.ProgrammingError, match="placeholders"):
        positional(b"SELECT %(name)s")
    with pytest.raises(psycopg.ProgrammingError, match="placeholders"):
        positional(b"SELECT 5 % 2")


async def test_statements_bind_and_load_like_a_cursor(raw_db: DatabaseGateway) -> None:
    with trio.fail_after(10):
        await raw_db.execute(
            "CREATE TABLE t (k int PRIMARY KEY, v text, j jsonb, a bigint[], ts timestamptz)"
        )
        # %b sends the array in binary; %s lets psycopg choose, as a cursor would.
        assert (
            await raw_db.execute(
                "INSERT INTO t SELECT * FROM unnest(%b::int[], %b::text[])"
                " AS u(k, v) ON CONFLICT DO NOTHING",
                ([1, 2, 3], ["a", None, "'; DROP TABLE t; --"]),
            )
            == 3
        )
        assert (
            await raw_db.execute(
                "UPDATE t SET j = %s::jsonb, a = %s WHERE k = %s", ('{"x": [1, 2]}', [7, 8], 1)
            )
            == 1
        )
        assert await raw_db.fetch_all("SELECT k, v, j, a FROM t ORDER BY k") == [
            (1, "a", {"x": [1, 2]}, [7, 8]),
            (2, None, None, None),
            (3, "'; DROP TABLE t; --", None, None),
        ]
        assert await raw_db.fetch_one("SELECT 100 %% 7, %s::text", ("%s",)) == (2, "%s")
        assert await raw_db.fetch_one("SELECT 100 % 7") == (2,)  # no params: sent as is
        assert await raw_db.fetch_all("SELECT 1; SELECT 2") == [(1,)]  # as a cursor: the first
        assert await raw_db.write_returning("DELETE FROM t WHERE k > %s RETURNING k", (1,)) == [
            (2,),
            (3,),
        ]


async def test_bad_input_fails_alone_and_the_connection_stays_usable(database_url: str) -> None:
    async with open_database_gateway(database_url, min_size=1, max_size=1) as db:
        with trio.fail_after(10):
            with pytest.raises(psycopg.ProgrammingError, match="2 placeholders but 1"):
                await db.fetch_one("SELECT %s, %s", (1,))
            with pytest.raises(psycopg.errors.UndefinedTable):
                await db.fetch_all("SELECT * FROM no_such_table")
            with pytest.raises(psycopg.errors.DivisionByZero):
                await db.exchange([("SELECT 1", ()), ("SELECT 1 / %s", (0,))])
            assert await db.fetch_one("SELECT %s::int + 1", (41,)) == (42,)


async def test_a_transaction_left_open_is_rolled_back_before_reuse(database_url: str) -> None:
    # One connection: whatever the first block leaves behind, the next call meets it.
    async with open_database_gateway(database_url, min_size=1, max_size=1) as db:
        await db.execute("CREATE TEMP TABLE IF NOT EXISTS u (k int PRIMARY KEY)")
        with trio.fail_after(10):
            with pytest.raises(RuntimeError):
                async with db.connection() as conn:
                    await conn.exchange([("BEGIN", ()), ("INSERT INTO u VALUES (1)", ())])
                    raise RuntimeError("a bug between two messages")
            # Had the open transaction survived, this insert would join it and the
            # row counted below would be 1 and then 2.
            assert await db.execute("INSERT INTO u VALUES (2)") == 1
            assert await db.fetch_all("SELECT k FROM u") == [(2,)]
            async with db.connection() as conn:
                outcome = await conn.statement("SELECT count(*) FROM u")
            assert outcome.rows == [(1,)] and outcome.rowcount == 1


async def test_a_call_cancelled_mid_message_never_lends_its_connection_again(
    database_url: str,
) -> None:
    # The cancelled exchange's answer would still be on its way: a connection reused
    # before reading it would hand the next caller the wrong rows.
    async with open_database_gateway(
        database_url, min_size=1, max_size=1, statement_timeout_s=30
    ) as db:
        with trio.fail_after(10):
            with trio.move_on_after(0.2) as scope:
                await db.exchange([("SELECT pg_sleep(0.5)", ()), ("SELECT 'stale'", ())])
            assert scope.cancelled_caught
            assert await db.fetch_all("SELECT 'fresh'") == [("fresh",)]
            assert db.health().in_use == 0


async def test_threaded_work_gets_a_connection_the_lane_keeps_idle(database_url: str) -> None:
    async with open_database_gateway(database_url, min_size=1, max_size=1) as db:
        with trio.fail_after(10):
            assert await db.fetch_one("SELECT 1") == (1,)  # the lane now keeps the one

            def in_thread(conn: psycopg.Connection[Any]) -> int:
                row = conn.execute("SELECT 2").fetchone()
                assert row is not None
                return int(row[0])

            assert await db.run_in_transaction(in_thread) == 2
            assert await db.fetch_one("SELECT 3") == (3,)


async def test_a_cancelled_statement_stops_running_on_the_server(
    database_url: str, pg_schema: str, pg_options: str
) -> None:
    # Closing the connection alone would leave the backend sleeping until it next
    # writes to the socket: the gateway also sends a cancel request.
    async with open_database_gateway(
        database_url, min_size=1, max_size=2, statement_timeout_s=60, options=pg_options
    ) as db:
        with trio.move_on_after(0.3):
            await db.fetch_one("SELECT pg_sleep(30)")
        with trio.fail_after(10):  # polled: the server tells no one when it stops
            while True:
                if not await _still_sleeping(database_url, pg_schema):
                    break
                await trio.sleep(0.05)


async def _still_sleeping(database_url: str, application_name: str) -> int:
    [(count,)] = await admin_rows(
        database_url,
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
        " AND state = 'active' AND query LIKE 'SELECT pg_sleep(30)%%'",
        (application_name,),
    )
    return int(count)


async def test_threaded_work_waiting_for_the_pool_gets_the_lane_connection_next(
    database_url: str,
) -> None:
    # The one connection is busy in the lane when threaded work asks for it: once
    # the lane's call ends, the connection must go to the waiter, not stay idle in
    # the lane until the waiter's pool timeout.
    async with open_database_gateway(
        database_url, min_size=1, max_size=1, acquire_timeout_s=3
    ) as db:

        def in_thread(conn: psycopg.Connection[Any]) -> int:
            row = conn.execute("SELECT 7").fetchone()
            assert row is not None
            return int(row[0])

        async def threaded_while_lane_busy() -> None:
            while db.health().in_use == 0:  # until the lane holds the connection
                await trio.lowlevel.checkpoint()
            assert await db.run_in_transaction(in_thread) == 7

        with trio.fail_after(2.5):  # under the pool timeout: a starved waiter fails it
            async with trio.open_nursery() as nursery:
                nursery.start_soon(threaded_while_lane_busy)
                assert await db.fetch_one("SELECT 1 FROM pg_sleep(0.3)") == (1,)


async def test_a_threaded_call_cancelled_before_it_starts_returns_the_lane_connection(
    database_url: str,
) -> None:
    # The threaded call is handed the lane's idle connection, then cancelled before its
    # thread runs: the connection must go back, or the one-connection pool is empty
    # for good.
    async with open_database_gateway(
        database_url, min_size=1, max_size=1, acquire_timeout_s=2
    ) as db:

        def in_thread(conn: psycopg.Connection[Any]) -> int:
            return 1

        with trio.fail_after(1.5):  # under the pool timeout: a leaked connection fails it
            assert await db.fetch_one("SELECT 1") == (1,)  # the lane now keeps the one
            with trio.CancelScope() as scope:
                scope.cancel()
                await db.run_in_transaction(in_thread)
            assert scope.cancelled_caught
            assert await db.fetch_one("SELECT 2") == (2,)
            assert await db.run_in_transaction(in_thread) == 1
            assert db.health().in_use == 0
