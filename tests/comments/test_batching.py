"""Group commit of new comments on a real PostgreSQL (real clock).

Creates racing into one session are written in batches by the session's writer
(runtime/comments/writer.py): whatever the batching, positions stay 1, 2, 3, ...
per thread, the stream carries the ``comment:created`` events in position order,
each create gets the seq of its own event, and a bad request fails alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import pytest
import trio

from runtime.comments.model import CommentRecord, NotFound
from runtime.comments.writer import CommentWriters
from runtime.gateways.comment_store import AddedComment
from runtime.testing import open_test_server

pytestmark = pytest.mark.integration
SID = "doc"


@pytest.fixture
def schema_url(database_url: str, pg_schema: str) -> str:
    options = quote(f"-c search_path={pg_schema} -c application_name={pg_schema}")
    return f"{database_url}?options={options}"


# A session mailbox of 4 makes a batch's events wait for room part way: still in order.
@pytest.mark.parametrize("mailbox_size", [1024, 4])
async def test_concurrent_creates_keep_positions_events_and_seqs(
    schema_url: str, mailbox_size: int
) -> None:
    with trio.fail_after(60):
        async with open_test_server(database_url=schema_url, mailbox_size=mailbox_size) as server:
            service = server.node.collab.comments
            store = service.store
            batches: list[int] = []
            add_comments = store.add_comments

            async def counted(drafts: Sequence[CommentRecord]) -> list[AddedComment | Exception]:
                batches.append(len(drafts))
                return await add_comments(drafts)

            store.add_comments = counted  # type: ignore[method-assign]
            first = (await service.create_thread("owner", SID, body="a")).result
            second = (await service.create_thread("owner", SID, body="b")).result
            root = first["comments"][0]["id"]
            changes: dict[str, tuple[int, dict[str, Any]]] = {}
            refused: list[Exception] = []

            async def create(n: int) -> None:
                thread = (first, second)[n % 2]["id"]
                parent = root if n % 5 == 0 and thread == first["id"] else None
                if n == 25:
                    parent = "cm_nope"  # fails alone, whatever batch it lands in
                try:
                    change = await service.create_comment(
                        f"user{n % 7}", SID, thread, body=f"c{n}", parent_id=parent
                    )
                except NotFound as exc:
                    refused.append(exc)
                    return
                assert change.seq is not None
                changes[f"c{n}"] = (change.seq, change.result)

            async with trio.open_nursery() as nursery:
                for n in range(50):
                    nursery.start_soon(create, n)

            assert len(refused) == 1 and refused[0].path == "$.parentId"
            assert len(changes) == 49
            # they were written in batches (the writer took what queued while it wrote)
            assert sum(batches) == 50 and max(batches) > 1
            events = await server.node.store.read_since(SID, 0, 100)
            created = [e for e in events if e.name == "comment:created"]
            assert len(created) == 49
            for thread in (first, second):
                got = await service.get_thread(SID, thread["id"])
                mine = [c for c in got["comments"]]
                assert [c["position"] for c in mine] == list(range(1, len(mine) + 1))
                # events of the thread in position order, each acked with its own seq
                streamed = [e.data for e in created if e.data["threadId"] == thread["id"]]
                assert [d["position"] for d in streamed] == list(range(2, len(mine) + 1))
                for event in (e for e in created if e.data["threadId"] == thread["id"]):
                    seq, result = changes[event.data["body"]]
                    assert seq == event.seq and result == event.data
                assert [c["body"] for c in mine[1:]] == [d["body"] for d in streamed]
            assert [e.seq for e in events] == list(range(1, len(events) + 1))


async def test_a_row_the_database_refuses_fails_alone(schema_url: str) -> None:
    # A duplicate id breaks the batch's transaction: the batch is written again one
    # comment at a time, so only that comment fails.
    with trio.fail_after(60):
        async with open_test_server(database_url=schema_url) as server:
            service = server.node.collab.comments
            thread = (await service.create_thread("owner", SID, body="a")).result
            taken = thread["comments"][0]["id"]
            drafts = [
                CommentRecord(
                    id=cid,
                    thread_id=thread["id"],
                    session_id=SID,
                    parent_id=None,
                    depth=0,
                    position=0,
                    author_id="ann",
                    body=cid,
                    mentions=(),
                    created_at=0.0,
                    edited_at=None,
                    deleted_at=None,
                    deleted_by=None,
                )
                for cid in ("cm_one", taken, "cm_two")
            ]
            results = await _write_together(service.writers, drafts)
            assert isinstance(results[1], Exception)
            assert [r.seq for r in results if not isinstance(r, Exception)] == [2, 3]
            got = await service.get_thread(SID, thread["id"])
            assert [(c["id"], c["position"]) for c in got["comments"]] == [
                (taken, 1),
                ("cm_one", 2),
                ("cm_two", 3),
            ]


async def _write_together(writers: CommentWriters, drafts: list[CommentRecord]) -> list[Any]:
    """The drafts as one batch, straight through the writer's two stages."""
    batches = writers._batches
    async with batches.locks.taking_turn(SID) as turn:
        staged = await batches.stage(SID, drafts, turn)
        return list(await batches.finish(SID, staged))
