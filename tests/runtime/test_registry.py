"""Registry: one live actor per key, passivation, respawn, and batching (MockClock)."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from runtime.actor import BatchPolicy, Fail, run_batch_loop
from runtime.mailbox import Mailbox
from runtime.registry import ActorKind, ActorRegistry, SpawnFailed
from runtime.supervisor import RestartPolicy, Supervisor


class Recorder:
    """A test actor: records each batch; idle when told so."""

    instances: list[Recorder] = []

    def __init__(self, actor_id: str, mailbox: Mailbox[Any], policy: BatchPolicy) -> None:
        self.actor_id = actor_id
        self.mailbox = mailbox
        self.policy = policy
        self.batches: list[list[Any]] = []
        self.busy_for = 0.0
        Recorder.instances.append(self)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await run_batch_loop(self, self.mailbox, policy=self.policy, passivate_after=60)

    async def handle(self, batch: list[Any]) -> None:
        self.batches.append(batch)
        if self.busy_for:
            await trio.sleep(self.busy_for)

    def is_idle(self) -> bool:
        return True


@pytest.fixture
async def registry() -> Any:
    Recorder.instances = []
    sup = Supervisor("actors", RestartPolicy(max_restarts=3, period=10, backoff_initial=0.01))
    reg = ActorRegistry()
    kind: ActorKind[Mailbox[Any]] = ActorKind(
        "rec", lambda: Mailbox(16), lambda aid, mb: Recorder(aid, mb, BatchPolicy(max_batch=8)), sup
    )
    reg.add_kind(kind)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        yield reg, kind, sup
        nursery.cancel_scope.cancel()


async def test_concurrent_gets_spawn_one_actor(
    registry: Any, autojump_clock: trio.testing.MockClock
) -> None:
    reg, kind, _ = registry
    boxes = []
    async with trio.open_nursery() as nursery:
        for _ in range(10):
            nursery.start_soon(lambda: _append(boxes, reg.get(kind, "a")))
    assert len(Recorder.instances) == 1
    assert all(box is boxes[0] for box in boxes)


async def _append(out: list[Any], awaitable: Any) -> None:
    out.append(await awaitable)


async def test_idle_actor_passivates_and_comes_back(
    registry: Any, autojump_clock: trio.testing.MockClock
) -> None:
    reg, kind, sup = registry
    await reg.send(kind, "a", "hello")
    await trio.sleep(1)
    assert reg.lookup(kind, "a") is not None
    await trio.sleep(120)  # past passivate_after
    assert reg.lookup(kind, "a") is None
    assert sup.children() == []
    await reg.send(kind, "a", "again")  # on demand: a fresh actor
    await trio.testing.wait_all_tasks_blocked()
    assert len(Recorder.instances) == 2
    assert Recorder.instances[1].batches == [["again"]]


async def test_messages_queued_while_busy_are_one_batch(
    registry: Any, autojump_clock: trio.testing.MockClock
) -> None:
    reg, kind, _ = registry
    await reg.send(kind, "a", 0)
    await trio.testing.wait_all_tasks_blocked()
    actor = Recorder.instances[0]
    actor.busy_for = 1.0
    await reg.send(kind, "a", 1)  # actor now busy for 1 s with [1]
    await trio.testing.wait_all_tasks_blocked()
    for i in range(2, 12):
        await reg.send(kind, "a", i)
    await trio.sleep(5)
    assert actor.batches == [[0], [1], [2, 3, 4, 5, 6, 7, 8, 9], [10, 11]]  # max_batch 8


async def test_crash_restarts_on_the_same_mailbox(
    registry: Any, autojump_clock: trio.testing.MockClock
) -> None:
    reg, kind, sup = registry
    await reg.send(kind, "a", "before")
    await trio.testing.wait_all_tasks_blocked()
    mailbox = reg.lookup(kind, "a")
    await reg.send(kind, "a", Fail("boom"))
    await reg.send(kind, "a", "after")  # queued while the actor restarts: not lost
    await trio.sleep(1)
    assert reg.lookup(kind, "a") is mailbox
    assert len(Recorder.instances) == 2
    assert Recorder.instances[1].batches == [["after"]]
    (child,) = sup.children()
    assert child.restarts == 1
    assert child.last_failure == "InjectedFailure: boom"


async def test_failed_spawn_reports_and_next_get_retries(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sup = Supervisor("actors")
    reg = ActorRegistry()
    attempts = []

    class Broken:
        async def run(
            self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
        ) -> None:
            attempts.append(1)
            if len(attempts) == 1:
                raise OSError("store down")
            task_status.started()
            await trio.sleep_forever()

    kind: ActorKind[Mailbox[Any]] = ActorKind(
        "b", lambda: Mailbox(4), lambda aid, mb: Broken(), sup
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        with pytest.raises(SpawnFailed, match="store down"):
            await reg.get(kind, "x")
        assert reg.lookup(kind, "x") is None
        assert await reg.get(kind, "x") is not None
        nursery.cancel_scope.cancel()


async def test_close_all_drains_then_stops(
    registry: Any, autojump_clock: trio.testing.MockClock
) -> None:
    reg, kind, _ = registry
    for i in range(5):
        await reg.send(kind, "a", i)
    reg.close_all()
    with trio.fail_after(5):
        await reg.wait_empty()
    assert sum(len(b) for b in Recorder.instances[0].batches) == 5
