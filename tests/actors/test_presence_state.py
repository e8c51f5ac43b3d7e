"""PresenceState: per-connection state merged per user; no ghosts, no duplicates."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from actors.presence.state import PresenceState


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
