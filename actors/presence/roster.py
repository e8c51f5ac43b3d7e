"""What a session's members have been told about who is present (pure).

The session actor keeps one ``Roster``: the participant records as members know
them. It is the ``participants`` snapshot of ``session:joined`` and the base
every later ``presence`` change entry is relative to, so a member that merges
each entry into its copy holds the same records (docs/protocol.md, ``presence``).

Entries are lean because a cursor storm is mostly state-only changes: sending
the whole record (name, status, connections) every time added ~50 bytes to
each change, about twice the bytes of a small cursor move. The base is this
roster, not a copy kept by the presence actor, because the roster is exactly
what members were given: a restarted session actor starts with an empty roster
(and its members rejoin), so it sends whole records again instead of changes
against a history nobody holds.
"""

from __future__ import annotations

from typing import Any

import attrs

from actors.messages import PresenceChanged, PresenceSnapshot
from runtime.protocol import messages as wire

JSON = Any

_MISSING = object()  # a field the member's record lacks (differs from any value, None too)


def change_entry(known: JSON | None, current: JSON) -> JSON | None:
    """The ``presence`` change entry that brings a member from ``known`` to ``current``.

    ``userId`` and the fields whose value differs; the whole record when the
    member knows nothing of this user; None when nothing changed. ``state`` is
    compared by identity: the presence actor keeps each state object as it
    arrived, so a new object means a new ``presence:update`` (sent even when
    equal, as before), and ``==`` would take ``1`` for ``true``.
    """
    if known is None:
        return current
    entry = {"userId": current["userId"]}
    for key, value in current.items():
        if key == "state":
            if value is not known.get("state", _MISSING):
                entry[key] = value
        elif key != "userId" and known.get(key, _MISSING) != value:
            entry[key] = value
    return entry if len(entry) > 1 else None


@attrs.define
class Roster:
    """Full participant records, as the session's members know them."""

    _records: dict[str, JSON] = attrs.field(factory=dict)

    def joined(self, record: JSON) -> None:
        """A user became present: members get (and keep) the whole record."""
        self._records[record["userId"]] = record

    def left(self, user_id: str) -> None:
        self._records.pop(user_id, None)

    def changed(self, record: JSON) -> JSON | None:
        """A present user's record is now ``record``; the entry to broadcast, if any."""
        entry = change_entry(self._records.get(record["userId"]), record)
        if entry is not None:
            self._records[record["userId"]] = record
        return entry

    def broadcast(self, session_id: str, change: PresenceChanged) -> list[JSON]:
        """Apply ``change``; the messages that tell members, in the order to send them."""
        return self._tell(session_id, change.joined, change.left, change.updated)

    def reconcile(self, session_id: str, snapshot: PresenceSnapshot) -> list[JSON]:
        """Make the roster ``snapshot`` (everyone present); the messages that tell members.

        Users members hold who are not in it leave; users they do not hold join
        (whole records); the others are changes against the records members
        hold, so a user shown all along is neither shown twice nor flickers.
        """
        present = {record["userId"] for record in snapshot.participants}
        gone = [user_id for user_id in self._records if user_id not in present]
        new = [r for r in snapshot.participants if r["userId"] not in self._records]
        known = [r for r in snapshot.participants if r["userId"] in self._records]
        return self._tell(session_id, new, gone, known)

    def _tell(
        self, session_id: str, joined: list[JSON], left: list[str], updated: list[JSON]
    ) -> list[JSON]:
        out = []
        entries = []
        for record in joined:
            if record["userId"] in self._records:
                # Members hold this user already (their presence actor restarted
                # meanwhile): what changed, not a second join.
                if entry := self.changed(record):
                    entries.append(entry)
                continue
            self.joined(record)
            out.append(wire.participant_joined(session_id, record))
        for user_id in left:
            if user_id in self._records:  # members never held the others: nothing to undo
                self.left(user_id)
                out.append(wire.participant_left(session_id, user_id))
        # Only what changed since the record members hold (a cursor move: userId and state).
        entries.extend(entry for record in updated if (entry := self.changed(record)))
        if entries:
            out.append(wire.presence(session_id, entries))
        return out

    def records(self) -> list[JSON]:
        """The snapshot a joiner gets: whole records, in order of arrival."""
        return list(self._records.values())

    def state(self, user_id: str) -> JSON:
        """The state members hold for ``user_id`` (None when they hold no record)."""
        record = self._records.get(user_id)
        return None if record is None else record["state"]

    def states(self) -> dict[str, JSON]:
        return {user_id: record["state"] for user_id, record in self._records.items()}
