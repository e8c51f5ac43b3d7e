"""PresenceActor: who is in one session, with per-connection state merged per user.

Its mailbox coalesces per connection (last update wins) and never blocks a
sender, so a cursor storm costs memory bounded by the number of connections.
Changes go to the session actor, which broadcasts them in its stream, at most
once per ``flush_interval``: under load many updates share one broadcast;
when quiet, an update goes out at once.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio

from actors.messages import (
    PresenceChanged,
    PresenceMessage,
    PresenceSnapshot,
    SetPresence,
    Sync,
    Track,
)
from actors.presence.state import Changes, PresenceState, coalesce
from runtime import metrics
from runtime.actor import Fail, InjectedFailure
from runtime.mailbox import CoalescingMailbox
from runtime.observability.logs import bind_actor


@attrs.frozen
class PresenceConfig:
    away_after: float = 60.0
    flush_interval: float = 0.02
    passivate_after: float = 300.0


class PresenceActor:
    def __init__(
        self,
        session_id: str,
        mailbox: CoalescingMailbox[str, PresenceMessage],
        *,
        publish: Callable[[PresenceChanged | PresenceSnapshot], Awaitable[None]],
        config: PresenceConfig,
    ) -> None:
        self.session_id = session_id
        self._mailbox = mailbox
        self._publish = publish
        self._config = config
        self._state = PresenceState(away_after=config.away_after)
        self._synced = False  # a Sync was applied since the last publish: send a snapshot

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Apply coalesced updates and publish changes until passivation or shutdown.

        A restarted presence actor starts empty. The registry has told the
        session actor (``PresenceRestarted``), which answers with a ``Sync`` of
        its members; until it arrives, updates of connections this actor does
        not know are dropped (a crash here is rare and never touches the event
        stream). Once applied, the ``PresenceSnapshot`` makes the session's
        roster, and so every member's view, exact again.
        """
        bind_actor(self.session_id)
        task_status.started()
        tick = max(self._config.away_after / 4, 0.05)
        idle_since = trio.current_time()
        last_flush = -math.inf
        while True:
            batch: list[tuple[str, PresenceMessage]] | None = None
            with trio.move_on_after(tick):
                try:
                    batch = await self._mailbox.receive_all()
                except trio.EndOfChannel:
                    return
            now = trio.current_time()
            if batch is None:
                await self._send(self._state.mark_away(now))
                if self._state.connection_count() == 0 and self._mailbox.depth == 0:
                    if now - idle_since >= self._config.passivate_after:
                        self._mailbox.close()
                        return
                continue
            idle_since = now
            await self._send(self._apply(batch, now))
            # Rate-limit broadcasts: what arrives meanwhile is coalesced in the mailbox.
            wait = last_flush + self._config.flush_interval - now
            last_flush = max(now, last_flush + self._config.flush_interval)
            if wait > 0:
                await trio.sleep(wait)

    def _apply(self, batch: list[tuple[str, PresenceMessage]], now: float) -> Changes:
        for i, (_, message) in enumerate(batch):
            if isinstance(message, Fail):
                # As in a session: what was queued besides the Fail waits for the successor.
                for conn_id, other in batch[:i] + batch[i + 1 :]:
                    self._mailbox.post(conn_id, other)
                raise InjectedFailure(message.reason)
        return coalesce(self._step(conn_id, message, now) for conn_id, message in batch)

    def _step(self, conn_id: str, message: PresenceMessage, now: float) -> Changes:
        if isinstance(message, Track):
            return self._state.track(conn_id, message.user_id, message.name, message.state, now)
        if isinstance(message, SetPresence):
            changes = self._state.update(conn_id, message.state, now)
            if message.at is not None:  # posted until applied (coalescing included)
                metrics.PRESENCE.observe(now - message.at)
            return changes
        if isinstance(message, Sync):
            self._synced = True
            return self._state.sync(
                ((c, t.user_id, t.name, t.state) for c, t in message.members.items()), now
            )
        assert not isinstance(message, Fail)  # handled for the whole batch in _apply
        return self._state.untrack(conn_id)

    async def _send(self, changes: Changes) -> None:
        if self._synced:
            # Everyone, after the batch: it subsumes the batch's changes, and tells the
            # session who is NOT present (a leave this actor never saw).
            self._synced = False
            await self._publish(PresenceSnapshot(self._state.participants()))
            return
        if not changes:
            return
        await self._publish(
            PresenceChanged(
                joined=[self._state.participant(u) for u in changes.joined],
                left=list(changes.left),
                updated=[self._state.participant(u) for u in changes.updated],
            )
        )

    def status(self) -> dict[str, Any]:
        return {"users": len(self._state), "connections": self._state.connection_count()}
