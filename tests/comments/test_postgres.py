"""Threading integrity on a real PostgreSQL (real clock): 100 users x 10 comments, concurrently.

Every comment notifies every earlier writer of the thread (``reply``): about
100 inbox deliveries per comment, 100,000 in all. They run behind the comments
(the fan-out task, then each inbox groups its queued occurrences and the
inbox writer stores the batches of every inbox waiting in one statement), so
the comments themselves stay fast: 100 x 10 took 161 s with a write per
delivery on the comment's path and takes about 16 s now (see the report in the commit adding this).
"""

from __future__ import annotations

from urllib.parse import quote

import pytest
import trio

from runtime.security.permissions import Role
from runtime.testing import open_test_server

pytestmark = pytest.mark.integration
USERS = 100
TOTAL = USERS * 10 + 1


@pytest.fixture
def schema_url(database_url: str, pg_schema: str) -> str:
    options = quote(f"-c search_path={pg_schema} -c application_name={pg_schema}")
    return f"{database_url}?options={options}"


async def test_concurrent_users_ten_comments_each_on_postgres(schema_url: str) -> None:
    with trio.fail_after(180):
        async with open_test_server(database_url=schema_url) as server:
            service = server.node.collab.comments
            inboxes = server.node.collab.notifications
            thread = (await service.create_thread("owner", "doc", body="root")).result

            async def user(n: int) -> None:
                for i in range(10):
                    await service.create_comment(f"user{n}", "doc", thread["id"], body=f"{n}:{i}")

            async with trio.open_nursery() as nursery:
                for n in range(USERS):
                    nursery.start_soon(user, n)
            got = await service.get_thread("doc", thread["id"])
            assert got["commentCount"] == TOTAL
            assert [c["position"] for c in got["comments"]] == list(range(1, TOTAL + 1))
            for n in range(USERS):
                mine = [c["body"] for c in got["comments"] if c["authorId"] == f"user{n}"]
                assert mine == [f"{n}:{i}" for i in range(10)]
            events = await server.node.store.read_since("doc", 0, TOTAL + 10)
            assert [e.data["position"] for e in events[1:]] == list(range(2, TOTAL + 1))

            # Every writer has one unread `reply` notification for the thread (one group
            # within the window) counting every later comment by someone else.
            authors = [c["authorId"] for c in got["comments"]]
            expected = {}
            for who in ["owner", *(f"user{n}" for n in range(USERS))]:
                first = authors.index(who)
                expected[who] = sum(1 for a in authors[first + 1 :] if a != who)

            async def counts() -> dict[str, list[int]]:
                out = {}
                for who in expected:
                    unread = await inboxes.list(who, before=None, limit=10, unread_only=True)
                    out[who] = [r.count for r in unread if r.kind == "reply"]
                return out

            want = {who: [n] if n else [] for who, n in expected.items()}
            # The fan-out runs behind the comments: poll until it has caught up.
            while (seen := await counts()) != want:  # noqa: ASYNC110 - database state
                await trio.sleep(0.2)
            assert expected["owner"] == TOTAL - 1
            for who in expected:
                assert await inboxes.unread_count(who) == len(want[who])
            [note] = await inboxes.list("owner", before=None, limit=1, unread_only=True)
            assert note.thread_id == thread["id"] and len(note.actor_ids) == 10
            assert seen == want

            # reactions and tombstones round-trip through PostgreSQL the same way
            cid = got["comments"][1]["id"]
            await service.react("a", "doc", cid, "👍", add=True)
            await service.react("b", "doc", cid, "👍", add=True)
            deleted = await service.delete_comment("user0", Role.OWNER, "doc", cid)
            assert deleted.result["deleted"] and deleted.result["reactions"] == {}
