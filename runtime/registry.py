"""The registry: one live actor per key, spawned on demand under a supervisor.

Keys are ``<kind>:<id>`` (``session:doc-1``, ``presence:doc-1``,
``inbox:alice``). An actor's mailbox lives in the registry's cell, not in the
actor, so a crashed actor's successor keeps reading the same mailbox: queued
messages survive a restart. The cell is forgotten when the actor is gone for
good (passivated, stopped, or its supervisor gave up), and the next message
for the key spawns a fresh actor that rehydrates from the store.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Generic, Protocol, TypeVar

import attrs
import trio

from runtime.mailbox import MailboxClosed
from runtime.supervisor import Restart, Supervisor

M = TypeVar("M")


class SpawnFailed(Exception):
    """An actor could not start (for example, its store was unreachable while rehydrating)."""


class RunnableActor(Protocol):
    async def run(self, *, task_status: trio.TaskStatus[None] = ...) -> None: ...


class HasDepth(Protocol):
    @property
    def depth(self) -> int: ...

    def close(self) -> None: ...


@attrs.frozen(eq=False)
class ActorKind(Generic[M]):
    """A kind of actor: how to make its mailbox and a fresh actor reading it."""

    name: str
    make_mailbox: Callable[[], M]
    make_actor: Callable[[str, M], RunnableActor]  # (id, mailbox) -> actor
    supervisor: Supervisor
    # Awaited with the id before a crashed actor's successor runs: whoever relied on
    # the lost state can be told (a session re-tracks its members in a fresh presence).
    on_restart: Callable[[str], Awaitable[None]] | None = None
    # Called with the id and what is left in the mailbox once the actor is gone for
    # good (its supervisor gave up, or it was cancelled at shutdown): nobody will read
    # those messages, so their senders can be answered. Must not block.
    on_orphaned: Callable[[str, list[Any]], None] | None = None


@attrs.define(eq=False)
class _Cell:
    key: str
    mailbox: Any
    ready: trio.Event = attrs.field(factory=trio.Event)
    error: BaseException | None = None


class ActorRegistry:
    """Gets or spawns the one live actor for a key."""

    def __init__(self) -> None:
        self._cells: dict[str, _Cell] = {}
        self._kinds: dict[str, ActorKind[Any]] = {}
        self._emptied = trio.Event()

    def add_kind(self, kind: ActorKind[Any]) -> None:
        self._kinds[kind.name] = kind

    def lookup(self, kind: ActorKind[M], actor_id: str) -> M | None:
        """The live actor's mailbox, or None; never spawns."""
        cell = self._cells.get(f"{kind.name}:{actor_id}")
        if cell is None or not cell.ready.is_set() or cell.error is not None:
            return None
        return cell.mailbox  # type: ignore[no-any-return]

    async def get(self, kind: ActorKind[M], actor_id: str) -> M:
        """The live actor's mailbox, spawning the actor first if needed.

        Concurrent callers for the same key wait for one spawn. If the spawn
        fails (e.g. the store is down during rehydration) every waiter gets
        the error and the next call tries again.
        """
        key = f"{kind.name}:{actor_id}"
        cell = self._cells.get(key)
        if cell is not None and cell.ready.is_set():  # the hot path: no checkpoint
            if cell.error is not None:
                raise cell.error
            return cell.mailbox  # type: ignore[no-any-return]
        if cell is None:
            cell = _Cell(key=key, mailbox=kind.make_mailbox())
            self._cells[key] = cell
            starts = 0

            async def run(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
                nonlocal starts
                starts += 1
                if starts > 1 and kind.on_restart is not None:  # the supervisor restarts it
                    await kind.on_restart(actor_id)
                await kind.make_actor(actor_id, cell.mailbox).run(task_status=task_status)

            try:
                await kind.supervisor.start_child(
                    key,
                    run,
                    kind=kind.name,
                    restart=Restart.TRANSIENT,
                    depth=lambda: cell.mailbox.depth,
                    on_exit=lambda: self._gone(kind, actor_id, cell),
                )
            except* Exception as group:
                cell.error = SpawnFailed(f"{key}: {group.exceptions[0]!r}")
                self._forget(cell)
                raise cell.error from group
            finally:
                if cell.error is None and key not in self._cells:
                    cell.error = SpawnFailed(f"{key}: cancelled while starting")
                cell.ready.set()
        else:
            await cell.ready.wait()
            if cell.error is not None:
                raise cell.error
        return cell.mailbox  # type: ignore[no-any-return]

    async def send(self, kind: ActorKind[Any], actor_id: str, message: Any) -> None:
        """Deliver to a Mailbox actor, spawning it if needed and waiting for room.

        If the actor passivated between lookup and send, the message goes to
        its successor. Cancellation: the message was not enqueued.
        """
        for _ in range(3):
            mailbox = await self.get(kind, actor_id)
            try:
                await mailbox.send(message)
                return
            except MailboxClosed:
                continue
        raise MailboxClosed(f"{kind.name}:{actor_id} kept closing")

    def keys(self) -> list[str]:
        return list(self._cells)

    def count(self, kind: ActorKind[Any]) -> int:
        prefix = kind.name + ":"
        return sum(1 for key in self._cells if key.startswith(prefix))

    def close_all(self) -> None:
        """Shutdown: close every mailbox so actors drain what is queued and stop."""
        for cell in list(self._cells.values()):
            cell.mailbox.close()

    async def wait_empty(self) -> None:
        """Wait until no actor is live (after :meth:`close_all`, when all have drained)."""
        while self._cells:
            self._emptied = trio.Event()
            await self._emptied.wait()

    def _gone(self, kind: ActorKind[Any], actor_id: str, cell: _Cell) -> None:
        self._forget(cell)
        if kind.on_orphaned is None:
            return
        # Closed first, so nothing slips in after the drain: a sender then gets
        # MailboxClosed and the registry spawns a fresh actor for it.
        cell.mailbox.close()
        left: list[Any] = []
        while True:
            try:
                left.append(cell.mailbox.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel):
                break
        if left:
            kind.on_orphaned(actor_id, left)

    def _forget(self, cell: _Cell) -> None:
        if self._cells.get(cell.key) is cell:
            del self._cells[cell.key]
            if not self._cells:
                self._emptied.set()
