"""The inbox writer: the batches of many inboxes in one statement, each answered alone."""

from __future__ import annotations

from collections.abc import Sequence

import attrs
import psycopg
import pytest
import trio
import trio.testing

from actors.inbox.state import Incoming, new_notification
from actors.inbox.writer import InboxWriter, WriterStopped
from runtime.gateways.database import DatabaseGateway
from runtime.gateways.memory import UnstorableValue
from runtime.gateways.notifications import (
    InboxWrite,
    MemoryNotificationStore,
    NotificationRecord,
    NotificationStore,
    PostgresNotificationStore,
    Written,
)

NOW = 1_000_000.0
WINDOW = 300.0


def note(
    user: str, thread: str, actor: str = "a", *, count: int = 1, nid: str = ""
) -> NotificationRecord:
    incoming = Incoming("reply", "doc", thread, actor, {"about": thread, "by": actor})
    record = new_notification(user, incoming, nid or f"nt_{user}_{thread}_{actor}_{count}", NOW)
    return attrs.evolve(record, count=count)


def write(user: str, records: Sequence[NotificationRecord], at: float = NOW) -> InboxWrite:
    return InboxWrite(user, records, at - WINDOW, at)


async def check_grouping_per_user(store: NotificationStore) -> None:
    # alice has an open `reply` group for t1; bob has nothing yet.
    await store.add_batch("alice", [note("alice", "t1", "x")], NOW - WINDOW, NOW)
    results = await store.add_batches(
        [
            write("alice", [note("alice", "t1", "b", count=2), note("alice", "t2", "c")], NOW + 1),
            write("bob", [note("bob", "t1", "b")], NOW + 1),
            write("carol", [], NOW + 1),
        ]
    )
    alice, bob, carol = results
    assert not isinstance(alice, Exception) and not isinstance(bob, Exception)
    (grown, fresh), unread = alice
    assert (grown.count, grown.actor_ids, grown.data) == (3, ("x", "b"), {"about": "t1", "by": "b"})
    assert grown.id == "nt_alice_t1_x_1" and grown.updated_at == NOW + 1
    assert (fresh.count, fresh.thread_id, unread) == (1, "t2", 2)
    # bob's t1 is his own group: a new notification, not alice's grown again
    [(mine)], unread = bob
    assert (mine.user_id, mine.count, mine.id, unread) == ("bob", 1, "nt_bob_t1_b_1", 1)
    assert carol == ([], 0)
    listed = await store.list("alice", before=None, limit=10, unread_only=True)
    assert [(n.thread_id, n.count) for n in listed] == [("t2", 1), ("t1", 3)]
    # Outside the window nothing grows.
    [(late, unread)] = await store.add_batches([write("bob", [note("bob", "t1", "z")], NOW + 999)])
    assert [n.count for n in late] == [1] and unread == 2


async def test_add_batches_groups_per_user_in_memory() -> None:
    await check_grouping_per_user(MemoryNotificationStore())


@pytest.mark.integration
async def test_add_batches_groups_per_user_on_postgres(db: DatabaseGateway) -> None:
    with trio.fail_after(20):
        await check_grouping_per_user(PostgresNotificationStore(db))


class GatedStore(MemoryNotificationStore):
    """Holds every statement until ``gate`` opens; records which users each one held."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = trio.Event()
        self.statements: list[list[str]] = []

    async def add_batches(self, writes: Sequence[InboxWrite]) -> list[Written | Exception]:
        self.statements.append([w.user_id for w in writes])
        await self.gate.wait()
        return await super().add_batches(writes)


async def test_queued_inboxes_share_a_statement_but_a_user_never_twice(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = GatedStore()
    writer = InboxWriter(store)
    got: dict[str, list[Written]] = {}

    async def inbox(user: str, thread: str) -> None:
        got.setdefault(user, []).append(await writer.add_batch(user, [note(user, thread)], 0, NOW))

    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        nursery.start_soon(inbox, "u0", "t1")
        await trio.testing.wait_all_tasks_blocked()  # u0's statement is running
        # u1's second write stands for a restarted inbox's: never in its first's statement
        for user, thread in [("u1", "t1"), ("u2", "t1"), ("u1", "t2"), ("u3", "t1")]:
            nursery.start_soon(inbox, user, thread)
            await trio.testing.wait_all_tasks_blocked()
        store.gate.set()
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert store.statements == [["u0"], ["u1", "u2", "u3"], ["u1"]]
    assert [[r.thread_id for r in records] for records, _ in got["u1"]] == [["t1"], ["t2"]]
    assert [unread for _, unread in got["u1"]] == [1, 2]
    assert all(got[u][0][1] == 1 for u in ("u0", "u2", "u3"))


async def test_stopped_writer_wakes_its_waiters_then_writes_directly(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = GatedStore()
    writer = InboxWriter(store)
    outcomes: dict[str, Written | Exception] = {}

    async def inbox(user: str) -> None:
        try:
            outcomes[user] = await writer.add_batch(user, [note(user, "t")], 0, NOW)
        except WriterStopped as exc:
            outcomes[user] = exc

    writer_scope = trio.CancelScope()

    async def run_writer(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with writer_scope:
            await writer.run(task_status=task_status)

    async with trio.open_nursery() as nursery:
        await nursery.start(run_writer)
        nursery.start_soon(inbox, "u1")  # the writer's statement, held at the gate
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(inbox, "u2")  # queued behind it
        await trio.testing.wait_all_tasks_blocked()
        writer_scope.cancel()
        await trio.testing.wait_all_tasks_blocked()
        assert isinstance(outcomes["u1"], WriterStopped)
        assert isinstance(outcomes["u2"], WriterStopped)
        store.gate.set()
        # From now on an inbox writes straight to the store.
        assert await writer.add_batch("u3", [note("u3", "t")], 0, NOW) == (
            [await store.list("u3", before=None, limit=1, unread_only=True)][0],
            1,
        )
    assert store.statements == [["u1"]]
    assert await store.unread_count("u1") == 0 and await store.unread_count("u2") == 0


@pytest.mark.integration
async def test_one_bad_write_fails_alone(db: DatabaseGateway) -> None:
    store = PostgresNotificationStore(db)
    writer = InboxWriter(store)
    await store.add_batch("taken", [note("taken", "t", nid="nt_taken")], None, NOW)
    results: dict[str, Written | Exception] = {}

    async def inbox(user: str, records: list[NotificationRecord]) -> None:
        try:
            results[user] = await writer.add_batch(user, records, NOW - WINDOW, NOW)
        except Exception as exc:
            results[user] = exc

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(writer.run)
            for n in range(20):
                user = f"u{n}"
                records = [note(user, "t1"), note(user, "t2")]
                if n == 7:  # its id is taken: the statement fails, then this write alone
                    records = [note(user, "t1"), note(user, "t2", nid="nt_taken")]
                if n == 11:  # not storable text: refused before any statement
                    records = [note(user, "t1", actor="a\x00b")]
                nursery.start_soon(inbox, user, records)
            while len(results) < 20:  # noqa: ASYNC110 - waiting on the writer's answers
                await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
    assert isinstance(results.pop("u7"), psycopg.errors.UniqueViolation)
    assert isinstance(results.pop("u11"), UnstorableValue)
    for user, result in results.items():
        assert not isinstance(result, Exception), (user, result)
        records, unread = result
        assert [r.thread_id for r in records] == ["t1", "t2"] and unread == 2
    assert await store.unread_count("u7") == 0 and await store.unread_count("u11") == 0
