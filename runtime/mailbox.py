"""Bounded actor mailboxes, each with its full-policy stated where it is made.

Two kinds:

* :class:`Mailbox` — a bounded FIFO over a trio memory channel. Senders choose
  the policy at the call site: :meth:`Mailbox.send` waits for room
  (backpressure; wrap it in ``trio.move_on_after`` where waiting has a limit),
  :meth:`Mailbox.post` raises :class:`MailboxFull` at once.
* :class:`CoalescingMailbox` — one slot per key; a message for a key that is
  already queued is merged into the queued one (last one wins). Memory is
  bounded by the number of keys, and a sender never waits. Presence uses it.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

import attrs
import trio

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)


class MailboxFull(Exception):
    """A non-blocking post found the mailbox full."""


class MailboxClosed(Exception):
    """The actor behind the mailbox has stopped (passivated or shut down)."""


@attrs.frozen
class MailboxStats:
    depth: int
    capacity: int


class Mailbox(Generic[T]):
    """A bounded FIFO mailbox; one receiving actor, any number of senders."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._send, self._receive = trio.open_memory_channel[T](capacity)

    def post(self, message: T) -> None:
        """Enqueue without waiting. Raises MailboxFull or MailboxClosed."""
        try:
            self._send.send_nowait(message)
        except trio.WouldBlock:
            raise MailboxFull from None
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise MailboxClosed from None

    async def send(self, message: T) -> None:
        """Enqueue, waiting for room (backpressure). Raises MailboxClosed.

        Cancellation: if cancelled while waiting, the message was not enqueued.
        """
        try:
            await self._send.send(message)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise MailboxClosed from None

    async def receive(self) -> T:
        """The next message. Raises trio.EndOfChannel once closed and drained."""
        return await self._receive.receive()

    def receive_nowait(self) -> T:
        """Raises trio.WouldBlock when empty, trio.EndOfChannel once closed and drained."""
        return self._receive.receive_nowait()

    def close(self) -> None:
        """Stop accepting messages; those already queued can still be received."""
        self._send.close()

    def close_receiving(self) -> None:
        """Refuse everything from now on: queued messages are dropped, senders fail."""
        self._receive.close()

    @property
    def depth(self) -> int:
        return self._send.statistics().current_buffer_used

    def stats(self) -> MailboxStats:
        return MailboxStats(depth=self.depth, capacity=self.capacity)


class CoalescingMailbox(Generic[K, T]):
    """One queued message per key; ``merge(old, new)`` combines a second one into the first.

    ``merge`` may return None to say the two cancel out (the key leaves the queue).
    Order between keys is the order of their first queued message.
    """

    def __init__(self, merge: Callable[[T, T], T | None]) -> None:
        self._merge = merge
        self._queued: dict[K, T] = {}
        self._wakeup = trio.Event()
        self._closed = False

    def post(self, key: K, message: T) -> None:
        """Queue or merge ``message``; never waits. Raises MailboxClosed."""
        if self._closed:
            raise MailboxClosed
        old = self._queued.pop(key, None)
        if old is None:
            self._queued[key] = message
        else:
            merged = self._merge(old, message)
            if merged is not None:
                # Re-inserting moves the key to the end: its newest message is newest.
                self._queued[key] = merged
        self._wakeup.set()

    async def receive_all(self) -> list[tuple[K, T]]:
        """Wait until something is queued, then take everything queued.

        Raises trio.EndOfChannel once closed and drained.
        """
        if self._queued:
            await trio.lowlevel.checkpoint()  # a receive is always a checkpoint
        while not self._queued:
            if self._closed:
                raise trio.EndOfChannel
            self._wakeup = trio.Event()
            await self._wakeup.wait()
        taken = list(self._queued.items())
        self._queued.clear()
        return taken

    def close(self) -> None:
        self._closed = True
        self._wakeup.set()

    @property
    def depth(self) -> int:
        return len(self._queued)
