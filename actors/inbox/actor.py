"""InboxActor: one user's notifications (``inbox:<user>``), grouped, stored, pushed live.

The actor is the only writer of its user's inbox on this node, so grouping (grow
the open group, or add a new one) never races. A batch of queued occurrences is
grouped here and stored in one statement (``add_batch``; on a node, through the
:class:`~actors.inbox.writer.InboxWriter`, which stores many inboxes' batches in one). Each
notification is stored first, then pushed to every connected socket of the user (all tabs) and
handed to webhooks. A notification about a session the user can no longer read
is dropped.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

import attrs
import trio

from actors.inbox.state import Incoming, group_key, new_notification
from runtime.actor import BatchPolicy, Fail, run_batch_loop
from runtime.gateways.notifications import NotificationRecord, Written, merged_actors
from runtime.mailbox import Mailbox

logger = logging.getLogger(__name__)


@attrs.frozen(eq=False)
class Deliver:
    incoming: Incoming
    # Gets the stored notification, None if dropped, or the exception that stopped it.
    reply: trio.MemorySendChannel[NotificationRecord | Exception | None] | None = None


InboxMessage = Deliver | Fail


class InboxStore(Protocol):
    """Where an inbox stores its batches (``NotificationStore``, or the node's writer)."""

    async def add_batch(
        self, user_id: str, records: Sequence[NotificationRecord], since: float | None, at: float
    ) -> Written: ...


@attrs.frozen
class InboxConfig:
    group_window: float = 300.0
    passivate_after: float = 300.0
    # Seconds between one inbox's writes while occurrences keep coming (the first
    # after a quiet spell is written at once): a busy thread's occurrences meanwhile
    # become one row instead of a rewrite each.
    pace: float = 0.25


class InboxActor:
    def __init__(
        self,
        user_id: str,
        mailbox: Mailbox[InboxMessage],
        *,
        store: InboxStore,
        may_read: Callable[[str, str], Awaitable[bool]],  # (user, session) -> allowed
        pushed: Callable[[NotificationRecord, int], Awaitable[None]],  # (record, unread)
        config: InboxConfig,
        clock: Callable[[], float],
    ) -> None:
        self.user_id = user_id
        self._mailbox = mailbox
        self._store = store
        self._may_read = may_read
        self._pushed = pushed
        self._config = config
        self._clock = clock

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await run_batch_loop(
            self,
            self._mailbox,
            policy=BatchPolicy(max_batch=256, min_interval=self._config.pace),
            passivate_after=self._config.passivate_after,
        )

    def is_idle(self) -> bool:
        return True  # nothing is kept between messages

    async def handle(self, batch: list[InboxMessage]) -> None:
        # Every occurrence of one group in the batch becomes one record (count = n), and
        # the whole batch is one store write: a busy thread costs each reader's inbox one
        # statement per batch, however many comments it holds.
        now = self._clock()
        readable: dict[str, bool] = {}
        runs: dict[object, list[Deliver]] = {}
        for message in batch:
            assert isinstance(message, Deliver)
            sid = message.incoming.session_id
            if sid is not None and sid not in readable:
                readable[sid] = await self._may_read(self.user_id, sid)
            if sid is not None and not readable[sid]:
                if message.reply is not None:
                    message.reply.send_nowait(None)
                continue
            key = group_key(message.incoming)
            runs.setdefault(object() if key is None else key, []).append(message)
        if not runs:
            return
        fresh = [self._occurrences(run, now) for run in runs.values()]
        window = self._config.group_window
        try:
            stored, unread = await self._store.add_batch(
                self.user_id, fresh, now - window if window > 0 else None, now
            )
        except Exception as exc:
            for run in runs.values():
                for message in run:
                    if message.reply is not None:
                        message.reply.send_nowait(exc)
            if any(m.reply is None for run in runs.values() for m in run):
                raise
            return
        for run, record in zip(runs.values(), stored, strict=True):
            await self._pushed(record, unread)
            for message in run:
                if message.reply is not None:
                    message.reply.send_nowait(record)

    def _occurrences(self, run: list[Deliver], now: float) -> NotificationRecord:
        """One new record standing for every occurrence of a group in the batch."""
        last = run[-1].incoming
        actors: tuple[str, ...] = ()
        for message in run:
            actors = merged_actors(actors, message.incoming.actor_id)
        return new_notification(
            self.user_id, last, f"nt_{secrets.token_hex(8)}", now, count=len(run), actor_ids=actors
        )


__all__ = ["Deliver", "InboxActor", "InboxConfig", "InboxMessage", "InboxStore"]
