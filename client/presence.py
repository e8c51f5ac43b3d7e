"""Who is present in a session, as the server's messages describe it (pure).

``session:joined`` gives whole participant records; ``participant:joined`` a
whole record; ``participant:left`` a user id; and a ``presence`` message
change entries that carry ``userId`` and only the fields that changed
(docs/protocol.md, ``presence``). A change is merged into the record the
client holds: fields present replace, absent fields keep their value, and
``"state": null`` is a value (no state), not an absence.
"""

from __future__ import annotations

from typing import Any

Record = dict[str, Any]


def merge_change(record: Record | None, change: Record) -> Record:
    """``record`` with ``change`` merged in (a new dict; neither argument is modified)."""
    return {**record, **change} if record is not None else dict(change)


class Participants:
    """One session's participants, kept up to date from that session's messages."""

    def __init__(self, records: list[Record] | None = None) -> None:
        self._records: dict[str, Record] = {}
        if records:
            self.reset(records)

    def reset(self, records: list[Record]) -> None:
        """A ``session:joined`` snapshot replaces everything known."""
        self._records = {r["userId"]: dict(r) for r in records}

    def apply(self, msg: Record) -> None:
        """Apply one server message about this session (others are ignored)."""
        kind = msg.get("type")
        if kind == "session:joined":
            self.reset(msg.get("participants") or [])
        elif kind == "participant:joined":
            participant = msg["participant"]
            self._records[participant["userId"]] = dict(participant)
        elif kind == "participant:left":
            self._records.pop(msg["userId"], None)
        elif kind == "presence":
            for change in msg.get("changes") or []:
                user_id = change["userId"]
                self._records[user_id] = merge_change(self._records.get(user_id), change)

    def records(self) -> dict[str, Record]:
        """``{userId: record}`` (copies: changing them changes nothing here)."""
        return {user_id: dict(r) for user_id, r in self._records.items()}
