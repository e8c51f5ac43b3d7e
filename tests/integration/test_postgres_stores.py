"""PostgreSQL-specific behaviour of the stores (the shared contract is in tests/contract)."""

from __future__ import annotations

import time

import psycopg
import pytest
import trio

from runtime.gateways.database import DatabaseGateway, open_database_gateway
from runtime.gateways.memory import SeqConflict
from runtime.gateways.postgres import PostgresEventStore, PostgresSessionRepository
from runtime.gateways.store import StoredEvent

pytestmark = pytest.mark.integration


def ev(sid: str, seq: int, size: int = 1) -> StoredEvent:
    return StoredEvent(sid, seq, "edit", {"seq": seq, "pad": "x" * size}, "u1", time.time())


async def test_schema_has_the_indexes_the_queries_need(db: DatabaseGateway) -> None:
    rows = await db.fetch_all("SELECT indexdef FROM pg_indexes WHERE schemaname = current_schema()")
    defs = "\n".join(r[0] for r in rows)
    for expected in (
        "session_events USING btree (session_id, seq)",
        "session_events USING btree (session_id, ts)",
        "session_events USING btree (user_id)",
        "session_members USING btree (session_id, user_id)",
        "session_members USING btree (user_id)",
        "sessions USING btree (created_at)",
    ):
        assert expected in defs


async def test_head_survives_trim_and_reconnect(
    db: DatabaseGateway, database_url: str, pg_options: str
) -> None:
    store = PostgresEventStore(db)
    with trio.fail_after(10):
        await store.append([ev("s", i) for i in range(1, 6)])
        assert await store.trim("s", keep_last=0) == 5
        assert await db.fetch_one("SELECT count(*) FROM session_events") == (0,)
        async with open_database_gateway(database_url, options=pg_options) as other:
            head = await PostgresEventStore(other).load_head("s")
        assert (head.last_seq, head.first_retained_seq) == (5, 6)


async def test_big_batch_is_one_transaction(db: DatabaseGateway) -> None:
    store = PostgresEventStore(db)
    batch = [ev("big", i, size=100) for i in range(1, 5001)]
    with trio.fail_after(30):
        started = time.perf_counter()
        await store.append(batch)
        elapsed = time.perf_counter() - started
        got = await store.read_since("big", 4990, 100)
        assert [e.seq for e in got] == list(range(4991, 5001))
        # A batch whose last event is bad leaves nothing behind.
        bad = [ev("big", 5000 + i) for i in range(1, 100)] + [ev("big", 6000)]
        with pytest.raises(SeqConflict):
            await store.append(bad)
        assert (await store.load_head("big")).last_seq == 5000
    print(f"append of 5000 events: {elapsed * 1000:.0f} ms")


async def test_append_at_the_head_or_nothing(db: DatabaseGateway) -> None:
    # The first append creates the session's head; later ones move it in one
    # statement, and one that is not at the head writes nothing.
    store = PostgresEventStore(db)
    with trio.fail_after(10):
        await store.append([ev("h", 1), ev("h", 2), ev("h", 3)])
        await store.append([ev("h", 4), ev("h", 5)])
        with pytest.raises(SeqConflict):
            await store.append([ev("h", 4)])
        with pytest.raises(SeqConflict):
            await store.append([ev("h", 7), ev("h", 8)])
        assert (await store.load_head("h")).last_seq == 5
        assert [e.seq for e in await store.read_since("h", 0, 10)] == [1, 2, 3, 4, 5]
        # a batch of two sessions goes the long way, in one transaction
        await store.append([ev("h", 6), ev("k", 1)])
        assert (await store.load_head("h")).last_seq == 6
        assert (await store.load_head("k")).last_seq == 1


async def test_two_gateways_racing_on_one_session(
    db: DatabaseGateway, database_url: str, pg_options: str
) -> None:
    # Two Tandem processes that both think they own a session: the row lock on
    # the session head lets exactly one append win each seq.
    wins: list[int] = []
    async with open_database_gateway(database_url, options=pg_options) as other:
        stores = [PostgresEventStore(db), PostgresEventStore(other)]

        async def writer(which: int) -> None:
            for seq in range(1, 21):
                try:
                    await stores[which].append([ev("race", seq)])
                    wins.append(seq)
                except SeqConflict:
                    pass

        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(writer, 0)
                nursery.start_soon(writer, 1)
    assert sorted(wins) == list(range(1, 21))
    rows = await db.fetch_all("SELECT seq FROM session_events ORDER BY seq")
    assert [r[0] for r in rows] == list(range(1, 21))


async def test_soft_deleted_session_keeps_its_stream(db: DatabaseGateway) -> None:
    store, repo = PostgresEventStore(db), PostgresSessionRepository(db)
    with trio.fail_after(10):
        await repo.create("s", {"title": "t"})
        await repo.add_member("s", "alice", "owner")
        await store.append([ev("s", 1)])
        assert await repo.soft_delete("s")
        await store.append([ev("s", 2)])  # an actor finishing up is not refused
        assert [e.seq for e in await store.read_since("s", 0, 10)] == [1, 2]
        assert await repo.get("s") is None
        assert await repo.get_member_role("s", "alice") == "owner"


async def test_reads_survive_terminated_backends(
    db: DatabaseGateway, database_url: str, pg_schema: str
) -> None:
    store = PostgresEventStore(db)
    with trio.fail_after(10):
        await store.append([ev("s", 1)])

        def kill() -> None:
            with psycopg.connect(database_url, autocommit=True) as conn:
                conn.execute(
                    "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity"
                    " WHERE application_name = %s",
                    (pg_schema,),
                )

        await trio.to_thread.run_sync(kill)
        assert [e.seq for e in await store.read_since("s", 0, 10)] == [1]
        await store.append([ev("s", 2)])
        assert (await store.load_head("s")).last_seq == 2


async def test_cancelled_append_is_all_or_nothing(db: DatabaseGateway) -> None:
    store = PostgresEventStore(db)
    batch = [ev("c", i, size=1000) for i in range(1, 3001)]
    with trio.fail_after(20):
        with trio.move_on_after(0.01):
            await store.append(batch)
        while db.health().in_use:  # the abandoned worker commits or rolls back
            await trio.lowlevel.checkpoint()
        row = await db.fetch_one("SELECT count(*) FROM session_events")
        head = await store.load_head("c")
        assert row is not None and row[0] in (0, 3000) and head.last_seq == row[0]
