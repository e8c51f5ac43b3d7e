"""How the actor loop groups messages: what is queued, and a window only under load."""

from __future__ import annotations

import attrs
import pytest
import trio
import trio.testing

from runtime.actor import BatchPolicy, LoadGauge, run_batch_loop
from runtime.mailbox import Mailbox


def test_no_window_when_idle_or_turned_off() -> None:
    policy = BatchPolicy(delay=0.01, max_delay=0.03)
    assert policy.window(last_size=1, busy=0.0) == 0.0
    assert policy.window(last_size=15, busy=0.49) == 0.0
    assert BatchPolicy(delay=0.0, max_delay=0.03).window(last_size=500, busy=1.0) == 0.0


def test_the_window_grows_with_cpu_load() -> None:
    policy = BatchPolicy(delay=0.01, max_delay=0.03, widen_busy=0.5)
    assert policy.window(last_size=1, busy=0.5) == pytest.approx(0.01)
    assert policy.window(last_size=1, busy=0.75) == pytest.approx(0.02)
    assert policy.window(last_size=1, busy=1.0) == pytest.approx(0.03)
    assert policy.window(last_size=1, busy=1.7) == pytest.approx(0.03)  # capped
    # Loaded by size alone (a burst, not CPU): the narrow window.
    assert policy.window(last_size=16, busy=0.0) == pytest.approx(0.01)
    # A max below the delay does not narrow it.
    assert BatchPolicy(delay=0.01, max_delay=0.0).window(1, 1.0) == pytest.approx(0.01)


def test_the_window_opens_by_offered_rate_whatever_the_cpu_load() -> None:
    policy = BatchPolicy(delay=0.01, max_delay=0.03, widen_rate=50_000)
    assert policy.window(last_size=1, busy=0.0, rate=49_999) == 0.0
    assert policy.window(last_size=1, busy=0.0, rate=50_000) == pytest.approx(0.01)
    assert policy.window(last_size=1, busy=0.0, rate=75_000) == pytest.approx(0.02)
    assert policy.window(last_size=1, busy=0.0, rate=100_000) == pytest.approx(0.03)
    assert policy.window(last_size=1, busy=0.0, rate=900_000) == pytest.approx(0.03)
    # Both rules apply: the wider window wins.
    assert policy.window(last_size=1, busy=0.75, rate=50_000) == pytest.approx(0.02)
    assert policy.window(last_size=1, busy=0.5, rate=75_000) == pytest.approx(0.02)
    # Off by default, and with no delay there is no window at all.
    assert BatchPolicy(delay=0.01, max_delay=0.03).window(1, 0.0, rate=1e9) == 0.0
    assert attrs.evolve(policy, delay=0.0).window(1, 0.0, rate=1e9) == 0.0


def test_a_message_right_after_another_does_not_make_a_light_actor_look_loaded() -> None:
    gauge = LoadGauge(horizon=0.1)
    gauge.record(cpu=0.0002, wall=0.5)  # one message after half a second idle
    # The next one came 0.1 ms after the first was handled: that cycle alone is 67 %
    # handling, but it is 0.3 ms of the actor's recent time.
    load = gauge.record(cpu=0.0002, wall=0.0003)
    assert load < 0.01
    assert BatchPolicy(delay=0.01, max_delay=0.03).window(last_size=1, busy=load) == 0.0


def test_steady_load_is_reached_within_a_few_horizons_and_a_long_idle_clears_it() -> None:
    gauge = LoadGauge(horizon=0.1)
    for _ in range(30):  # 0.33 s of 10 ms handlings with 1 ms idle between
        gauge.record(cpu=0.010, wall=0.011)
    assert 0.85 < gauge.load < 0.91
    assert BatchPolicy(delay=0.01, max_delay=0.03).window(1, gauge.load) > 0.02
    gauge.record(cpu=0.0002, wall=2.0)  # then two seconds idle
    assert gauge.load < 0.001


def test_a_gauge_without_a_horizon_is_the_last_cycle() -> None:
    gauge = LoadGauge(horizon=0.0)
    gauge.record(cpu=0.0002, wall=0.5)
    assert gauge.record(cpu=0.0002, wall=0.0004) == pytest.approx(0.5)
    assert gauge.record(cpu=0.0, wall=0.0) == pytest.approx(0.5)  # an empty cycle: unchanged


class Recorder:
    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    async def handle(self, batch: list[int]) -> None:
        self.batches.append(batch)

    def is_idle(self) -> bool:
        return False


async def _run(policy: BatchPolicy, script: list[tuple[float, list[int]]]) -> list[list[int]]:
    """Send each group after its delay; return the batches the actor handled."""
    mailbox: Mailbox[int] = Mailbox(1024)
    recorder = Recorder()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                lambda: run_batch_loop(recorder, mailbox, policy=policy, passivate_after=3600)
            )
            for wait, group in script:
                await trio.sleep(wait)
                for n in group:
                    mailbox.post(n)  # no checkpoint: the group is queued at once
            await trio.sleep(1)
            mailbox.close()
    return recorder.batches


async def test_what_is_queued_is_one_batch_and_a_window_follows_a_large_one(
    autojump_clock: trio.testing.MockClock,
) -> None:
    burst = list(range(20))
    batches = await _run(
        BatchPolicy(max_batch=512, delay=0.01, max_delay=0.01, widen_at=16),
        # 20 queued at once; then 1, and 2 more 5 ms later; then 1 alone 100 ms later
        [(0.0, burst), (0.1, [100]), (0.005, [101, 102]), (0.1, [200])],
    )
    assert batches[0] == burst  # everything already queued, handled together
    # After a batch of >= widen_at, the next waits its window and takes the late pair too.
    assert batches[1] == [100, 101, 102]
    # That batch was small (and the loop's CPU load is negligible): no window, alone.
    assert batches[2] == [200]


async def test_without_a_delay_nothing_waits(autojump_clock: trio.testing.MockClock) -> None:
    batches = await _run(
        BatchPolicy(max_batch=512, delay=0.0, widen_at=16),
        [(0.0, list(range(20))), (0.1, [100]), (0.005, [101, 102])],
    )
    assert batches == [list(range(20)), [100], [101, 102]]


async def test_max_batch_caps_a_batch(autojump_clock: trio.testing.MockClock) -> None:
    batches = await _run(BatchPolicy(max_batch=8), [(0.0, list(range(20)))])
    assert batches == [list(range(8)), list(range(8, 16)), list(range(16, 20))]


async def test_only_a_batch_with_a_message_worth_waiting_for_gets_a_window(
    autojump_clock: trio.testing.MockClock,
) -> None:
    burst = list(range(20))  # loaded by size: the next batch would get its window
    script = [(0.0, burst), (0.1, [100]), (0.005, [101, 102]), (0.1, [200])]
    waits = BatchPolicy(max_batch=512, delay=0.01, max_delay=0.01, widen_at=16)
    assert (await _run(attrs.evolve(waits, widen_for=lambda n: n >= 100), script))[1] == [
        100,
        101,
        102,
    ]
    # Nothing in [100] is worth a window: handled at once, the late pair on its own.
    batches = await _run(attrs.evolve(waits, widen_for=lambda n: n < 100), script)
    assert batches[1:3] == [[100], [101, 102]]


async def test_min_interval_paces_batches(autojump_clock: trio.testing.MockClock) -> None:
    batches = await _run(
        BatchPolicy(max_batch=512, delay=0.0, min_interval=0.25),
        # one alone; two more 10 ms and 100 ms later; then one after a quiet second
        [(0.0, [1]), (0.01, [2]), (0.09, [3]), (1.0, [4])],
    )
    # The first is handled at once; the next two wait out the interval together; the
    # last comes after a quiet spell longer than the interval, so it does not wait.
    assert batches == [[1], [2, 3], [4]]


async def test_a_heavy_fanout_waits_for_more_and_a_light_one_does_not(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # One message every 5 ms (200/s) for a second: to 1,000 members that is 200,000
    # deliveries per second, past twice widen_rate, so the window is fully open and
    # messages share batches; to 10 members it is 2,000/s, and each goes alone.
    script = [(0.005, [n]) for n in range(200)]
    policy = BatchPolicy(max_batch=512, delay=0.01, max_delay=0.03, widen_rate=50_000)
    heavy = await _run(attrs.evolve(policy, fanout=lambda: 1000), script)
    light = await _run(attrs.evolve(policy, fanout=lambda: 10), script)
    assert [n for batch in heavy for n in batch] == list(range(200))
    assert light == [[n] for n in range(200)]
    # Once the gauge has seen the rate (a few load horizons), a 30 ms window takes ~6.
    assert all(len(batch) >= 5 for batch in heavy[10:-1])
    assert len(heavy) < 50
    # Only messages worth a window count toward the rate.
    none_worth = attrs.evolve(policy, fanout=lambda: 1000, widen_for=lambda n: False)
    assert await _run(none_worth, script) == [[n] for n in range(200)]
