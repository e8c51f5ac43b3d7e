"""PresenceState: per-connection state merged per user; no ghosts, no duplicates."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.messages import PresenceChanged, PresenceSnapshot
from actors.presence.roster import Roster
from actors.presence.state import Changes, PresenceState, coalesce
from client.presence import Participants


def test_two_tabs_of_one_user_are_one_participant() -> None:
    state = PresenceState()
    assert state.track("c1", "ann", "Ann", None, now=0).joined == ["ann"]
    changes = state.track("c2", "ann", "Ann", None, now=1)
    assert changes.joined == []
    assert [p["userId"] for p in state.participants()] == ["ann"]
    assert state.participant("ann")["connections"] == 2
    assert state.untrack("c1").left == []  # one tab closed: still here
    assert state.untrack("c2").left == ["ann"]  # the last one: gone
    assert state.participants() == []


def test_latest_update_wins_and_falls_back_when_that_tab_leaves() -> None:
    state = PresenceState()
    state.track("c1", "ann", "Ann", None, now=0)
    state.track("c2", "ann", "Ann", None, now=0)
    state.update("c1", {"cursor": 1}, now=1)
    state.update("c2", {"cursor": 2}, now=2)
    assert state.participant("ann")["state"] == {"cursor": 2}
    changes = state.untrack("c2")
    assert changes.updated == ["ann"]
    assert state.participant("ann")["state"] == {"cursor": 1}


def test_inactive_users_become_away_and_activity_brings_them_back() -> None:
    state = PresenceState(away_after=60)
    state.track("c1", "ann", "Ann", None, now=0)
    state.track("c2", "bob", "Bob", None, now=50)
    assert state.mark_away(now=70).updated == ["ann"]
    assert state.participant("ann")["status"] == "away"
    assert state.mark_away(now=71).updated == []  # reported once
    state.update("c1", {"x": 1}, now=80)
    assert state.participant("ann")["status"] == "active"


def test_unknown_connections_change_nothing() -> None:
    state = PresenceState()
    assert not state.untrack("nope")
    assert not state.update("nope", {}, now=0)


ops = st.lists(
    st.tuples(
        st.sampled_from(["track", "untrack", "update"]),
        st.integers(0, 5),  # connection
        st.integers(0, 2),  # user of that connection
    ),
    max_size=60,
)


@given(ops)
def test_participants_are_exactly_the_users_with_live_connections(
    script: list[tuple[str, int, int]],
) -> None:
    state = PresenceState()
    live: dict[str, str] = {}  # conn -> user
    joined_minus_left: dict[str, int] = {}
    for now, (op, conn_n, user_n) in enumerate(script):
        conn, user = f"c{conn_n}", f"u{user_n}"
        if op == "track":
            if conn in live:
                continue  # a connection joins a session once
            changes = state.track(conn, user, user, None, now)
            live[conn] = user
        elif op == "untrack":
            changes = state.untrack(conn)
            live.pop(conn, None)
        else:
            changes = state.update(conn, {"n": now}, now)
        for u in changes.joined:
            joined_minus_left[u] = joined_minus_left.get(u, 0) + 1
        for u in changes.left:
            joined_minus_left[u] = joined_minus_left.get(u, 0) - 1
        users = sorted(set(live.values()))
        assert sorted(p["userId"] for p in state.participants()) == users  # no ghosts, no dupes
        assert sorted(u for u, n in joined_minus_left.items() if n) == users
        assert all(n in (0, 1) for n in joined_minus_left.values())


# --- what members are told: lean change entries ----------------------------------------
#
# The presence actor coalesces a flush's changes (``coalesce``) and reports whole records;
# the session actor's ``Roster`` turns them into messages with only what changed. This
# harness is those two steps without the actors, so the tests below drive exactly the
# code that builds ``participant:*`` and ``presence`` messages.


class Broadcasts:
    def __init__(self, away_after: float = 60.0) -> None:
        self.away_after = away_after
        self.state = PresenceState(away_after=away_after)
        self.roster = Roster()
        self._steps: list[Changes] = []
        self._synced = False

    def restart(self, members: dict[str, tuple[str, str]], now: float) -> None:
        """The presence actor crashes (unpublished changes die with it) and its successor
        gets the session's Sync: ``members`` (conn -> user, name), with the roster's states."""
        self.state = PresenceState(away_after=self.away_after)
        self._steps = []
        self.state.sync([(c, u, n, self.roster.state(u)) for c, (u, n) in members.items()], now)
        self._synced = True

    def track(self, conn: str, user: str, name: str, state: object, now: float) -> None:
        self._steps.append(self.state.track(conn, user, name, state, now))

    def update(self, conn: str, state: object, now: float) -> None:
        self._steps.append(self.state.update(conn, state, now))

    def untrack(self, conn: str) -> None:
        self._steps.append(self.state.untrack(conn))

    def mark_away(self, now: float) -> None:
        self._steps.append(self.state.mark_away(now))

    def flush(self) -> list[dict[str, Any]]:
        """One broadcast: the messages every member gets (as PresenceActor._send builds them)."""
        changes, self._steps = coalesce(self._steps), []
        if self._synced:  # as PresenceActor._send: a Sync is answered with everyone
            self._synced = False
            return self.roster.reconcile("s", PresenceSnapshot(self.state.participants()))
        if not changes:
            return []
        record = self.state.participant
        report = PresenceChanged(
            joined=[record(u) for u in changes.joined],
            left=list(changes.left),
            updated=[record(u) for u in changes.updated],
        )
        return self.roster.broadcast("s", report)

    def entries(self) -> list[dict[str, Any]]:
        """The change entries of the next flush (and nothing else was sent)."""
        messages = self.flush()
        assert [m["type"] for m in messages] in ([], ["presence"])
        return [c for m in messages for c in m["changes"]]


def test_a_state_only_update_sends_user_id_and_state() -> None:
    b = Broadcasts()
    b.track("c1", "ann", "Ann", None, now=0)
    assert [m["type"] for m in b.flush()] == ["participant:joined"]
    b.update("c1", {"cursor": 1}, now=1)
    assert b.entries() == [{"userId": "ann", "state": {"cursor": 1}}]


def test_an_equal_state_sent_again_is_still_a_change() -> None:
    # As before lean entries: every presence:update reaches members (apps may count on it).
    b = Broadcasts()
    b.track("c1", "ann", "Ann", None, now=0)
    b.flush()
    b.update("c1", {"cursor": 1}, now=1)
    b.flush()
    b.update("c1", {"cursor": 1}, now=2)
    assert b.entries() == [{"userId": "ann", "state": {"cursor": 1}}]


def test_a_state_python_calls_equal_but_the_wire_does_not_is_sent() -> None:
    b = Broadcasts()
    b.track("c1", "ann", "Ann", {"cursor": 1}, now=0)
    b.flush()
    b.update("c1", {"cursor": True}, now=1)  # == {"cursor": 1} in Python
    assert b.entries() == [{"userId": "ann", "state": {"cursor": True}}]
    assert b.entries() == []  # nothing new: nothing sent


def test_coming_back_from_away_with_a_new_state_sends_state_and_status() -> None:
    b = Broadcasts(away_after=60)
    b.track("c1", "ann", "Ann", None, now=0)
    b.flush()
    b.mark_away(now=60)
    assert b.entries() == [{"userId": "ann", "status": "away"}]
    b.update("c1", {"cursor": 2}, now=61)
    assert b.entries() == [{"userId": "ann", "state": {"cursor": 2}, "status": "active"}]


def test_a_second_tab_sends_the_connection_count() -> None:
    b = Broadcasts()
    b.track("c1", "ann", "Ann", {"cursor": 1}, now=0)
    b.flush()
    b.track("c2", "ann", "Ann", None, now=1)
    assert b.entries() == [{"userId": "ann", "connections": 2}]
    b.untrack("c2")  # its own state was None, but c1's cursor is the newer one
    assert b.entries() == [{"userId": "ann", "connections": 1}]


def test_closing_the_tab_with_the_newest_state_falls_back_to_the_other_tab() -> None:
    b = Broadcasts()
    b.track("c1", "ann", "Ann", None, now=0)
    b.track("c2", "ann", "Ann", None, now=0)
    b.update("c1", {"cursor": 1}, now=1)
    b.update("c2", {"cursor": 2}, now=2)
    b.flush()
    b.untrack("c2")
    assert b.entries() == [{"userId": "ann", "state": {"cursor": 1}, "connections": 1}]


def test_leaving_and_coming_back_within_a_flush_is_a_change_not_a_leave() -> None:
    b = Broadcasts()
    b.track("c1", "ann", "Ann", None, now=0)
    b.update("c1", {"cursor": 1}, now=1)
    b.flush()
    b.untrack("c1")  # a reconnect: the old connection goes, a new one comes
    b.track("c2", "ann", "Ann Lee", None, now=2)
    # Members never saw her leave: they are told what differs from what they hold.
    assert b.entries() == [{"userId": "ann", "name": "Ann Lee", "state": None}]


def test_changes_within_one_flush_are_one_entry_with_the_current_values() -> None:
    b = Broadcasts(away_after=60)
    b.track("c1", "ann", "Ann", None, now=0)
    b.flush()
    b.mark_away(now=60)
    b.update("c1", {"cursor": 1}, now=61)
    b.track("c2", "ann", "Ann", None, now=62)
    b.update("c1", {"cursor": 3}, now=63)
    # Away and active again within the flush: members still see her active; not sent.
    assert b.entries() == [{"userId": "ann", "state": {"cursor": 3}, "connections": 2}]


def test_joiners_get_whole_records_and_so_does_a_user_the_roster_lacks() -> None:
    b = Broadcasts()
    b.track("c1", "ann", "Ann", None, now=0)
    (joined,) = b.flush()
    assert joined["participant"] == {
        "userId": "ann",
        "name": "Ann",
        "state": None,
        "status": "active",
        "connections": 1,
    }
    b.roster = Roster()  # a restarted session actor: its members rejoin to an empty roster
    b.update("c1", {"cursor": 1}, now=1)
    assert b.entries() == [b.state.participant("ann")]


# The key property: a member that starts from any ``session:joined`` snapshot and merges
# every message after it holds exactly the server's records.

STATES = [None, {"cursor": 1}, {"cursor": True}, {"cursor": 1.0}, {"note": "x"}]
presence_ops = st.lists(
    st.tuples(
        st.sampled_from(
            ["track", "update", "update", "untrack", "mark_away", "flush", "join", "restart"]
        ),
        st.integers(0, 4),  # connection
        st.integers(0, 2),  # user of that connection (and which name)
        st.integers(0, len(STATES) - 1),  # state
        st.sampled_from([0.0, 1.0, 30.0]),  # time passing
    ),
    max_size=80,
)


def wire_view(records: Any) -> bytes:
    # As a member would see it: ``1`` and ``true`` and ``1.0`` differ on the wire.
    return orjson.dumps(records, option=orjson.OPT_SORT_KEYS)


@given(presence_ops)
@settings(max_examples=300)
def test_members_merging_lean_changes_hold_the_servers_records(
    script: list[tuple[str, int, int, int, float]],
) -> None:
    b = Broadcasts(away_after=60)
    members = [Participants(b.roster.records())]
    owner: dict[str, int] = {}  # conn -> user, while tracked
    names: dict[str, str] = {}  # conn -> the name it was last tracked with
    now = 0.0
    for op, conn_n, user_n, state_n, dt in script:
        now += dt
        conn = f"c{conn_n}"
        if op == "track":
            user = owner.setdefault(conn, user_n)  # a connection is one user's
            names[conn] = f"User {user}" + " (b)" * (user_n % 2)
            b.track(conn, f"u{user}", names[conn], STATES[state_n], now)
        elif op == "update":
            b.update(conn, STATES[state_n], now)
        elif op == "untrack":
            b.untrack(conn)
            owner.pop(conn, None)
        elif op == "mark_away":
            b.mark_away(now)
        elif op == "restart":
            # The presence actor crashes while ``conn`` leaves (its Untrack reaches nobody):
            # the session's Sync holds the connections still tracked, without it.
            owner.pop(conn, None)
            b.restart({c: (f"u{u}", names[c]) for c, u in owner.items()}, now)
        elif op == "flush":
            for message in b.flush():
                for member in members:
                    member.apply(message)
        else:  # a member joins between two broadcasts, as the session actor orders it
            members.append(Participants(b.roster.records()))
    for message in b.flush():
        for member in members:
            member.apply(message)
    server = {p["userId"]: p for p in b.state.participants()}
    for member in members:
        assert wire_view(member.records()) == wire_view(server)
    assert wire_view({r["userId"]: r for r in b.roster.records()}) == wire_view(server)


def test_a_restarted_presence_actor_heals_the_roster_without_a_ghost_or_a_duplicate() -> None:
    b = Broadcasts()
    b.track("c1", "ann", "Ann", None, now=0)
    b.track("c2", "bob", "Bob", None, now=0)
    b.track("c3", "bob", "Bob", None, now=0)
    b.flush()
    b.update("c1", {"cursor": 1}, now=1)
    b.flush()
    members = Participants(b.roster.records())
    # Crash; meanwhile ann left (her Untrack reached nobody). Bob's two tabs are members.
    b.restart({"c2": ("bob", "Bob"), "c3": ("bob", "Bob")}, now=2)
    messages = b.flush()
    assert messages == [{"type": "participant:left", "sessionId": "s", "userId": "ann"}]
    for message in messages:
        members.apply(message)
    assert members.records() == {"bob": b.state.participant("bob")}
    assert b.state.participant("bob")["connections"] == 2  # tracked again, once per tab

    # A quiet member keeps the state members were shown (no change to send).
    b = Broadcasts()
    b.track("c1", "ann", "Ann", {"cursor": 1}, now=0)
    b.flush()
    b.restart({"c1": ("ann", "Ann")}, now=1)
    assert b.flush() == []
    assert b.state.participant("ann")["state"] == {"cursor": 1}


def test_a_sync_keeps_known_connections_and_drops_the_others() -> None:
    state = PresenceState()
    state.track("c1", "ann", "Ann", {"x": 1}, now=0)
    state.track("c2", "bob", "Bob", None, now=0)
    changes = state.sync([("c1", "ann", "Ann", None), ("c3", "cy", "Cy", None)], now=1)
    assert changes == Changes(joined=["cy"], left=["bob"])
    assert state.participant("ann")["state"] == {"x": 1}  # its own state is at least as new
    assert state.user_ids() == ["ann", "cy"]
