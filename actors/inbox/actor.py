"""InboxActor: one user's notifications (``inbox:<user>``), grouped, stored, pushed live.

The actor is the only writer of its user's inbox on this node, so grouping (read
the open group, then bump it or add a new one) never races. Each notification is
stored first, then pushed to every connected socket of the user (all tabs) and
handed to webhooks. A notification about a session the user can no longer read
is dropped.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable

import attrs
import trio

from actors.inbox.state import Incoming, group_key, groups_with, new_notification
from runtime.actor import BatchPolicy, Fail, run_batch_loop
from runtime.gateways.notifications import NotificationRecord, NotificationStore
from runtime.mailbox import Mailbox

logger = logging.getLogger(__name__)


@attrs.frozen(eq=False)
class Deliver:
    incoming: Incoming
    # Gets the stored notification, None if dropped, or the exception that stopped it.
    reply: trio.MemorySendChannel[NotificationRecord | Exception | None] | None = None


InboxMessage = Deliver | Fail


@attrs.frozen
class InboxConfig:
    group_window: float = 300.0
    passivate_after: float = 300.0


class InboxActor:
    def __init__(
        self,
        user_id: str,
        mailbox: Mailbox[InboxMessage],
        *,
        store: NotificationStore,
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
            policy=BatchPolicy(max_batch=64),
            passivate_after=self._config.passivate_after,
        )

    def is_idle(self) -> bool:
        return True  # nothing is kept between messages

    async def handle(self, batch: list[InboxMessage]) -> None:
        # Occurrences of one group queued together are stored in one step (count += n):
        # a busy thread costs its readers' inboxes one write per batch, not per comment.
        runs: list[tuple[Deliver, int]] = []
        for message in batch:
            assert isinstance(message, Deliver)
            last = runs[-1][0] if runs else None
            if (
                last is not None
                and last.reply is None
                and message.reply is None
                and group_key(message.incoming) is not None
                and group_key(message.incoming) == group_key(last.incoming)
            ):
                runs[-1] = (message, runs[-1][1] + 1)
            else:
                runs.append((message, 1))
        for message, times in runs:
            try:
                record = await self._deliver(message.incoming, times)
            except Exception as exc:
                if message.reply is None:
                    raise
                message.reply.send_nowait(exc)
                continue
            if message.reply is not None:
                message.reply.send_nowait(record)

    async def _deliver(self, incoming: Incoming, times: int = 1) -> NotificationRecord | None:
        if incoming.session_id is not None and not await self._may_read(
            incoming.user_id, incoming.session_id
        ):
            return None
        now = self._clock()
        key = group_key(incoming)
        existing = None
        if key is not None and self._config.group_window > 0:
            existing = await self._store.find_group(
                incoming.user_id, key, now - self._config.group_window
            )
        if existing is not None and groups_with(existing, now, self._config.group_window):
            record = await self._store.bump(
                existing.id, incoming.actor_id, incoming.data, now, times=times
            )
        else:
            fresh = new_notification(incoming, f"nt_{secrets.token_hex(8)}", now)
            record = await self._store.insert(attrs.evolve(fresh, count=times))
        unread = await self._store.unread_count(incoming.user_id)
        await self._pushed(record, unread)
        return record


__all__ = ["Deliver", "InboxActor", "InboxConfig", "InboxMessage"]
