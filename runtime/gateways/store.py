"""Storage interfaces the actors persist through.

Actors never touch a connection: they call these small async interfaces.
``runtime.gateways.memory`` holds the in-memory implementations (tests, and
``tandem serve`` before a database is configured); ``runtime.gateways.postgres``
holds the PostgreSQL ones. One contract test suite runs against both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import attrs

JSON = Any  # a JSON value as decoded by orjson: dict, list, str, int, float, bool or None


@attrs.frozen(slots=True)
class StoredEvent:
    """One event of a session's ordered stream, as it is persisted."""

    session_id: str
    seq: int
    name: str
    data: JSON
    user_id: str
    ts: float  # unix seconds, assigned by the session actor
    sensitive: bool = False  # stored encrypted at rest (``runtime.gateways.encryption``)


@attrs.frozen(slots=True)
class SessionHead:
    """What a session actor needs to continue a session after passivation or restart."""

    last_seq: int  # highest seq ever assigned (0 for a new session)
    first_retained_seq: int  # lowest seq still stored (last_seq + 1 when none is stored)


class EventStore(Protocol):
    """A session's durable, ordered event log.

    Cancellation: a cancelled ``append`` may or may not have been written; the
    caller must not acknowledge those events. Implementations never write part
    of one ``append`` call.
    """

    async def load_head(self, session_id: str) -> SessionHead: ...

    async def append(self, events: Sequence[StoredEvent]) -> None:
        """Make ``events`` durable (all or none). Seqs are contiguous per session."""

    async def read_since(self, session_id: str, after_seq: int, limit: int) -> list[StoredEvent]:
        """Up to ``limit`` retained events with ``seq > after_seq``, in seq order."""

    async def trim(
        self, session_id: str, *, keep_last: int | None = None, older_than_s: float | None = None
    ) -> int:
        """Drop the oldest events past ``keep_last`` or older than ``older_than_s``.

        The head (last seq) never moves back.
        """
