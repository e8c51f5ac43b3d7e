"""Supervisor strategies on a MockClock: restarts, backoff, intensity, escalation."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from runtime.supervisor import Restart, RestartIntensityExceeded, RestartPolicy, Supervisor


class Flaky:
    """A child that crashes its first ``crashes`` runs, then runs until cancelled."""

    def __init__(self, crashes: int, *, then_return: bool = False) -> None:
        self.crashes = crashes
        self.then_return = then_return
        self.starts: list[float] = []

    async def __call__(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        self.starts.append(trio.current_time())
        task_status.started()
        await trio.sleep(1)
        if len(self.starts) <= self.crashes:
            raise ValueError(f"crash {len(self.starts)}")
        if self.then_return:
            return
        await trio.sleep_forever()


async def test_one_for_one_restarts_only_the_crashed_child(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sup = Supervisor("test", RestartPolicy(max_restarts=5, period=60, backoff_initial=0.5))
    flaky, steady = Flaky(crashes=2), Flaky(crashes=0)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await sup.start_child("flaky", flaky, kind="test")
        await sup.start_child("steady", steady, kind="test")
        await trio.sleep(30)
        assert len(flaky.starts) == 3
        assert len(steady.starts) == 1  # its sibling's crashes never touched it
        flaky_child = next(c for c in sup.children() if c.name == "flaky")
        assert flaky_child.restarts == 2
        assert flaky_child.last_failure == "ValueError: crash 2"
        assert sup.status()["restarts"] == 2
        nursery.cancel_scope.cancel()


async def test_backoff_doubles_between_restarts(autojump_clock: trio.testing.MockClock) -> None:
    sup = Supervisor("test", RestartPolicy(max_restarts=10, period=100, backoff_initial=0.5))
    flaky = Flaky(crashes=3)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await sup.start_child("flaky", flaky, kind="test")
        await trio.sleep(50)
        gaps = [b - a for a, b in zip(flaky.starts, flaky.starts[1:], strict=False)]
        # each run lasts 1 s before crashing, then the backoff: 0.5, 1, 2
        assert gaps == pytest.approx([1.5, 2.0, 3.0])
        nursery.cancel_scope.cancel()


async def test_intensity_exceeded_escalates_to_the_parent(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sup = Supervisor("inner", RestartPolicy(max_restarts=2, period=60, backoff_initial=0.1))
    steady = Flaky(crashes=0)
    with pytest.RaisesGroup(RestartIntensityExceeded, flatten_subgroups=True):
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            await sup.start_child("steady", steady, kind="test")
            await sup.start_child("doomed", Flaky(crashes=100), kind="test")
            await trio.sleep_forever()


async def test_parent_restarts_an_escalating_supervisor(
    autojump_clock: trio.testing.MockClock,
) -> None:
    root = Supervisor("root", RestartPolicy(max_restarts=3, period=1000, backoff_initial=0.1))
    inner = Supervisor("inner", RestartPolicy(max_restarts=1, period=60, backoff_initial=0.1))
    runs = 0
    doomed = Flaky(crashes=2)  # shared by both incarnations: its third start succeeds

    async def inner_with_children(
        *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        nonlocal runs
        runs += 1
        async with trio.open_nursery() as nursery:
            await nursery.start(inner.run)
            await inner.start_child("doomed", doomed, kind="test")
            task_status.started()

    async with trio.open_nursery() as nursery:
        await nursery.start(root.run)
        await root.start_child("inner", inner_with_children, kind="supervisor")
        await trio.sleep(100)
        assert runs == 2  # escalated once, then the fresh subtree's child recovered
        (child,) = root.children()
        assert child.restarts == 1
        assert "RestartIntensityExceeded" in (child.last_failure or "")
        nursery.cancel_scope.cancel()


async def test_transient_child_is_not_restarted_after_normal_exit(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sup = Supervisor("test")
    child = Flaky(crashes=1, then_return=True)
    exited = []
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await sup.start_child(
            "t", child, kind="test", restart=Restart.TRANSIENT, on_exit=lambda: exited.append(True)
        )
        await trio.sleep(60)
        assert len(child.starts) == 2  # crash -> restart; normal exit -> done
        assert exited == [True]
        assert sup.children() == []
        nursery.cancel_scope.cancel()


async def test_permanent_child_is_restarted_after_normal_exit(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sup = Supervisor("test", RestartPolicy(max_restarts=100, period=1))
    child = Flaky(crashes=0, then_return=True)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await sup.start_child("p", child, kind="test", restart=Restart.PERMANENT)
        await trio.sleep(10.5)
        assert len(child.starts) > 3
        nursery.cancel_scope.cancel()


async def test_temporary_child_is_never_restarted(autojump_clock: trio.testing.MockClock) -> None:
    sup = Supervisor("test")
    child = Flaky(crashes=5)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await sup.start_child("tmp", child, kind="test", restart=Restart.TEMPORARY)
        await trio.sleep(60)
        assert len(child.starts) == 1
        assert sup.recent_failures[-1]["failure"] == "ValueError: crash 1"
        nursery.cancel_scope.cancel()


async def test_failure_before_started_goes_to_the_spawner() -> None:
    sup = Supervisor("test")

    async def broken(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        raise OSError("store unreachable")

    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        with pytest.RaisesGroup(OSError, flatten_subgroups=True):
            await sup.start_child("b", broken, kind="test")
        assert sup.children() == []
        nursery.cancel_scope.cancel()


async def test_cancellation_is_not_mistaken_for_a_crash(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sup = Supervisor("test")
    child = Flaky(crashes=0)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await sup.start_child("c", child, kind="test")
        sup.stop_child("c")
        await trio.sleep(10)
        assert len(child.starts) == 1
        assert sup.total_restarts == 0
        assert list(sup.recent_failures) == []
        nursery.cancel_scope.cancel()
