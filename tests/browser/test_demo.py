"""The demo page in a real browser: two users on one board, live, through drops.

Two browser contexts (two users) join the same board; each sees the other's
cursor and notes; one goes offline and comes back, another is cut off by the
server, and both catch up on the notes placed meanwhile. Any console error or
uncaught page error fails the test. Screenshots go to ``tests/browser/artifacts``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from runtime.protocol.errors import CloseCode
from tests.browser.conftest import SKIP, ServerThread, Tab, needs_browser

pytestmark = [pytest.mark.integration, needs_browser]

BOARD = "retro-1"
TIMEOUT_MS = 20_000  # generous: CI shares two cores between Chromium, the server and pytest


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    if SKIP is not None:
        pytest.skip(SKIP)
    # Short timeouts so away and drops happen within a test (pings every 4/3 s).
    thread = ServerThread(away_after=1.5, presence_timeout=4.0).start()
    try:
        yield thread
    finally:
        thread.stop()


def expect(locator: Any) -> Any:
    from playwright.sync_api import expect as pw_expect

    return pw_expect(locator)


def join(tab: Tab, base_url: str, name: str, board: str = BOARD) -> str:
    """Open the page on ``#board``, pick ``name``, join; returns the user id."""
    page = tab.page
    page.goto(f"{base_url}/#{board}")
    expect(page.locator("#session-input")).to_have_value(board)
    page.fill("#name-input", name)
    page.click("#join-button")
    expect(page.locator("#conn")).to_have_attribute("data-state", "open", timeout=TIMEOUT_MS)
    expect(page.locator("#app")).to_be_visible()
    user_id = tab.evaluate("window.tandemDemo.client.userId")
    assert isinstance(user_id, str) and user_id.startswith("user-")
    return user_id


def board_origin(tab: Tab) -> tuple[float, float]:
    box = tab.page.locator("#board").bounding_box()
    assert box is not None
    return box["x"], box["y"]


def move(tab: Tab, x: int, y: int) -> None:
    """Move the mouse to board point (x, y), wherever the board is scrolled to."""
    bx, by = board_origin(tab)
    tab.page.mouse.move(bx + x, by + y)


def place_note(tab: Tab, x: int, y: int, text: str) -> None:
    bx, by = board_origin(tab)
    tab.page.mouse.dblclick(bx + x, by + y)
    expect(tab.page.locator("#composer")).to_be_visible()
    tab.page.fill("#composer-text", text)
    tab.page.keyboard.press("Enter")
    expect(tab.page.locator(".note", has_text=text)).to_have_count(1, timeout=TIMEOUT_MS)


def note(tab: Tab, text: str) -> Any:
    return tab.page.locator("#notes .note", has_text=text)


def assert_no_console_errors(*tabs: Tab) -> None:
    errors = [f"[{t.label}] {e}" for t in tabs for e in t.errors]
    assert not errors, "browser errors:\n" + "\n".join(errors)


def test_two_users_share_a_live_board(server: ServerThread, tabs: Callable[[str], Tab]) -> None:
    ann, bob = tabs("ann"), tabs("bob")
    ann_id = join(ann, server.base_url, "Ann")
    bob_id = join(bob, server.base_url, "Bob")

    # Who is here: each sees both, by their chosen names.
    for tab in (ann, bob):
        expect(tab.page.locator("#people .person")).to_have_count(2, timeout=TIMEOUT_MS)
        expect(tab.page.locator("#people")).to_contain_text("Ann")
        expect(tab.page.locator("#people")).to_contain_text("Bob")
    expect(ann.page.locator("#me-name")).to_have_text("Ann")

    # Cursors: each sees the other's pointer where it is on the board.
    move(bob, 300, 200)
    bob_cursor = ann.page.locator(f'.cursor[data-user="{bob_id}"]')
    expect(bob_cursor).to_have_attribute("data-x", "300", timeout=TIMEOUT_MS)
    expect(bob_cursor).to_have_attribute("data-y", "200")
    expect(bob_cursor).to_contain_text("Bob")
    # The move reached Ann as a state-only change: she still knows Bob by name.
    expect(ann.page.locator(f'#people .person[data-user="{bob_id}"] .nm')).to_have_text("Bob")
    move(ann, 640, 420)
    ann_cursor = bob.page.locator(f'.cursor[data-user="{ann_id}"]')
    expect(ann_cursor).to_have_attribute("data-x", "640", timeout=TIMEOUT_MS)
    expect(ann_cursor).to_have_attribute("data-y", "420")

    # Notes: durable events, seen by both.
    place_note(ann, 120, 90, "Ship the browser client")
    expect(note(bob, "Ship the browser client")).to_have_count(1, timeout=TIMEOUT_MS)
    place_note(bob, 420, 300, "Demo on Friday")
    expect(note(ann, "Demo on Friday")).to_have_count(1, timeout=TIMEOUT_MS)
    expect(note(ann, "Demo on Friday").locator(".by")).to_have_text("Bob")

    # Away: Ann's list shows Bob away once he has been idle past away_after ...
    bob_row = ann.page.locator(f'#people .person[data-user="{bob_id}"]')
    expect(bob_row).to_have_class("person person--away", timeout=TIMEOUT_MS)
    expect(bob_row).to_contain_text("Away")
    # ... and active again when he moves.
    move(bob, 310, 210)
    expect(bob_row).to_have_class("person", timeout=TIMEOUT_MS)
    ann.screenshot("board")
    bob.screenshot("board")

    # Offline: Bob loses the network; Ann keeps working; Bob comes back and catches up.
    bob.context.set_offline(True)
    expect(bob.page.locator("#conn")).to_have_attribute(
        "data-state", "reconnecting", timeout=TIMEOUT_MS
    )
    # The server drops Bob (no pongs) within presence_timeout; Ann sees him go.
    expect(ann.page.locator(f'#people .person[data-user="{bob_id}"]')).to_have_count(
        0, timeout=TIMEOUT_MS
    )
    place_note(ann, 700, 120, "Placed while Bob was offline")
    place_note(ann, 900, 320, "And another one")
    bob.screenshot("offline")
    bob.context.set_offline(False)
    expect(bob.page.locator("#conn")).to_have_attribute("data-state", "open", timeout=TIMEOUT_MS)
    expect(note(bob, "Placed while Bob was offline")).to_have_count(1, timeout=TIMEOUT_MS)
    expect(note(bob, "And another one")).to_have_count(1)
    expect(bob.page.locator("#notes .note")).to_have_count(4)  # nothing lost, nothing twice
    expect(ann.page.locator(f'#people .person[data-user="{bob_id}"]')).to_have_count(
        1, timeout=TIMEOUT_MS
    )
    assert bob.evaluate("window.tandemDemo.client.reconnects") >= 1

    # The server cuts Ann's socket and a note lands before she is back: she resumes with since.
    async def cut_ann_and_append() -> int:
        assert server.server is not None
        node = server.server.node
        for conn in list(node.connections.values()):
            if conn.user_id == ann_id:
                conn.abort(CloseCode.SLOW_CONSUMER, "test: cut")
        return await node.append_event(
            BOARD,
            "note:add",
            {"id": "srv-1", "x": 200, "y": 520, "text": "Added by the server", "color": "green"},
            bob_id,
        )

    seq = server.call(cut_ann_and_append)
    expect(note(ann, "Added by the server")).to_have_count(1, timeout=TIMEOUT_MS)
    expect(ann.page.locator("#conn")).to_have_attribute("data-state", "open", timeout=TIMEOUT_MS)
    assert ann.evaluate(f"window.tandemDemo.client.lastSeq({BOARD!r})") == seq
    expect(ann.page.locator("#notes .note")).to_have_count(5)
    expect(bob.page.locator("#notes .note")).to_have_count(5)
    # Presence is re-sent after the rejoin: Bob sees Ann's cursor again when she moves.
    move(ann, 500, 260)
    expect(ann_cursor).to_have_attribute("data-x", "500", timeout=TIMEOUT_MS)

    # Removing a note reaches the other side too.
    bob.page.locator("#notes .note", has_text="And another one").hover()
    bob.page.locator("#notes .note", has_text="And another one").locator(".remove").click()
    expect(note(ann, "And another one")).to_have_count(0, timeout=TIMEOUT_MS)

    ann.screenshot("final")
    bob.screenshot("final")
    assert_no_console_errors(ann, bob)


def test_reload_rejoins_and_replays_the_board(
    server: ServerThread, tabs: Callable[[str], Tab]
) -> None:
    """A reload keeps the tab's identity (sessionStorage) and rebuilds the board from seq 0."""
    cam = tabs("cam")
    cam_id = join(cam, server.base_url, "Cam", board="reload-1")
    place_note(cam, 100, 100, "Survives a reload")
    cam.page.reload()
    expect(cam.page.locator("#conn")).to_have_attribute("data-state", "open", timeout=TIMEOUT_MS)
    expect(note(cam, "Survives a reload")).to_have_count(1, timeout=TIMEOUT_MS)
    assert cam.evaluate("window.tandemDemo.client.userId") == cam_id
    assert_no_console_errors(cam)


def test_comment_thread_reply_reaction_mention_and_resolve(
    server: ServerThread, tabs: Callable[[str], Tab]
) -> None:
    ann, bob = tabs("ann-c"), tabs("bob-c")
    join(ann, server.base_url, "Ann", board="comments-1")
    bob_id = join(bob, server.base_url, "Bob", board="comments-1")
    expect(ann.page.locator("#people .person")).to_have_count(2, timeout=TIMEOUT_MS)

    # Ann starts a thread on a spot, mentioning Bob: he sees the pin and an unread badge.
    ann.page.click("#comment-mode")
    bx, by = board_origin(ann)
    ann.page.mouse.click(bx + 520, by + 260)
    ann.page.fill("#composer-text", "@Bob can you check this spot?")
    ann.page.keyboard.press("Enter")
    pin = bob.page.locator("#pins .pin")
    expect(pin).to_have_count(1, timeout=TIMEOUT_MS)
    expect(bob.page.locator("#badge")).to_have_text("1", timeout=TIMEOUT_MS)
    expect(bob.page.locator("#badge")).to_be_visible()
    expect(bob.page.locator("#activity")).to_contain_text("Ann mentioned you")

    # Bob opens it, replies and reacts; Ann sees both in her open thread.
    pin.click()
    expect(bob.page.locator("#thread-comments .comment")).to_have_count(1)
    expect(bob.page.locator("#thread-comments")).to_contain_text("can you check this spot?")
    bob.page.fill("#reply-text", "Looks right to me")
    bob.page.press("#reply-text", "Enter")
    thread = ann.page.locator("#thread-comments")
    expect(thread.locator(".comment")).to_have_count(2, timeout=TIMEOUT_MS)
    expect(thread).to_contain_text("Looks right to me")
    bob.page.locator("#thread-comments .comment").first.locator(".react").click()
    expect(thread.locator(".comment").first.locator(".react")).to_have_text(
        "👍 1", timeout=TIMEOUT_MS
    )
    expect(ann.page.locator("#pins .pin")).to_have_text("2")
    bob.screenshot("thread")

    # The bell marks everything read; Ann resolves the thread and both pins show it.
    bob.page.click("#bell")
    expect(bob.page.locator("#badge")).to_be_hidden(timeout=TIMEOUT_MS)
    ann.page.click("#thread-resolve")
    for tab in (ann, bob):
        expect(tab.page.locator("#pins .pin")).to_have_class(
            re.compile(r"\bpin--resolved\b"), timeout=TIMEOUT_MS
        )
        expect(tab.page.locator("#pins .pin")).to_have_text("✓")
    expect(ann.page.locator("#thread-state")).to_have_text("resolved")
    assert bob_id.startswith("user-")
    ann.screenshot("thread")
    assert_no_console_errors(ann, bob)
