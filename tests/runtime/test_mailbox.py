"""Mailbox full-policies and presence coalescing."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from actors.messages import SetPresence, Track, Untrack, merge_presence
from actors.presence.state import PresenceState
from runtime.mailbox import CoalescingMailbox, Mailbox, MailboxClosed, MailboxFull


async def test_post_on_a_full_mailbox_raises_and_send_waits(
    autojump_clock: trio.testing.MockClock,
) -> None:
    box: Mailbox[int] = Mailbox(2)
    box.post(1)
    box.post(2)
    with pytest.raises(MailboxFull):
        box.post(3)
    with trio.move_on_after(1) as scope:
        await box.send(3)  # backpressure: waits for room
    assert scope.cancelled_caught
    assert box.depth == 2
    assert await box.receive() == 1
    await box.send(3)
    assert [box.receive_nowait(), box.receive_nowait()] == [2, 3]


async def test_closed_mailbox_refuses_but_drains() -> None:
    box: Mailbox[int] = Mailbox(4)
    box.post(1)
    box.close()
    with pytest.raises(MailboxClosed):
        box.post(2)
    assert await box.receive() == 1
    with pytest.raises(trio.EndOfChannel):
        await box.receive()


async def test_coalescing_keeps_one_slot_per_connection() -> None:
    box: CoalescingMailbox[str, object] = CoalescingMailbox(merge_presence)
    box.post("c1", Track("u1", "Ann"))
    for x in range(100):
        box.post("c1", SetPresence({"x": x}))
        box.post("c2", SetPresence({"y": x}))
    assert box.depth == 2
    assert await box.receive_all() == [
        ("c1", Track("u1", "Ann", {"x": 99})),
        ("c2", SetPresence({"y": 99})),
    ]


def test_merge_rules() -> None:
    track, update, untrack = Track("u", "n"), SetPresence({"a": 1}), Untrack()
    assert merge_presence(track, untrack) == untrack  # the Track may have been a re-track
    assert merge_presence(update, untrack) == untrack
    assert merge_presence(untrack, update) == untrack  # a late update of a leaver
    assert merge_presence(untrack, track) == track  # left and rejoined
    assert merge_presence(update, SetPresence({"a": 2})) == SetPresence({"a": 2})
    assert merge_presence(track, update) == Track("u", "n", {"a": 1})


_messages = st.one_of(
    st.builds(Track, st.just("u"), st.just("U"), st.one_of(st.none(), st.integers(0, 3))),
    st.builds(SetPresence, st.integers(0, 3)),
    st.just(Untrack()),
)


def _apply(state: PresenceState, message: object) -> None:
    if isinstance(message, Track):
        state.track("c", message.user_id, message.name, message.state, 0.0)
    elif isinstance(message, SetPresence):
        state.update("c", message.state, 0.0)
    else:
        state.untrack("c")


def _who(state: PresenceState) -> list[tuple[str, int]]:
    return [(p["userId"], p["connections"]) for p in state.participants()]


@given(tracked_before=st.booleans(), messages=st.lists(_messages, min_size=1, max_size=6))
def test_coalescing_never_changes_who_is_present(
    tracked_before: bool, messages: list[object]
) -> None:
    """Applying the coalesced message leaves the same members present as applying each."""
    one_by_one, coalesced = PresenceState(), PresenceState()
    for state in (one_by_one, coalesced):
        if tracked_before:  # the connection was already present before these arrived
            state.track("c", "u", "U", None, 0.0)
    for message in messages:
        _apply(one_by_one, message)
    merged: object | None = messages[0]
    for message in messages[1:]:
        merged = message if merged is None else merge_presence(merged, message)  # type: ignore[arg-type]
    if merged is not None:
        _apply(coalesced, merged)
    assert _who(coalesced) == _who(one_by_one)


async def test_coalescing_close_ends_receivers() -> None:
    box: CoalescingMailbox[str, object] = CoalescingMailbox(merge_presence)
    box.close()
    with pytest.raises(MailboxClosed):
        box.post("c", Untrack())
    with pytest.raises(trio.EndOfChannel):
        await box.receive_all()
