"""The comments scenario's client side: what each user creates, and what it counts on receipt.

Every user (a JWT identity ``u<connection number>``, so others can mention it) creates
``per_user`` comments: its first is a new thread (``thread:create``), the later ones go to a
thread it has seen (its own or another user's), every other one as a reply (``parentId``) to
a top-level comment of that thread, and every ``MENTION_EVERY``-th mentions one or two other
members. Each comment's body starts with ``t=<µs wall clock> c=<creator's connection>``.

On receipt (comment traffic is small, so payloads are JSON-decoded here, unlike events):

* ``event`` ``thread:created`` / ``comment:created`` from another member: one delivery,
  latency now - t; the creator's own copy is counted as a self echo, not a delivery;
* ``thread:create:ok`` / ``comment:create:ok`` with a ref this process sent: one ack,
  latency now - send time;
* ``notification`` of kind ``mention``: counted, latency from the stamp in its excerpt
  (informational: Tandem groups notifications, so this is not a loss check);
* ``error``: a refused comment (FAILED).
"""

from __future__ import annotations

import random
import re
from array import array
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson

#: Event frames one generator process remembers decoded. A session's frame reaches every
#: member with the same bytes, so each is decoded once, not once per member: at 100
#: members that was most of this process's CPU, which the server and PostgreSQL share.
FRAME_CACHE = 64
MENTION_EVERY = 3  # every third comment of a user mentions others
STAMP = re.compile(r"^t=(\d+) c=(\d+) ")
COMMENT_EVENTS = ("thread:created", "comment:created")
ACKS = ("thread:create:ok", "comment:create:ok")


def user_id(conn_number: int) -> str:
    return f"u{conn_number}"


def body(stamp_us: int, conn_number: int, k: int, pad: int) -> str:
    return f"t={stamp_us} c={conn_number} comment {k} " + "x" * pad


def parse_stamp(text: str) -> tuple[int, int] | None:
    """(stamp µs, creator connection) from a body or excerpt this generator wrote."""
    m = STAMP.match(text)
    return (int(m.group(1)), int(m.group(2))) if m else None


@dataclass(frozen=True)
class Action:
    kind: str  # "thread" | "comment" | "reply"
    thread_id: str | None = None
    parent_id: str | None = None
    mentions: tuple[str, ...] = ()


def pick_mentions(
    conn_number: int, k: int, pool: list[str], rng: random.Random, every: int = MENTION_EVERY
) -> tuple[str, ...]:
    """Every ``every``-th comment (staggered by user) mentions 1 or 2 other members."""
    if every <= 0 or (conn_number + k) % every:
        return ()
    me = user_id(conn_number)
    others = [u for u in pool if u != me]
    return tuple(rng.sample(others, min(len(others), 1 + k % 2)))


def choose_action(
    k: int,
    threads: list[str],
    roots: dict[str, list[str]],
    rng: random.Random,
    mentions: tuple[str, ...] = (),
) -> Action:
    """A user's ``k``-th comment: the first opens a thread, later ones go to a known thread,
    odd ones as a reply to one of its top-level comments (depth 1, far below the limit)."""
    if k == 0 or not threads:
        return Action("thread", mentions=mentions)
    thread = rng.choice(threads)
    parents = roots.get(thread)
    if k % 2 == 1 and parents:
        return Action("reply", thread, rng.choice(parents), mentions)
    return Action("comment", thread, None, mentions)


def message(action: Action, session_id: str, text: str, ref: str) -> dict[str, Any]:
    msg: dict[str, Any] = {"sessionId": session_id, "body": text, "ref": ref}
    if action.kind == "thread":
        msg["type"] = "thread:create"
    else:
        msg["type"] = "comment:create"
        msg["threadId"] = action.thread_id
        if action.parent_id is not None:
            msg["parentId"] = action.parent_id
    if action.mentions:
        msg["mentions"] = list(action.mentions)
    return msg


@dataclass
class CommentStats:
    deliveries: int = 0
    self_echoes: int = 0
    acks: int = 0
    mentions: int = 0  # mention notifications received
    mentions_sent: int = 0
    errors: int = 0
    kinds: Counter[str] = field(default_factory=Counter)  # thread / comment / reply sent
    latency_us: array[int] = field(default_factory=lambda: array("q"))
    ack_latency_us: array[int] = field(default_factory=lambda: array("q"))
    mention_latency_us: array[int] = field(default_factory=lambda: array("q"))
    # Wall-clock µs (comparable across generator processes): the span a throughput
    # figure can be measured over, with no polling interval in it.
    first_sent_us: int | None = None
    last_ack_us: int | None = None
    error_samples: list[str] = field(default_factory=list)


class CommentState:
    """What one generator process knows about the session's threads, and its pending refs."""

    def __init__(self) -> None:
        self.threads: dict[str, list[str]] = {}  # session -> thread ids, in order seen
        self._thread_set: set[str] = set()
        self.roots: dict[str, list[str]] = {}  # thread -> its top-level comment ids
        self._root_set: set[str] = set()
        self.pending: dict[str, int] = {}  # ref -> send time, µs
        self.stats = CommentStats()
        # Frame bytes -> its comment events' (stamp µs, creator connection), in order
        # (insertion order: the oldest is dropped first).
        self._frames: dict[bytes, list[tuple[int, int]]] = {}

    def sent(self, ref: str, now_us: int) -> None:
        """A create went out at ``now_us``; its ack will be timed against it."""
        self.pending[ref] = now_us
        if self.stats.first_sent_us is None:
            self.stats.first_sent_us = now_us

    def reset(self) -> None:
        self.stats = CommentStats()
        self.pending.clear()

    def learn(self, name: str, data: dict[str, Any]) -> dict[str, Any] | None:
        """Record a thread / top-level comment from a record; returns the comment in it."""
        comment: dict[str, Any] | None
        if name.startswith("thread:"):
            tid = data.get("id")
            sid = data.get("sessionId")
            if isinstance(tid, str) and isinstance(sid, str) and tid not in self._thread_set:
                self._thread_set.add(tid)
                self.threads.setdefault(sid, []).append(tid)
            comments = data.get("comments") or [None]
            comment = comments[0]
        else:
            comment = data
        if isinstance(comment, dict) and comment.get("depth") == 0:
            cid, tid = comment.get("id"), comment.get("threadId")
            if isinstance(cid, str) and isinstance(tid, str) and cid not in self._root_set:
                self._root_set.add(cid)
                self.roots.setdefault(tid, []).append(cid)
        return comment

    def on_payload(self, payload: bytes, now_us: int, own_conn: int) -> None:
        stamps = self._frames.get(payload)
        if stamps is None:
            try:
                decoded = orjson.loads(payload)
            except orjson.JSONDecodeError:
                return
            messages = decoded if isinstance(decoded, list) else [decoded]
            if not all(isinstance(m, dict) and m.get("type") == "event" for m in messages):
                # Acks, notifications, errors: this connection's own, handled one by one.
                for msg in messages:
                    if isinstance(msg, dict):
                        self._on_message(msg, now_us, own_conn)
                return
            stamps = self._frames[payload] = self._event_stamps(messages)
            if len(self._frames) > FRAME_CACHE:
                del self._frames[next(iter(self._frames))]
        self._received(stamps, now_us, own_conn)

    def _received(self, stamps: list[tuple[int, int]], now_us: int, own_conn: int) -> None:
        """One connection received these comment events: deliveries, or its own echoes."""
        st = self.stats
        for stamp_us, creator in stamps:
            if creator == own_conn:
                st.self_echoes += 1
            else:
                st.deliveries += 1
                st.latency_us.append(now_us - stamp_us)

    def _event_stamps(self, events: list[dict[str, Any]]) -> list[tuple[int, int]]:
        """Learn from a frame of events (once per frame); its comment events' stamps."""
        stamps = []
        for msg in events:
            if msg.get("name") in COMMENT_EVENTS:
                comment = self.learn(msg["name"], msg.get("data") or {})
                stamp = parse_stamp(str((comment or {}).get("body", "")))
                if stamp is not None:
                    stamps.append(stamp)
        return stamps

    def _on_message(self, msg: dict[str, Any], now_us: int, own_conn: int) -> None:
        st = self.stats
        kind = msg.get("type")
        if kind == "event":  # in a frame that also holds this connection's own messages
            self._received(self._event_stamps([msg]), now_us, own_conn)
        elif kind in ACKS:
            sent = self.pending.pop(str(msg.get("ref")), None)
            if sent is not None:
                st.acks += 1
                st.ack_latency_us.append(now_us - sent)
                st.last_ack_us = max(now_us, st.last_ack_us or now_us)
            result = msg.get("result")
            if isinstance(result, dict):
                self.learn(str(kind), result)
        elif kind == "notification":
            note = msg.get("notification") or {}
            if note.get("kind") == "mention":
                st.mentions += 1
                stamp = parse_stamp(str((note.get("data") or {}).get("excerpt", "")))
                if stamp is not None:
                    st.mention_latency_us.append(now_us - stamp[0])
        elif kind == "error":
            st.errors += 1
            if len(st.error_samples) < 5:
                st.error_samples.append(
                    f"{msg.get('code')}: {msg.get('message')} {msg.get('path')}"
                )
