"""OTP-style supervisors on trio nurseries.

A :class:`Supervisor` owns a nursery; every child task lives in it, so nothing
runs fire-and-forget. Supervision is configuration: a :class:`RestartPolicy`
(intensity and backoff) and, per child, a :class:`Restart` type. The strategy
is one-for-one: a crashed child is restarted alone, after an exponential
backoff, while its siblings keep running.

Intensity is counted per child: more than ``max_restarts`` crashes of one
child within ``period`` seconds means restarting it does not help, so the
supervisor escalates — it raises :class:`RestartIntensityExceeded`, which
cancels its other children and reaches its own parent, which restarts the
whole subtree under its policy (or, at the root, stops the node). Counting per
child keeps one poison session from being amplified by unrelated crashes.

Only this module catches broad exceptions, with ``except*``; ``trio.Cancelled``
always propagates.
"""

from __future__ import annotations

import enum
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio

from runtime import metrics
from runtime.observability.logs import scrub

logger = logging.getLogger(__name__)

ChildFn = Callable[..., Awaitable[None]]  # async def fn(*, task_status=...) -> None


class Restart(enum.StrEnum):
    PERMANENT = "permanent"  # always restarted, even after a normal exit
    TRANSIENT = "transient"  # restarted only after a crash (actors: a passivation is normal)
    TEMPORARY = "temporary"  # never restarted


@attrs.frozen
class RestartPolicy:
    max_restarts: int = 5
    period: float = 10.0
    backoff_initial: float = 0.05
    backoff_max: float = 5.0

    def backoff(self, recent_restarts: int) -> float:
        exponent: int = max(0, recent_restarts - 1)
        return float(min(self.backoff_max, self.backoff_initial * 2.0**exponent))


class RestartIntensityExceeded(Exception):
    def __init__(self, supervisor: str, child: str, restarts: int, period: float) -> None:
        super().__init__(
            f"{supervisor}: child {child!r} crashed {restarts} times within {period}s; escalating"
        )
        self.child = child


@attrs.define
class Child:
    """A supervised child as /status sees it."""

    name: str
    kind: str
    restart: Restart
    state: str = "starting"  # starting | running | backoff | stopped | failed
    restarts: int = 0
    last_failure: str | None = None
    last_failure_at: float | None = None
    depth: Callable[[], int] | None = None  # mailbox depth, for actors
    supervisor: Supervisor | None = None  # set when the child is itself a supervisor
    cancel_scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind,
            "restart": str(self.restart),
            "state": self.state,
            "restarts": self.restarts,
        }
        if self.depth is not None:
            out["mailbox"] = self.depth()
        if self.last_failure is not None:
            out["lastFailure"] = self.last_failure
            out["lastFailureAt"] = self.last_failure_at
        if self.supervisor is not None:
            out["supervisor"] = self.supervisor.status()
        return out


def describe_failure(exc: BaseException) -> str:
    """Type and message of a failure, unwrapping single-exception groups (no traceback)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    text = scrub(str(exc))  # /status and logs show it: no credentials
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__


class _StartedProbe:
    """Passes ``started()`` through and marks the child running, so a crash
    before it can be told apart from a crash after it."""

    def __init__(self, inner: trio.TaskStatus[Any], child: Child) -> None:
        self._inner = inner
        self._child = child

    def started(self, value: Any = None) -> None:
        self._child.state = "running"
        self._inner.started(value)


class Supervisor:
    """Starts children in its nursery and restarts them one-for-one.

    Use ``await nursery.start(supervisor.run)``; then ``await start_child(...)``.
    """

    def __init__(self, name: str, policy: RestartPolicy | None = None) -> None:
        self.name = name
        self.policy = policy or RestartPolicy()
        self._nursery: trio.Nursery | None = None
        self._children: dict[str, Child] = {}
        self.total_restarts = 0
        # Children leave the table when they stop; their last failures stay visible here.
        self.recent_failures: deque[dict[str, Any]] = deque(maxlen=20)

    async def run(
        self, *, task_status: trio.TaskStatus[Supervisor] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run until cancelled, or raise RestartIntensityExceeded when a child keeps crashing.

        Cancellation cancels every child. When run again (restarted by a parent)
        it starts empty: dynamic children are spawned again on demand.
        """
        self._children = {}
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started(self)
                await trio.sleep_forever()
        finally:
            self._nursery = None

    async def start_child(
        self,
        name: str,
        fn: ChildFn,
        *,
        kind: str,
        restart: Restart = Restart.PERMANENT,
        depth: Callable[[], int] | None = None,
        supervisor: Supervisor | None = None,
        on_exit: Callable[[], None] | None = None,
    ) -> Child:
        """Start ``fn`` and wait until it calls ``task_status.started()``.

        A failure before the first ``started()`` propagates to the caller and
        the child is not restarted: the caller learns that the spawn failed.
        ``on_exit`` runs once when the child is gone for good, whatever the reason.
        """
        if self._nursery is None:
            raise RuntimeError(f"supervisor {self.name} is not running")
        if name in self._children:
            raise RuntimeError(f"{self.name} already has a child named {name!r}")
        child = Child(name=name, kind=kind, restart=restart, depth=depth, supervisor=supervisor)
        self._children[name] = child
        try:
            await self._nursery.start(self._supervise, child, fn, on_exit)
        except BaseException:
            self._children.pop(name, None)
            raise
        return child

    def stop_child(self, name: str) -> None:
        """Cancel a child; it is not restarted."""
        child = self._children.get(name)
        if child is not None:
            child.restart = Restart.TEMPORARY
            child.cancel_scope.cancel()

    def children(self) -> list[Child]:
        return list(self._children.values())

    def status(self, limit: int = 50) -> dict[str, Any]:
        """This subtree for /status: the ``limit`` most interesting children
        (most restarted, then deepest mailbox) of each supervisor, and counts."""
        children = sorted(
            self._children.values(),
            key=lambda c: (c.restarts, c.depth() if c.depth else 0),
            reverse=True,
        )
        states: dict[str, int] = {}
        for child in self._children.values():
            states[child.state] = states.get(child.state, 0) + 1
        return {
            "name": self.name,
            "strategy": "one_for_one",
            "maxRestarts": self.policy.max_restarts,
            "period": self.policy.period,
            "restarts": self.total_restarts,
            "childCount": len(self._children),
            "childStates": states,
            "recentFailures": list(self.recent_failures),
            "children": [child.status() for child in children[:limit]],
        }

    async def _supervise(
        self,
        child: Child,
        fn: ChildFn,
        on_exit: Callable[[], None] | None,
        task_status: trio.TaskStatus[None],
    ) -> None:
        try:
            with child.cancel_scope:  # stop_child() cancels the child and its backoff alike
                await self._run_with_restarts(child, fn, task_status)
            if child.cancel_scope.cancelled_caught:
                child.state = "stopped"
        finally:
            if self._children.get(child.name) is child:
                del self._children[child.name]
            if on_exit is not None:
                on_exit()

    async def _run_with_restarts(
        self, child: Child, fn: ChildFn, task_status: trio.TaskStatus[None]
    ) -> None:
        recent: deque[float] = deque()
        first = True
        while True:
            crashed = False
            try:
                if first:
                    child.state = "starting"
                    await fn(task_status=_StartedProbe(task_status, child))
                else:
                    child.state = "running"
                    await fn()
            except* Exception as group:
                if first and child.state == "starting":
                    raise  # never started: the spawner gets the error
                crashed = True
                self._record_failure(child, group)
            first = False
            if not crashed and child.restart is not Restart.PERMANENT:
                child.state = "stopped"
                return
            if crashed and child.restart is Restart.TEMPORARY:
                child.state = "failed"
                return
            now = trio.current_time()
            recent.append(now)
            while recent and recent[0] < now - self.policy.period:
                recent.popleft()
            if len(recent) > self.policy.max_restarts:
                child.state = "failed"
                raise RestartIntensityExceeded(
                    self.name, child.name, len(recent), self.policy.period
                )
            child.state = "backoff"
            await trio.sleep(self.policy.backoff(len(recent)))
            child.restarts += 1
            self.total_restarts += 1
            logger.info("%s: restarting %s (restart %s)", self.name, child.name, child.restarts)

    def _record_failure(self, child: Child, group: BaseExceptionGroup[Exception]) -> None:
        child.last_failure = describe_failure(group)
        metrics.actor_failures.bind(child.kind).inc()  # kinds are few: session, presence, ...
        child.last_failure_at = trio.current_time()
        self.recent_failures.append(
            {
                "name": child.name,
                "kind": child.kind,
                "failure": child.last_failure,
                "at": child.last_failure_at,
            }
        )
        logger.error(
            "%s: child %s crashed: %s", self.name, child.name, child.last_failure, exc_info=group
        )
