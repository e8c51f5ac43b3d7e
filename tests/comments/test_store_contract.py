"""The comment stores' contract for batched creates, run over both stores.

``add_comments`` writes several comments at once: positions follow the batch's
order with no gap, each comment learns the thread's writers before it, and a
draft that cannot be placed fails alone without taking a position.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import attrs
import pytest

from runtime.comments.model import MAX_DEPTH, CommentRecord, Invalid, NotFound, ThreadRecord
from runtime.gateways.comment_store import AddedComment, CommentStore
from runtime.gateways.comment_store_memory import MemoryCommentStore
from runtime.gateways.comment_store_postgres import PostgresCommentStore
from runtime.gateways.database import open_database_gateway
from runtime.gateways.memory import UnstorableValue
from runtime.gateways.migrate import migrate

SID = "doc"


@pytest.fixture(params=["memory", pytest.param("postgres", marks=pytest.mark.integration)])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[CommentStore]:
    if request.param == "memory":
        yield MemoryCommentStore()
        return
    # (pytest-trio cannot hand an async fixture over by name: open the gateway here)
    url, options = request.getfixturevalue("database_url"), request.getfixturevalue("pg_options")
    async with open_database_gateway(url, min_size=1, max_size=2, options=options) as db:
        await migrate(db)
        yield PostgresCommentStore(db)


def _thread(tid: str, author: str = "owner") -> ThreadRecord:
    return ThreadRecord(
        id=tid,
        session_id=SID,
        author_id=author,
        anchor=None,
        metadata={},
        resolved=False,
        resolved_by=None,
        resolved_at=None,
        comment_count=1,
        created_at=1.0,
        updated_at=1.0,
    )


def _draft(
    cid: str, tid: str, author: str, parent: str | None = None, body: str = "hi"
) -> CommentRecord:
    return CommentRecord(
        id=cid,
        thread_id=tid,
        session_id=SID,
        parent_id=parent,
        depth=0,
        position=0,
        author_id=author,
        body=body,
        mentions=("x",),
        created_at=2.0,
        edited_at=None,
        deleted_at=None,
        deleted_by=None,
    )


async def _new_thread(store: CommentStore, tid: str) -> str:
    _, first = await store.create_thread(_thread(tid), _draft(f"{tid}-1", tid, "owner"))
    return first.id


def _added(result: AddedComment | Exception) -> AddedComment:
    assert isinstance(result, AddedComment), result
    return result


async def test_a_batch_takes_positions_in_order_per_thread(store: CommentStore) -> None:
    await _new_thread(store, "th_a")
    await _new_thread(store, "th_b")
    authors = [("th_a", "ann"), ("th_b", "bob"), ("th_a", "bob"), ("th_a", "ann"), ("th_b", "cy")]
    drafts = [_draft(f"c{i}", tid, who) for i, (tid, who) in enumerate(authors)]
    results = [_added(r) for r in await store.add_comments(drafts)]
    assert [(r.comment.thread_id, r.comment.position) for r in results] == [
        ("th_a", 2),
        ("th_b", 2),
        ("th_a", 3),
        ("th_a", 4),
        ("th_b", 3),
    ]
    # each sees the thread as it left it, and the writers before it (batch-mates included)
    assert [r.thread.comment_count for r in results] == [2, 2, 3, 4, 3]
    assert [r.participants for r in results] == [
        {"owner"},
        {"owner"},
        {"owner", "ann"},
        {"owner", "ann", "bob"},
        {"owner", "bob"},
    ]
    assert results[0].comment == attrs.evolve(drafts[0], position=2)
    listed = await store.list_comments(SID, "th_a")
    assert [(c.id, c.position) for c in listed] == [("th_a-1", 1), ("c0", 2), ("c2", 3), ("c3", 4)]
    assert listed[1] == results[0].comment
    thread = await store.get_thread(SID, "th_a")
    assert thread is not None and thread.comment_count == 4 and thread.updated_at == 2.0
    assert await store.participants(SID, "th_a") == {"owner", "ann", "bob"}


async def test_refused_drafts_fail_alone_and_take_no_position(store: CommentStore) -> None:
    root = await _new_thread(store, "th_a")
    other = await _new_thread(store, "th_b")
    drafts = [
        _draft("ok1", "th_a", "ann"),
        _draft("x1", "th_nope", "ann"),  # no such thread
        _draft("x2", "th_a", "ann", parent=other),  # parent in another thread
        _draft("x3", "th_a", "ann", parent="cm_nope"),  # no such parent
        _draft("x4", "th_a", "ann", body="nul\x00"),  # unstorable text
        _draft("ok2", "th_a", "bob", parent="ok1"),  # a reply to a batch-mate
        _draft("ok3", "th_a", "cy", parent=root),
    ]
    results = await store.add_comments(drafts)
    assert isinstance(results[1], NotFound) and results[1].path == "$.threadId"
    assert isinstance(results[2], NotFound) and results[2].path == "$.parentId"
    assert isinstance(results[3], NotFound) and results[3].path == "$.parentId"
    assert isinstance(results[4], UnstorableValue)
    placed = [_added(results[i]).comment for i in (0, 5, 6)]
    assert [(c.position, c.depth) for c in placed] == [(2, 0), (3, 1), (4, 1)]
    listed = await store.list_comments(SID, "th_a")
    assert [c.position for c in listed] == [1, 2, 3, 4]
    assert await store.get_comment(SID, "x2") is None


async def test_replies_nest_at_most_max_depth_within_one_batch(store: CommentStore) -> None:
    parent = await _new_thread(store, "th_a")
    drafts = []
    for depth in range(1, MAX_DEPTH + 2):
        drafts.append(_draft(f"d{depth}", "th_a", "ann", parent=parent))
        parent = f"d{depth}"
    results = await store.add_comments(drafts)
    assert [_added(r).comment.depth for r in results[:MAX_DEPTH]] == list(range(1, MAX_DEPTH + 1))
    assert isinstance(results[-1], Invalid) and results[-1].path == "$.parentId"
    thread = await store.get_thread(SID, "th_a")
    assert thread is not None and thread.comment_count == MAX_DEPTH + 1


async def test_a_thread_of_another_session_is_not_found(store: CommentStore) -> None:
    await _new_thread(store, "th_a")
    draft = attrs.evolve(_draft("c1", "th_a", "ann"), session_id="elsewhere")
    [result] = await store.add_comments([draft])
    assert isinstance(result, NotFound) and result.path == "$.threadId"
