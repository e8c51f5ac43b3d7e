"""Comment bodies and thread metadata/anchors are stored encrypted; rotation re-encrypts them.

PostgreSQL tests use the real clock and ``trio.fail_after``; the in-memory one runs
under the MockClock.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest
import trio
import trio.testing

from runtime.admin_cli import rotate_keys
from runtime.cli import main
from runtime.comments.model import ThreadFilter
from runtime.config import Settings
from runtime.gateways.comment_store_memory import MemoryCommentStore
from runtime.security.crypto import new_key_b64
from runtime.security.permissions import Role
from runtime.testing import open_test_server
from runtime.testing.server import TestServer
from tests.e2e.conftest import Inbox

K1 = new_key_b64()
K2 = new_key_b64()
SID = "doc-secret"
BODY = "the launch date is the 14th"
REPLY = "keep it quiet"
META = {"kind": "confidential", "n": 3}
ANCHOR = {"block": "p7", "quote": "salary bands"}
PLAINTEXTS = [BODY, REPLY, "confidential", "salary bands"]


async def _make_thread(server: TestServer) -> dict[str, Any]:
    async with server.websocket(token=server.token("alice")) as ws:
        inbox = Inbox(ws)
        assert (await inbox.next())["type"] == "welcome"
        assert (await inbox.request(type="session:join", sessionId=SID))["type"] == (
            "session:joined"
        )
        created = await inbox.request(
            type="thread:create", sessionId=SID, body=BODY, anchor=ANCHOR, metadata=META
        )
        assert created["type"] == "thread:create:ok", created
        thread: dict[str, Any] = created["result"]
        reply = await inbox.request(
            type="comment:create", sessionId=SID, threadId=thread["id"], body=REPLY
        )
        assert reply["type"] == "comment:create:ok", reply
        other = await inbox.request(
            type="thread:create", sessionId=SID, body="public", metadata={"kind": "other"}
        )
        assert other["type"] == "thread:create:ok", other
        return thread


async def _ws_get(server: TestServer, thread_id: str) -> dict[str, Any]:
    async with server.websocket(token=server.token("bob")) as ws:
        inbox = Inbox(ws)
        await inbox.next()
        await inbox.request(type="session:join", sessionId=SID)
        got = await inbox.request(type="thread:get", sessionId=SID, threadId=thread_id)
        assert got["type"] == "thread:get:ok", got
        result: dict[str, Any] = got["result"]
        return result


def _assert_readable(thread: dict[str, Any]) -> None:
    assert thread["metadata"] == META
    assert thread["anchor"] == ANCHOR
    assert [c["body"] for c in thread["comments"]] == [BODY, REPLY]


async def _assert_reads(server: TestServer, thread_id: str) -> None:
    _assert_readable(await _ws_get(server, thread_id))
    status, got = await server.http("GET", f"/v1/sessions/{SID}/threads/{thread_id}")
    assert status == 200, got
    _assert_readable(got)
    status, page = await server.http(
        "GET", f"/v1/sessions/{SID}/threads?metadata.kind=confidential"
    )
    assert status == 200, page
    assert [t["id"] for t in page["threads"]] == [thread_id]
    status, page = await server.http("GET", f"/v1/sessions/{SID}/threads?metadata.n=3")
    assert [t["id"] for t in page["threads"]] == [thread_id]
    status, page = await server.http("GET", f"/v1/sessions/{SID}/threads?metadata.n=4")
    assert page["threads"] == []
    where = ThreadFilter(anchor=ANCHOR, match_anchor=True)
    listed = await server.node.collab.comments.list_threads(SID, where, None, 50)
    assert [t["id"] for t in listed["threads"]] == [thread_id]


def _raw_rows(raw_sql: psycopg.Connection[Any]) -> tuple[list[Any], list[Any]]:
    threads = raw_sql.execute(
        "SELECT id, metadata::text, anchor::text, metadata_enc, metadata_idx, key_id"
        " FROM comment_threads ORDER BY pos"
    ).fetchall()
    comments = raw_sql.execute(
        "SELECT id, body, body_enc, key_id FROM comments ORDER BY thread_id, position"
    ).fetchall()
    return threads, comments


def _assert_sealed(raw_sql: psycopg.Connection[Any], key_id: str) -> None:
    # the stream's copies of threads and comments (thread:created, comment:*) are sealed too
    events = raw_sql.execute(
        "SELECT name, data::text, data_enc, key_id FROM session_events ORDER BY seq"
    ).fetchall()
    assert events and all(name.split(":")[0] in ("thread", "comment") for name, *_ in events)
    for _, data, enc, kid in events:
        assert data is None and enc is not None and kid == key_id
    threads, comments = _raw_rows(raw_sql)
    assert len(threads) == 2 and len(comments) == 3
    for _, metadata, anchor, enc, idx, kid in threads:
        assert metadata is None and anchor is None and kid == key_id
        assert enc is not None and idx
    for _, body, enc, kid in comments:
        assert body is None and enc is not None and kid == key_id
    dump = repr(threads) + repr(comments)
    for text in PLAINTEXTS:
        assert text not in dump
        assert text.encode() not in b"".join(bytes(r[3]) for r in threads)
        assert text.encode() not in b"".join(bytes(r[2]) for r in comments)


pytestmark = pytest.mark.integration


async def test_comments_are_ciphertext_in_the_database_and_plaintext_on_read(
    schema_url: str, raw_sql: psycopg.Connection[Any]
) -> None:
    with trio.fail_after(60):
        async with open_test_server(database_url=schema_url, encryption_keys=f"k1:{K1}") as server:
            thread = await _make_thread(server)
            _assert_sealed(raw_sql, "k1")
            await _assert_reads(server, thread["id"])
            # edits and metadata updates stay sealed
            service = server.node.collab.comments
            cid = thread["comments"][0]["id"]
            await service.edit_comment("alice", SID, cid, body=BODY)
            await service.update_thread(
                "alice",
                Role.OWNER,
                SID,
                thread["id"],
                metadata=META,
                anchor=ANCHOR,
                set_anchor=True,
            )
        # a fresh server reads it all back from the database
        async with open_test_server(database_url=schema_url, encryption_keys=f"k1:{K1}") as server:
            await _assert_reads(server, thread["id"])
        _assert_sealed(raw_sql, "k1")


async def test_rotation_reencrypts_comments_and_threads(
    schema_url: str, raw_sql: psycopg.Connection[Any], tmp_path: Path
) -> None:
    with trio.fail_after(90):
        async with open_test_server(database_url=schema_url, encryption_keys=f"k1:{K1}") as server:
            thread = await _make_thread(server)
        both = f"k1:{K1},k2:{K2}"
        settings = Settings(
            database_url=schema_url,
            data_dir=str(tmp_path),
            encryption_keys=both,
            encryption_key_current="k2",
        )
        # old rows stay readable (and filterable) once k2 is current, before rotation
        async with open_test_server(
            database_url=schema_url, encryption_keys=both, encryption_key_current="k2"
        ) as server:
            await _assert_reads(server, thread["id"])
        assert await rotate_keys(settings, batch_size=2) == 0
        _assert_sealed(raw_sql, "k2")
        # k1 is gone: everything still reads and filters under k2 alone
        async with open_test_server(database_url=schema_url, encryption_keys=f"k2:{K2}") as server:
            await _assert_reads(server, thread["id"])
        assert await rotate_keys(settings, batch_size=2) == 0  # idempotent


async def test_keys_rotate_command_reports_comment_rows(
    schema_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with trio.fail_after(60):
        async with open_test_server(database_url=schema_url, encryption_keys=f"k1:{K1}") as server:
            await _make_thread(server)
    env = {
        "TANDEM_DATABASE_URL": schema_url,
        "TANDEM_ENCRYPTION_KEYS": f"k1:{K1},k2:{K2}",
        "TANDEM_ENCRYPTION_KEY_CURRENT": "k2",
        "TANDEM_DATA_DIR": str(tmp_path),
    }
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, value)
        rc = await trio.to_thread.run_sync(main, ["keys", "rotate", "--batch-size", "2"])
    assert rc == 0
    out = capsys.readouterr().out
    # 2 threads + 3 comments: threads in 1 batch of 2, comments in batches of 2 and 1
    assert "5 comment/thread rows re-encrypted under 'k2' in 3 batches; 0 rows left" in out


async def test_plaintext_without_keys_and_old_plain_rows_stay_readable(
    schema_url: str, raw_sql: psycopg.Connection[Any]
) -> None:
    with trio.fail_after(60):
        async with open_test_server(database_url=schema_url) as server:
            plain = await _make_thread(server)
        threads, comments = _raw_rows(raw_sql)
        assert all(r[3] is None and r[5] is None for r in threads)
        assert {r[1] for r in comments} == {BODY, REPLY, "public"}
        # keys configured later: old plaintext rows read and filter, new rows are sealed
        async with open_test_server(database_url=schema_url, encryption_keys=f"k1:{K1}") as server:
            _assert_readable(await _ws_get(server, plain["id"]))
            status, page = await server.http(
                "GET", f"/v1/sessions/{SID}/threads?metadata.kind=confidential"
            )
            assert status == 200, page
            assert [t["id"] for t in page["threads"]] == [plain["id"]]
            sealed = await _make_thread(server)
            _, page = await server.http(
                "GET", f"/v1/sessions/{SID}/threads?metadata.kind=confidential"
            )
            assert [t["id"] for t in page["threads"]] == [plain["id"], sealed["id"]]


async def test_memory_store_keeps_comments_sealed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_test_server(encryption_keys=f"k1:{K1}") as server:
        store = server.node.collab.stores.comments
        assert isinstance(store, MemoryCommentStore) and store.sealer is not None
        thread = await _make_thread(server)
        await _assert_reads(server, thread["id"])
        kept = repr(store._threads) + repr(store._comments)
        for text in PLAINTEXTS:
            assert text not in kept
