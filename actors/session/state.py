"""A session's ordered event sequence and retention window, as a pure structure.

The session actor assigns every durable event the next ``seq`` here and keeps
the newest ones, already encoded, so resumes are served from memory without
re-encoding. No trio, no I/O.

Ephemeral events (``durable: false``, e.g. cursor moves) take no seq of their
own: they carry the seq they follow and ``"ephemeral": true``, are delivered
live in stream order, and are never retained or replayed. So the durable log
is contiguous in memory and in the store alike, and a crash can never hand a
seq that clients already saw to a different event.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import attrs

from runtime.gateways.store import StoredEvent
from runtime.protocol import messages as wire
from runtime.protocol.codec import encode

JSON = Any


@attrs.frozen(slots=True)
class RetainedEvent:
    seq: int
    encoded: bytes  # the `event` message, encoded once
    stored: StoredEvent | None  # None for ephemeral events: never retained or persisted


@attrs.frozen
class Replay:
    """How to bring a joining client from ``since`` to now."""

    from_memory: list[RetainedEvent]
    store_after: int | None = None  # read from the store: seq > store_after ...
    store_until: int | None = None  # ... up to and including this seq
    reset: bool = False  # some requested events are gone: the client must reload


@attrs.define
class SessionLog:
    """Sequence numbers and the in-memory retention ring of one session."""

    session_id: str
    seq: int = 0  # last assigned
    first_retained: int = 1  # lowest seq still retained anywhere (memory or store)
    memory_limit: int = 1000
    _recent: deque[RetainedEvent] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._recent = deque(maxlen=self.memory_limit)

    def append(
        self, name: str, data: JSON, user_id: str, ts: float, durable: bool, sensitive: bool = False
    ) -> RetainedEvent:
        """Assign the next seq to a durable event; place an ephemeral one after the current seq."""
        if not durable:
            message = wire.event(self.session_id, self.seq, name, data, user_id, ts)
            message["ephemeral"] = True
            return RetainedEvent(self.seq, encode(message), None)
        self.seq += 1
        seq = self.seq
        encoded = encode(wire.event(self.session_id, seq, name, data, user_id, ts))
        stored = StoredEvent(self.session_id, seq, name, data, user_id, ts, sensitive)
        event = RetainedEvent(seq, encoded, stored)
        self._recent.append(event)
        return event

    def replay(self, since: int | None, *, has_store: bool) -> Replay:
        """Plan the catch-up for a client that has seen everything up to ``since``."""
        if since is None or since == self.seq:
            return Replay([])
        if since > self.seq:
            return Replay([], reset=True)  # the client is ahead of us: state was lost
        first_in_memory = self._recent[0].seq if self._recent else self.seq + 1
        if since + 1 >= first_in_memory:
            start = since + 1 - first_in_memory
            return Replay([self._recent[i] for i in range(start, len(self._recent))])
        if since + 1 < self.first_retained or not has_store:
            return Replay([], reset=True)
        return Replay(list(self._recent), store_after=since, store_until=first_in_memory - 1)

    def forget_after(self, seq: int) -> None:
        """Drop events above ``seq`` that never became durable (a failed write)."""
        while self._recent and self._recent[-1].seq > seq:
            self._recent.pop()
        self.seq = seq
