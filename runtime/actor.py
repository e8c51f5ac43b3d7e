"""The receive loop shared by mailbox actors: batching, passivation, fault injection.

An actor is a trio task that owns its state and reads one bounded mailbox.
Domain actors (``actors/``) implement :class:`BatchHandler`; :func:`run_batch_loop`
does the rest, so batching and passivation behave the same everywhere.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import attrs
import trio

from runtime.mailbox import Mailbox

T = TypeVar("T")


@attrs.frozen
class Fail:
    """System message: the receiving actor raises :class:`InjectedFailure`.

    Fault injection for tests and chaos drills; only reachable in-process.
    """

    reason: str = "injected failure"


class InjectedFailure(Exception):
    pass


@attrs.frozen
class BatchPolicy:
    """How a mailbox actor groups messages.

    Everything already queued is handled as one batch (up to ``max_batch``),
    so work that piles up while the actor is busy is flushed together. Only
    under load does the actor also wait up to ``delay`` seconds for more:
    wider windows cost latency, so they are used only when they buy throughput.
    Under load means the previous batch held at least ``widen_at`` messages, or
    handling has kept the actor busy for at least ``widen_busy`` of its recent
    time (:class:`LoadGauge`, over ``load_horizon`` seconds): the thread's CPU
    time while handling over the wall time of idle wait + handling. A session
    fanning out to 1,000 members is loaded with one message per batch; CPU time
    (not wall time) keeps a handler that was merely preempted on a busy machine
    from counting as load.

    The window grows with load, from ``delay`` at ``widen_busy`` to
    ``max_delay`` when handling takes all the actor's time: a session that
    spends most of its time fanning out gains most from fewer, fuller frames
    (each frame costs one ``send()`` per member), while a lightly loaded one
    keeps the narrow window or none.

    ``widen_for`` narrows "worth waiting for" to batches holding at least one
    message it accepts (None: any message). A session waits for more events,
    never for more presence changes: those come from its presence actor at most
    once per flush interval, so a window would only delay each of them.

    ``widen_rate`` opens the window by offered work instead of CPU share: the
    messages worth waiting for, each weighing ``fanout()`` (a session: its local
    members), per second of the actor's recent time. From ``widen_rate`` the
    window opens at ``delay`` and grows to ``max_delay`` at twice that rate
    (0: off). The CPU share alone depends on the machine and falls as the window
    widens (fewer frames cost less), so a heavy fan-out settled near the narrow
    end; the offered rate does not move with the window. In cluster mode only this
    node's members count: each node's relay fans out the owner's frames itself.

    ``min_interval`` paces the handler instead: a batch starts at most once per
    ``min_interval`` seconds (trio's clock). A message after a quiet spell is
    handled at once; one that comes sooner waits for the interval to run out,
    gathering whatever else comes meanwhile. For work that costs per batch and
    can wait a little, such as an inbox, where every occurrence of one thread's
    activity in a batch becomes one stored row.
    """

    max_batch: int = 512
    delay: float = 0.0
    max_delay: float = 0.0  # below ``delay``: no growth
    widen_at: int = 16
    widen_busy: float = 0.5  # sessions: the batch_widen_load setting
    widen_for: Callable[[Any], bool] | None = None
    widen_rate: float = 0.0  # sessions: the batch_widen_rate setting
    fanout: Callable[[], int] | None = None
    load_horizon: float = 0.1
    min_interval: float = 0.0

    def window(self, last_size: int, busy: float, rate: float = 0.0) -> float:
        """Seconds to wait for more messages after the queued ones (0: handle now)."""
        by_rate = self.widen_rate > 0 and rate >= self.widen_rate
        loaded = last_size >= self.widen_at or busy >= self.widen_busy or by_rate
        if self.delay <= 0 or not loaded:
            return 0.0
        top = max(self.delay, self.max_delay)
        share = _share(busy, self.widen_busy, 1.0)
        if by_rate:
            share = max(share, _share(rate, self.widen_rate, 2 * self.widen_rate))
        return self.delay + (top - self.delay) * share


def _share(value: float, low: float, high: float) -> float:
    """Where ``value`` lies from ``low`` (0) to ``high`` (1), clamped."""
    return min(1.0, max(0.0, (value - low) / (high - low)))


@attrs.define
class LoadGauge:
    """The share of an actor's recent wall time spent handling (in CPU time).

    (The same average of an amount per wall second serves as the offered-rate
    gauge: ``record(cpu=messages x fanout, wall=...)``.)

    One cycle (idle wait, then handling) alone says little: a message that comes
    just after the previous one was handled makes a cycle of almost no idle time,
    so a light session handling two messages in a row would look fully loaded and
    wait a window before its next message for nothing (rooms of 20 members took
    a p99 of 11-13 ms that way, against 4 ms without windows). So each cycle
    counts in proportion to its wall time: an exponential average with time
    constant ``horizon``, which a long idle resets and a steady load reaches in
    a few horizons.
    """

    horizon: float
    load: float = 0.0

    def record(self, cpu: float, wall: float) -> float:
        """Add a cycle of ``wall`` seconds that took ``cpu`` seconds of handling."""
        if wall > 0:
            weight = 1.0 - math.exp(-wall / self.horizon) if self.horizon > 0 else 1.0
            self.load += weight * (cpu / wall - self.load)
        return self.load

    def reset(self) -> None:
        self.load = 0.0


class BatchHandler(Protocol[T]):
    async def handle(self, batch: list[T]) -> None: ...

    def is_idle(self) -> bool:
        """True when the actor may passivate (no members, nothing pending)."""
        ...


async def run_batch_loop(
    handler: BatchHandler[T],
    mailbox: Mailbox[Any],
    *,
    policy: BatchPolicy,
    passivate_after: float,
    on_lost: Callable[[list[Any]], None] | None = None,
) -> None:
    """Receive and handle batches until passivation or shutdown.

    Returns normally when the actor passivates (idle for ``passivate_after``
    seconds with an empty mailbox: the mailbox is closed in the same step, so
    no message can slip in) or when the mailbox was closed for shutdown and
    has been drained. Cancellation propagates; a message being handled when
    cancelled is lost with the actor. Messages taken from the mailbox but not
    yet handed to ``handle`` when the loop is cancelled (while it waits to widen
    a batch) go to ``on_lost``, which must not block, so the actor can answer
    them; what ``handle`` was given is the handler's own business.
    """
    last_size = 0
    last_started = -math.inf  # trio's clock, for min_interval
    gauge = LoadGauge(policy.load_horizon)
    # Deliveries offered per second (widen_rate), on trio's clock: an amount per
    # time, not a CPU share, so MockClock tests see it deterministically.
    rate = LoadGauge(policy.load_horizon)
    fanout = policy.fanout if policy.widen_rate > 0 else None
    rate_since = trio.current_time()
    # Both real clocks, so the ratio means something under a MockClock too (where it is
    # still real-time dependent: the test kit turns the delay off for determinism).
    clock = time.monotonic
    cpu = time.thread_time
    idle_since = clock()
    while True:
        first: Any = None
        with trio.move_on_after(passivate_after):
            try:
                first = await mailbox.receive()
            except trio.EndOfChannel:
                return  # closed for shutdown and drained
        if first is None:
            if handler.is_idle() and mailbox.depth == 0:
                mailbox.close()
                return
            gauge.reset()
            rate.reset()
            idle_since = clock()
            rate_since = trio.current_time()
            continue
        idle = clock() - idle_since
        batch = [first]
        _drain_into(batch, mailbox, policy.max_batch)
        window = policy.window(last_size, gauge.load, rate.load)
        if window > 0 and policy.widen_for is not None and not any(map(policy.widen_for, batch)):
            window = 0.0
        if policy.min_interval > 0:
            window = max(window, last_started + policy.min_interval - trio.current_time())
        if window > 0 and len(batch) < policy.max_batch:
            try:
                with trio.move_on_after(window):
                    while len(batch) < policy.max_batch and not isinstance(batch[-1], Fail):
                        try:
                            batch.append(await mailbox.receive())
                        except trio.EndOfChannel:
                            break
                        _drain_into(batch, mailbox, policy.max_batch)
            except BaseException:
                if on_lost is not None:
                    on_lost(batch)
                raise
        last_size = len(batch)
        for i, message in enumerate(batch):
            if isinstance(message, Fail):
                if i:
                    await handler.handle(batch[:i])
                raise InjectedFailure(message.reason)
        started = clock()
        cpu_started = cpu()
        last_started = trio.current_time()
        await handler.handle(batch)
        idle_since = clock()
        gauge.record(cpu() - cpu_started, idle + (idle_since - started))
        if fanout is not None:
            worth = len(batch) if policy.widen_for is None else sum(map(policy.widen_for, batch))
            now = trio.current_time()
            rate.record(worth * fanout(), now - rate_since)
            rate_since = now


def _drain_into(batch: list[Any], mailbox: Mailbox[Any], limit: int) -> None:
    # A Fail ends the batch, so what was queued behind it waits for the successor.
    while len(batch) < limit and not isinstance(batch[-1], Fail):
        try:
            batch.append(mailbox.receive_nowait())
        except (trio.WouldBlock, trio.EndOfChannel):
            return
