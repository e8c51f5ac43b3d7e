"""Threading integrity on a real PostgreSQL (real clock): 30 users x 10 comments, concurrently.

Scaled down from the in-memory 100 x 10: every comment notifies every earlier
participant of the thread (``reply``), so a 100-author thread costs about 100
inbox writes per comment on PostgreSQL — see the report's open items.
"""

from __future__ import annotations

from urllib.parse import quote

import pytest
import trio

from runtime.security.permissions import Role
from runtime.testing import open_test_server

pytestmark = pytest.mark.integration
USERS = 30
TOTAL = USERS * 10 + 1


@pytest.fixture
def schema_url(database_url: str, pg_schema: str) -> str:
    options = quote(f"-c search_path={pg_schema} -c application_name={pg_schema}")
    return f"{database_url}?options={options}"


async def test_concurrent_users_ten_comments_each_on_postgres(schema_url: str) -> None:
    with trio.fail_after(120):
        async with open_test_server(database_url=schema_url) as server:
            service = server.node.collab.comments
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
            # reactions and tombstones round-trip through PostgreSQL the same way
            cid = got["comments"][1]["id"]
            await service.react("a", "doc", cid, "👍", add=True)
            await service.react("b", "doc", cid, "👍", add=True)
            deleted = await service.delete_comment("user0", Role.OWNER, "doc", cid)
            assert deleted.result["deleted"] and deleted.result["reactions"] == {}
