"""SessionLog: seq assignment and resume plans."""

from __future__ import annotations

import orjson

from actors.session.state import SessionLog


def _log(n: int, memory: int = 5) -> SessionLog:
    log = SessionLog("s", memory_limit=memory)
    for i in range(n):
        log.append("e", {"i": i}, "u", ts=float(i), durable=True)
    return log


def test_seqs_are_contiguous_and_events_encoded_once() -> None:
    log = _log(3)
    assert log.seq == 3
    plan = log.replay(0, has_store=True)
    assert [e.seq for e in plan.from_memory] == [1, 2, 3]
    assert orjson.loads(plan.from_memory[0].encoded) == {
        "type": "event",
        "sessionId": "s",
        "seq": 1,
        "name": "e",
        "data": {"i": 0},
        "userId": "u",
        "ts": 0.0,
    }


def test_resume_inside_memory_window() -> None:
    plan = _log(8).replay(5, has_store=True)
    assert [e.seq for e in plan.from_memory] == [6, 7, 8]
    assert plan.store_after is None and not plan.reset


def test_resume_older_than_memory_reads_the_store_first() -> None:
    plan = _log(8).replay(1, has_store=True)  # memory holds 4..8
    assert (plan.store_after, plan.store_until) == (1, 3)
    assert [e.seq for e in plan.from_memory] == [4, 5, 6, 7, 8]


def test_resume_past_retention_or_from_the_future_resets() -> None:
    log = _log(8)
    log.first_retained = 3
    assert log.replay(1, has_store=True).reset
    assert log.replay(99, has_store=True).reset
    assert log.replay(1, has_store=False).reset
    assert log.replay(8, has_store=True).from_memory == []


def test_forget_after_rolls_back_unwritten_events() -> None:
    log = _log(5)
    log.forget_after(3)
    assert log.seq == 3
    assert log.append("e", None, "u", 0.0, True).seq == 4


def test_ephemeral_events_take_no_seq_and_are_never_replayed() -> None:
    log = _log(2)
    cursor = log.append("cursor", {"x": 1}, "u", 0.0, durable=False)
    assert cursor.seq == 2 and cursor.stored is None
    assert orjson.loads(cursor.encoded)["ephemeral"] is True
    # the durable log stays contiguous
    assert log.append("e", None, "u", 0.0, durable=True).seq == 3
    assert [e.seq for e in log.replay(0, has_store=True).from_memory] == [1, 2, 3]
