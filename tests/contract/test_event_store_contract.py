"""One contract for the event store and session repository, run on memory and PostgreSQL.

The PostgreSQL variant uses a fresh schema of ``TANDEM_TEST_DATABASE_URL``
(default: the local test database) per test.
"""

from __future__ import annotations

import math
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import psycopg
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.gateways.database import open_database_gateway
from runtime.gateways.memory import (
    MemoryEventStore,
    MemorySessionRepository,
    MemoryState,
    SeqConflict,
    SessionExists,
    SessionNotFound,
    UnstorableValue,
    normalize_ts,
)
from runtime.gateways.migrate import migrate
from runtime.gateways.postgres import PostgresEventStore, PostgresSessionRepository
from runtime.gateways.store import StoredEvent

URL = os.environ.get("TANDEM_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
EventStoreImpl = MemoryEventStore | PostgresEventStore
RepoImpl = MemorySessionRepository | PostgresSessionRepository


@attrs.frozen
class Stores:
    events: EventStoreImpl
    repo: RepoImpl


def _admin(sql: psycopg.sql.Composed) -> None:
    with psycopg.connect(URL, autocommit=True) as conn:
        conn.execute(sql)


KINDS = ["memory", pytest.param("postgres", marks=pytest.mark.integration)]


@asynccontextmanager
async def open_stores(kind: str) -> AsyncIterator[Stores]:
    if kind == "memory":
        state = MemoryState()
        yield Stores(MemoryEventStore(state), MemorySessionRepository(state))
        return
    schema = psycopg.sql.Identifier(f"c_{uuid.uuid4().hex[:16]}")
    _admin(psycopg.sql.SQL("CREATE SCHEMA {}").format(schema))
    try:
        async with open_database_gateway(
            URL, min_size=1, max_size=4, options=f"-c search_path={schema.as_string()}"
        ) as db:
            await migrate(db)
            yield Stores(PostgresEventStore(db), PostgresSessionRepository(db))
    finally:
        _admin(psycopg.sql.SQL("DROP SCHEMA {} CASCADE").format(schema))


@pytest.fixture(params=KINDS)
async def stores(request: pytest.FixtureRequest) -> AsyncIterator[Stores]:
    async with open_stores(request.param) as opened:
        yield opened


def run_property(kind: str, prop: Callable[[Stores], None]) -> None:
    """Run a hypothesis test against one set of stores.

    Hypothesis drives examples synchronously, so it runs on a worker thread and
    each example hops back into the Trio loop that owns the stores (async
    fixtures would not outlive the first example).
    """

    async def main() -> None:
        async with open_stores(kind) as opened:
            await trio.to_thread.run_sync(prop, opened)

    trio.run(main)


def ev(sid: str, seq: int, data: Any = None, *, ts: float | None = None) -> StoredEvent:
    return StoredEvent(sid, seq, "edit", {"n": seq} if data is None else data, "u1", ts or 1.0e9)


async def test_new_session_head(stores: Stores) -> None:
    head = await stores.events.load_head("nobody")
    assert (head.last_seq, head.first_retained_seq) == (0, 1)
    assert await stores.events.read_since("nobody", 0, 10) == []


async def test_append_and_read(stores: Stores) -> None:
    with trio.fail_after(10):
        await stores.events.append([ev("s", i) for i in range(1, 4)])
        await stores.events.append([ev("s", 4)])
        await stores.events.append([])
        assert [e.seq for e in await stores.events.read_since("s", 0, 100)] == [1, 2, 3, 4]
        assert [e.seq for e in await stores.events.read_since("s", 1, 2)] == [2, 3]
        assert await stores.events.read_since("s", 4, 10) == []
        assert await stores.events.read_since("s", 0, 0) == []
        got = (await stores.events.read_since("s", 2, 1))[0]
        assert got == ev("s", 3, ts=normalize_ts(1.0e9))
        head = await stores.events.load_head("s")
        assert (head.last_seq, head.first_retained_seq) == (4, 1)
        # The first append created the session row, with its head.
        record = await stores.repo.get("s")
        assert record is not None and record.last_seq == 4


async def test_append_rejects_seq_conflicts_whole(stores: Stores) -> None:
    with trio.fail_after(10):
        await stores.events.append([ev("a", 1), ev("a", 2)])
        for bad in (
            [ev("a", 2)],  # reuses a seq
            [ev("a", 4)],  # leaves a gap after the head
            [ev("a", 3), ev("a", 5)],  # gap inside the batch
            [ev("b", 2)],  # a new session starts at 1
            [ev("b", 1), ev("a", 3), ev("a", 1)],
            [ev("b", 1), ev("a", 7)],  # b is fine, a is not: neither is written
            [ev("b", 0)],
        ):
            with pytest.raises(SeqConflict):
                await stores.events.append(bad)
        assert (await stores.events.load_head("a")).last_seq == 2
        assert (await stores.events.load_head("b")).last_seq == 0
        assert await stores.events.read_since("b", 0, 10) == []


@pytest.mark.parametrize(
    "data",
    [math.nan, math.inf, "nul\x00", {"k\x00": 1}, "\udc80", 2**63, -(2**63) - 1, {1: 2}, {2, 3}],
)
async def test_unstorable_data_is_rejected_whole(stores: Stores, data: Any) -> None:
    with trio.fail_after(10), pytest.raises(UnstorableValue):
        await stores.events.append([ev("s", 1), ev("s", 2, data)])
    assert await stores.events.read_since("s", 0, 10) == []
    for name, user_id in (("e\x00", "u"), ("e", "\ud800")):
        with pytest.raises(UnstorableValue):
            await stores.events.append([StoredEvent("s", 1, name, {}, user_id, 1.0)])


EDGE_NUMBERS = [1e300, 5e-324, -0.0, 1.7976931348623157e308, 1e16, 0.1, -2.5e-8, 2**63 - 1]


async def test_edge_numbers_round_trip(stores: Stores) -> None:
    data = {"nums": EDGE_NUMBERS, "neg": [-(2**63), -1e-300], "deep": [[[[{"x": 1.0}]]]]}
    with trio.fail_after(10):
        await stores.events.append([ev("s", 1, data)])
        (got,) = await stores.events.read_since("s", 0, 1)
    assert same(got.data, data)


async def test_concurrent_appends_one_wins(stores: Stores) -> None:
    outcomes: list[str] = []

    async def writer(tag: str) -> None:
        try:
            await stores.events.append([ev("race", 1, {"by": tag}), ev("race", 2, {"by": tag})])
            outcomes.append(tag)
        except SeqConflict:
            outcomes.append("conflict")

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            for tag in ("x", "y", "z"):
                nursery.start_soon(writer, tag)
    winners = [o for o in outcomes if o != "conflict"]
    assert len(winners) == 1
    stored = await stores.events.read_since("race", 0, 10)
    assert [e.data["by"] for e in stored] == winners * 2


async def test_trim_keeps_head_and_never_reuses_seqs(stores: Stores) -> None:
    with trio.fail_after(10):
        await stores.events.append([ev("s", i) for i in range(1, 11)])
        assert await stores.events.trim("s", keep_last=3) == 7
        head = await stores.events.load_head("s")
        assert (head.last_seq, head.first_retained_seq) == (10, 8)
        assert await stores.events.trim("s", keep_last=3) == 0
        assert await stores.events.trim("s", keep_last=0) == 3
        head = await stores.events.load_head("s")
        assert (head.last_seq, head.first_retained_seq) == (10, 11)
        with pytest.raises(SeqConflict):
            await stores.events.append([ev("s", 1)])
        await stores.events.append([ev("s", 11)])
        assert [e.seq for e in await stores.events.read_since("s", 0, 10)] == [11]
        assert await stores.events.trim("missing", keep_last=1) == 0
        with pytest.raises(ValueError):
            await stores.events.trim("s", keep_last=-1)


async def test_trim_older_than_removes_a_prefix(stores: Stores) -> None:
    now = time.time()
    stamps = [now - 1000, now - 900, now - 5000, now - 10, now]  # seq 3 is oddly old
    with trio.fail_after(10):
        await stores.events.append([ev("s", i + 1, ts=t) for i, t in enumerate(stamps)])
        assert await stores.events.trim("s", older_than_s=500) == 3
        assert (await stores.events.load_head("s")).first_retained_seq == 4
        assert await stores.events.trim("s", older_than_s=500, keep_last=5) == 0


async def test_repository_sessions(stores: Stores) -> None:
    repo = stores.repo
    with trio.fail_after(10):
        created = await repo.create("s2", {"title": "Ünïcode ✓", "n": [1, 2.5]})
        assert created.metadata == {"title": "Ünïcode ✓", "n": [1, 2.5]}
        assert created.deleted_at is None and created.last_seq == 0
        with pytest.raises(SessionExists):
            await repo.create("s2")
        for sid in ("s1", "s3", "B", "a", "é"):
            await repo.create(sid)
        assert await repo.get("s2") == created
        assert await repo.get("zzz") is None
        page1 = await repo.list_sessions(limit=3)
        page2 = await repo.list_sessions(after=page1[-1].id, limit=3)
        assert [r.id for r in page1 + page2] == ["B", "a", "s1", "s2", "s3", "é"]
        updated = await repo.update_metadata("s2", {"title": "new"})
        assert updated.metadata == {"title": "new"} and updated.updated_at >= created.updated_at
        assert await repo.soft_delete("s2") is True
        assert await repo.soft_delete("s2") is False
        assert await repo.get("s2") is None
        deleted = await repo.get("s2", include_deleted=True)
        assert deleted is not None and deleted.deleted_at is not None
        assert "s2" not in [r.id for r in await repo.list_sessions()]
        assert "s2" in [r.id for r in await repo.list_sessions(include_deleted=True)]
        with pytest.raises(SessionNotFound):
            await repo.update_metadata("s2", {})
        with pytest.raises(SessionExists):
            await repo.create("s2")
        with pytest.raises(UnstorableValue):
            await repo.create("bad", {"x": math.nan})
        assert await repo.list_sessions(limit=0) == []


async def test_repository_members(stores: Stores) -> None:
    repo = stores.repo
    with trio.fail_after(10):
        await repo.create("s")
        first = await repo.add_member("s", "bob", "editor")
        await repo.add_member("s", "alice", "owner")
        again = await repo.add_member("s", "bob", "viewer")
        assert again.role == "viewer" and again.joined_at == first.joined_at
        assert [(m.user_id, m.role) for m in await repo.list_members("s")] == [
            ("alice", "owner"),
            ("bob", "viewer"),
        ]
        assert await repo.get_member_role("s", "bob") == "viewer"
        assert await repo.get_member_role("s", "carol") is None
        assert await repo.remove_member("s", "bob") is True
        assert await repo.remove_member("s", "bob") is False
        assert [m.user_id for m in await repo.list_members("s")] == ["alice"]
        with pytest.raises(SessionNotFound):
            await repo.add_member("nope", "bob", "editor")
        await repo.soft_delete("s")
        with pytest.raises(SessionNotFound):
            await repo.add_member("s", "dave", "editor")


# -- round-trip properties --------------------------------------------------------------

# Any Unicode but NUL (jsonb and text refuse it) and lone surrogates (not UTF-8).
text = st.text(
    alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), max_size=20
)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | text,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(text, children, max_size=5),
    max_leaves=25,
)


def same(a: Any, b: Any) -> bool:
    """Equal, and of the same JSON types (1 is not 1.0, True is not 1)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


@pytest.mark.parametrize("kind", KINDS)
def test_event_round_trip(kind: str) -> None:
    @settings(max_examples=60, deadline=None)
    @given(data=json_values, name=text, user_id=text, ts=st.floats(0, 2**31))
    def prop(stores: Stores, data: Any, name: str, user_id: str, ts: float) -> None:
        sid = uuid.uuid4().hex
        event = StoredEvent(sid, 1, name, data, user_id, ts)
        trio.from_thread.run(stores.events.append, [event])
        (got,) = trio.from_thread.run(stores.events.read_since, sid, 0, 1)
        assert same(got.data, data)
        assert (got.session_id, got.seq, got.name, got.user_id) == (sid, 1, name, user_id)
        assert got.ts == normalize_ts(ts) and abs(got.ts - ts) <= 1e-6

    run_property(kind, prop)


@pytest.mark.parametrize("kind", KINDS)
def test_metadata_round_trip(kind: str) -> None:
    @settings(max_examples=30, deadline=None)
    @given(metadata=json_values)
    def prop(stores: Stores, metadata: Any) -> None:
        sid = uuid.uuid4().hex
        created = trio.from_thread.run(stores.repo.create, sid, metadata)
        assert same(created.metadata, {} if metadata is None else metadata)
        got = trio.from_thread.run(stores.repo.get, sid)
        assert got is not None and same(got.metadata, created.metadata)

    run_property(kind, prop)
