"""Mailbox full-policies and presence coalescing."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from actors.messages import SetPresence, Track, Untrack, merge_presence
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
    assert merge_presence(track, untrack) is None  # joined and left unseen
    assert merge_presence(update, untrack) == untrack
    assert merge_presence(untrack, update) == untrack  # nothing after leaving counts
    assert merge_presence(update, SetPresence({"a": 2})) == SetPresence({"a": 2})
    assert merge_presence(track, update) == Track("u", "n", {"a": 1})


async def test_coalescing_close_ends_receivers() -> None:
    box: CoalescingMailbox[str, object] = CoalescingMailbox(merge_presence)
    box.close()
    with pytest.raises(MailboxClosed):
        box.post("c", Untrack())
    with pytest.raises(trio.EndOfChannel):
        await box.receive_all()
