"""The JavaScript client (/client.js) on its own, in Chromium, against a real server.

Drives ``TandemClient`` through ``page.evaluate``: ordering and de-duplication
by seq, ephemeral events that do not move the last seq, the transparent rejoin
after a session actor restart (``session:left`` with a reason), resume with
``since`` after a server-side drop, lean presence changes merged into whole
participant records, backoff with full jitter and the close-code
policy of docs/protocol.md section 12.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.browser.conftest import SKIP, ServerThread, Tab, needs_browser

pytestmark = [pytest.mark.integration, needs_browser]


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    if SKIP is not None:
        pytest.skip(SKIP)
    thread = ServerThread(presence_timeout=3.0).start()
    try:
        yield thread
    finally:
        thread.stop()


SETUP = """async () => {
  const lib = await import("/client.js");
  const url = `ws://${location.host}/`;
  const a = new lib.TandemClient(url, { backoffInitial: 0.05, backoffMax: 0.5 });
  const b = new lib.TandemClient(url, { backoffInitial: 0.05, backoffMax: 0.5 });
  await a.connect();
  await b.connect();
  const got = [];
  const states = [];
  b.on("event", (m) => got.push([m.seq, m.name, m.ephemeral === true]));
  b.on("state", (s) => states.push(s.state));
  window.t = { lib, a, b, got, states };
  await a.join("lib-1");
  await b.join("lib-1", { since: 0 });
  return [a.userId, b.userId, a.guest];
}"""

WAIT_FOR = """async (n) => {
  const deadline = performance.now() + 10000;
  while (window.t.got.length < n && performance.now() < deadline) {
    await new Promise((r) => setTimeout(r, 20));
  }
  return window.t.got;
}"""


def test_client_orders_dedupes_and_resumes(
    server: ServerThread, tabs: Callable[[str], Tab]
) -> None:
    tab = tabs("lib")
    tab.page.goto(server.base_url + "/")
    a_id, b_id, guest = tab.page.evaluate(SETUP)
    assert guest is True and a_id != b_id  # no token in dev: guests

    # Durable events move the last seq; an ephemeral one carries the seq it follows.
    seqs = tab.page.evaluate(
        """async () => {
          const { a } = window.t;
          const s1 = await a.publish("lib-1", "x", 1);
          const s0 = await a.publish("lib-1", "cursor", { x: 1 }, { durable: false });
          const s2 = await a.publish("lib-1", "y", 2);
          return [s1, s0, s2];
        }"""
    )
    assert seqs == [1, 1, 2]
    got = tab.page.evaluate(WAIT_FOR, 3)
    assert got == [[1, "x", False], [1, "cursor", True], [2, "y", False]]
    assert tab.page.evaluate('window.t.b.lastSeq("lib-1")') == 2

    # A duplicate delivery (as a resume overlapping the live stream could cause) is dropped.
    dup = tab.page.evaluate(
        """() => {
          const { b, got } = window.t;
          const before = got.length;
          b._dispatch({ type: "event", sessionId: "lib-1", seq: 2, name: "y", data: 2,
                        userId: "x", ts: 0 });
          b._dispatch({ type: "event", sessionId: "lib-1", seq: 1, name: "cursor", data: {},
                        userId: "x", ts: 0, ephemeral: true });
          return got.length - before;
        }"""
    )
    assert dup == 0

    # The session actor crashes: members get session:left(reason=restart) and the
    # client rejoins with since on its own; the next event arrives, once.
    assert server.server is not None
    node = server.server.node
    assert server.call(lambda: node.inject_failure("session:lib-1"))
    tab.page.evaluate(
        """async () => {
          const { a } = window.t;
          for (let i = 0; i < 100; i++) {
            try { return await a.publish("lib-1", "after-restart", 3); }
            catch (e) { await new Promise((r) => setTimeout(r, 50)); }
          }
        }"""
    )
    got = tab.page.evaluate(WAIT_FOR, 4)
    assert got[3] == [3, "after-restart", False] and len(got) == 4
    assert tab.page.evaluate("window.t.b.sessions") == ["lib-1"]

    # The server drops b's socket; events published meanwhile arrive after the resume.
    async def drop_b_and_publish() -> int:
        for conn in list(node.connections.values()):
            if conn.user_id == b_id:
                conn.abort(4000, "test: slow consumer")
        return await node.append_event("lib-1", "while-away", None, a_id)

    seq = server.call(drop_b_and_publish)
    got = tab.page.evaluate(WAIT_FOR, 5)
    assert got[4] == [seq, "while-away", False] and len(got) == 5
    assert tab.page.evaluate("window.t.b.reconnects") >= 1
    assert "reconnecting" in tab.page.evaluate("window.t.states")
    assert tab.page.evaluate("window.t.b.state") == "open"

    # Presence: b's cursor moves arrive as lean entries (userId and state only) and
    # the client merges them into whole records: a's view keeps b's name.
    presence = tab.page.evaluate(
        """async () => {
          const { a, b } = window.t;
          const entries = [];
          a.on("presence", (m) => entries.push(...m.changes.filter((c) => c.userId === b.userId)));
          for (let x = 1; x <= 3; x++) {
            b.updatePresence("lib-1", { cursor: { x } });
            await new Promise((r) => setTimeout(r, 60));
          }
          const deadline = performance.now() + 10000;
          while (a.participants("lib-1").get(b.userId)?.state?.cursor?.x !== 3
                 && performance.now() < deadline) {
            await new Promise((r) => setTimeout(r, 20));
          }
          return [entries, a.participants("lib-1").get(b.userId), b.userId, b.name];
        }"""
    )
    entries, record, b_now, b_name = presence  # a guest is a new user after each reconnect
    assert entries and all(sorted(e) == ["state", "userId"] for e in entries), entries
    assert record == {
        "userId": b_now,
        "name": b_name,
        "state": {"cursor": {"x": 3}},
        "status": "active",
        "connections": 1,
    }

    # Leaving: no more rejoins, no more delivery.
    tab.page.evaluate('window.t.b.leave("lib-1")')
    assert tab.page.evaluate("window.t.b.sessions") == []
    tab.page.evaluate("() => { window.t.a.close(); window.t.b.close(); }")
    assert tab.page.evaluate("window.t.a.state") == "closed"
    assert not tab.errors, tab.errors


def test_chromium_negotiates_compression_and_large_events_cross_both_ways(
    server: ServerThread, tabs: Callable[[str], Tab]
) -> None:
    # Chromium offers permessage-deflate on every WebSocket and compresses what it
    # sends; the server compresses frames of 256 bytes or more back.
    tab = tabs("deflate")
    tab.page.goto(server.base_url + "/")
    ids = tab.page.evaluate(
        """async () => {
          const lib = await import("/client.js");
          const url = `ws://${location.host}/`;
          const a = new lib.TandemClient(url), b = new lib.TandemClient(url);
          await a.connect();
          await b.connect();
          const got = [];
          b.on("event", (m) => got.push(m.data));
          await a.join("deflate-1");
          await b.join("deflate-1");
          window.d = { a, b, got };
          return [a.userId, b.userId];
        }"""
    )
    assert server.server is not None
    node = server.server.node

    async def negotiated() -> list[bool]:
        return [c.deflate for c in node.connections.values() if c.user_id in ids]

    assert server.call(negotiated) == [True, True]
    ok = tab.page.evaluate(
        """async () => {
          const { a, b, got } = window.d;
          const text = "the quick brown fox ".repeat(2000);  // 40 KB, compressed both ways
          await a.publish("deflate-1", "note", { text });
          const deadline = performance.now() + 10000;
          while (!got.length && performance.now() < deadline) {
            await new Promise((r) => setTimeout(r, 20));
          }
          a.close();
          b.close();
          return got.length === 1 && got[0].text === text;
        }"""
    )
    assert ok is True
    assert not tab.errors, tab.errors


def test_a_reconnect_made_when_the_browser_comes_online_is_counted(
    server: ServerThread, tabs: Callable[[str], Tab]
) -> None:
    # The backoff is long, so the only dial after the drop is the one the "online"
    # event makes at once: it must count as a reconnect like the timer's would.
    tab = tabs("online")
    tab.page.goto(server.base_url + "/")
    user_id = tab.page.evaluate(
        """async () => {
          const lib = await import("/client.js");
          const c = new lib.TandemClient(`ws://${location.host}/`,
                                         { backoffInitial: 60, backoffMax: 60 });
          await c.connect();
          window.c = c;
          return c.userId;
        }"""
    )
    assert server.server is not None
    node = server.server.node

    async def drop() -> None:
        for conn in list(node.connections.values()):
            if conn.user_id == user_id:
                conn.abort(4000, "test: slow consumer")

    server.call(drop)
    state = tab.page.evaluate(
        """async () => {
          const c = window.c;
          const deadline = performance.now() + 10000;
          while (c.state !== "reconnecting" && performance.now() < deadline) {
            await new Promise((r) => setTimeout(r, 20));
          }
          window.dispatchEvent(new Event("online"));
          while (c.state !== "open" && performance.now() < deadline) {
            await new Promise((r) => setTimeout(r, 20));
          }
          return [c.state, c.reconnects];
        }"""
    )
    assert state == ["open", 1]
    assert not tab.errors, tab.errors


def test_backoff_and_close_policy(server: ServerThread, tabs: Callable[[str], Tab]) -> None:
    tab = tabs("policy")
    tab.page.goto(server.base_url + "/")
    result = tab.page.evaluate(
        """async () => {
          const lib = await import("/client.js");
          const top = new lib.Backoff(0.1, 1, () => 1);
          const caps = [1, 2, 3, 4, 5, 6].map(() => top.nextDelay());
          top.reset();
          const half = new lib.Backoff(0.1, 1, () => 0.5).nextDelay();
          const codes = [null, 1000, 1001, 1005, 1006, 1009, 4000, 4001, 4400, 4401, 4402,
                         4403, 4399, 4500];
          return { caps, after_reset: top.cap(), half,
                   policy: codes.map((c) => lib.shouldReconnect(c)) };
        }"""
    )
    assert result["caps"] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
    assert result["after_reset"] == pytest.approx(0.1)
    assert result["half"] == pytest.approx(0.05)
    assert result["policy"] == [
        True,
        False,
        True,
        True,
        True,
        True,
        True,
        True,
        False,
        False,
        False,
        False,
        True,
        False,
    ]

    # A refused token ends the client for good: connect() rejects with ConnectionEnded(4402).
    ended = tab.page.evaluate(
        """async () => {
          const lib = await import("/client.js");
          const c = new lib.TandemClient(`ws://${location.host}/`, { token: "not-a-jwt" });
          const errors = [];
          c.on("error", (m) => errors.push(m.code));
          try { await c.connect(); return "connected?"; }
          catch (e) { return [e.name, e.code, c.state, errors]; }
        }"""
    )
    assert ended == ["ConnectionEnded", 4402, "closed", ["token_invalid"]]
    assert not tab.errors, tab.errors
