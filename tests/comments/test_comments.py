"""Threaded comments end to end on an in-memory node (MockClock): live events, errors, HTTP."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from runtime.comments.model import emoji_problem
from runtime.testing import open_test_server
from runtime.testing.server import TestServer
from tests.e2e.conftest import Inbox

SID = "doc-1"


async def _joined(server: TestServer, user: str, ws: Any) -> Inbox:
    inbox = Inbox(ws)
    assert (await inbox.next())["type"] == "welcome"
    reply = await inbox.request(type="session:join", sessionId=SID)
    assert reply["type"] == "session:joined", reply
    return inbox


async def test_thread_lifecycle_is_live_and_readable(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(600):
        await _lifecycle()


async def _lifecycle() -> None:
    async with open_test_server() as server:
        async with (
            server.websocket(token=server.token("alice")) as wa,
            server.websocket(token=server.token("bob")) as wb,
            server.websocket(token=server.token("carol")) as wc,
        ):
            alice, bob = await _joined(server, "alice", wa), await _joined(server, "bob", wb)
            carol = await _joined(server, "carol", wc)  # only listens
            created = await alice.request(
                type="thread:create",
                sessionId=SID,
                body="Is this right?",
                anchor={"block": "p3", "offset": 4},
                metadata={"kind": "question"},
                mentions=["bob"],
            )
            assert created["type"] == "thread:create:ok"
            thread = created["result"]
            first = thread["comments"][0]
            event = await carol.next_of("event")
            assert event["name"] == "thread:created" and event["data"] == thread

            reply = await bob.request(
                type="comment:create",
                sessionId=SID,
                threadId=thread["id"],
                parentId=first["id"],
                body="Yes",
            )
            assert reply["result"]["depth"] == 1 and reply["result"]["position"] == 2
            cid = reply["result"]["id"]
            edited = await bob.request(
                type="comment:edit", sessionId=SID, commentId=cid, body="Yes, it is"
            )
            assert edited["result"]["editedAt"] is not None
            for emoji in ("👍", "👍🏽", "🇫🇷", "👨‍👩‍👧"):
                r = await alice.request(
                    type="reaction:add", sessionId=SID, commentId=cid, emoji=emoji
                )
                assert r["type"] == "reaction:add:ok", r
            again = await alice.request(
                type="reaction:add", sessionId=SID, commentId=cid, emoji="👍"
            )
            assert again["seq"] is None  # one per user per emoji: nothing changed
            await bob.request(type="reaction:add", sessionId=SID, commentId=cid, emoji="👍")
            removed = await alice.request(
                type="reaction:remove", sessionId=SID, commentId=cid, emoji="🇫🇷"
            )
            assert "🇫🇷" not in removed["result"]["reactions"]
            resolved = await bob.request(
                type="thread:resolve", sessionId=SID, threadId=thread["id"]
            )
            assert resolved["result"]["resolved"] is True
            deleted = await alice.request(
                type="comment:delete", sessionId=SID, commentId=first["id"]
            )
            assert deleted["result"]["deleted"] is True and deleted["result"]["body"] == ""

            got = await alice.request(type="thread:get", sessionId=SID, threadId=thread["id"])
            comments = got["result"]["comments"]
            assert [c["position"] for c in comments] == [1, 2]
            assert comments[0]["deleted"] and comments[1]["body"] == "Yes, it is"
            assert comments[1]["reactions"]["👍"] == {"count": 2, "users": ["alice", "bob"]}

            names = []
            while len(names) < 10:
                names.append((await carol.next_of("event"))["name"])
            assert names == [
                "comment:created",
                "comment:edited",
                "reaction:added",
                "reaction:added",
                "reaction:added",
                "reaction:added",
                "reaction:added",
                "reaction:removed",
                "thread:resolved",
                "comment:deleted",
            ]
            reopened = await alice.request(
                type="thread:reopen", sessionId=SID, threadId=thread["id"]
            )
            assert reopened["result"]["resolved"] is False

            listed = await alice.request(type="thread:list", sessionId=SID, resolved=False)
            assert [t["id"] for t in listed["result"]["threads"]] == [thread["id"]]
            by_meta = await alice.request(
                type="thread:list", sessionId=SID, metadata={"kind": "other"}
            )
            assert by_meta["result"]["threads"] == []
            by_anchor = await alice.request(
                type="thread:list", sessionId=SID, anchor={"offset": 4, "block": "p3"}
            )
            assert len(by_anchor["result"]["threads"]) == 1


async def test_listing_pages_and_filters(autojump_clock: trio.testing.MockClock) -> None:
    async with open_test_server() as server:
        service = server.node.collab.comments
        ids = []
        for i in range(7):
            change = await service.create_thread(
                "alice" if i % 2 else "bob", SID, body=f"t{i}", metadata={"n": i % 3}
            )
            ids.append(change.result["id"])
        await service.resolve("bob", SID, ids[0], resolved=True)
        seen, after = [], None
        while True:
            status, page = await server.http(
                "GET", f"/v1/sessions/{SID}/threads?limit=3" + (f"&after={after}" if after else "")
            )
            assert status == 200
            seen += [t["id"] for t in page["threads"]]
            after = page["next"]
            if after is None:
                break
        assert seen == ids
        _, page = await server.http("GET", f"/v1/sessions/{SID}/threads?author=alice")
        assert [t["id"] for t in page["threads"]] == ids[1::2]
        _, page = await server.http("GET", f"/v1/sessions/{SID}/threads?metadata.n=0")
        assert [t["id"] for t in page["threads"]] == [ids[0], ids[3], ids[6]]
        _, page = await server.http("GET", f"/v1/sessions/{SID}/threads?resolved=true")
        assert [t["id"] for t in page["threads"]] == [ids[0]]


async def test_hundred_users_ten_comments_each(autojump_clock: trio.testing.MockClock) -> None:
    async with open_test_server() as server:
        async with server.websocket(token=server.token("watcher")) as ws:
            watcher = await _joined(server, "watcher", ws)
            service = server.node.collab.comments
            thread = (await service.create_thread("owner", SID, body="root")).result

            async def user(n: int) -> None:
                for i in range(10):
                    await service.create_comment(
                        f"user{n}", SID, thread["id"], body=f"user{n} comment {i}"
                    )

            async with trio.open_nursery() as nursery:
                for n in range(100):
                    nursery.start_soon(user, n)

            got = await service.get_thread(SID, thread["id"])
            comments = got["comments"]
            assert got["commentCount"] == 1001 and len(comments) == 1001
            assert [c["position"] for c in comments] == list(range(1, 1002))
            for n in range(100):
                mine = [c["body"] for c in comments if c["authorId"] == f"user{n}"]
                assert mine == [f"user{n} comment {i}" for i in range(10)]
            events = [e for e in await watcher.events(SID, 1001)]
            created = [e["data"]["position"] for e in events if e["name"] == "comment:created"]
            assert created == list(range(2, 1002))  # stream order is thread order


async def test_error_cases(autojump_clock: trio.testing.MockClock) -> None:
    async with open_test_server() as server:
        async with (
            server.websocket(token=server.token("alice")) as wa,
            server.websocket(token=server.token("bob")) as wb,
        ):
            alice, bob = await _joined(server, "alice", wa), await _joined(server, "bob", wb)
            r = await alice.request(
                type="comment:create", sessionId=SID, threadId="th_nope", body="x"
            )
            assert (r["code"], r["path"]) == ("not_found", "$.threadId")
            t = (await alice.request(type="thread:create", sessionId=SID, body="mine"))["result"]
            cid = t["comments"][0]["id"]
            r = await bob.request(type="comment:edit", sessionId=SID, commentId=cid, body="hax")
            assert r["code"] == "forbidden"
            r = await bob.request(type="comment:delete", sessionId=SID, commentId=cid)
            assert r["code"] == "forbidden"
            for emoji in ("lol", "+1", "", "a👍", "👍" * 40):
                r = await bob.request(
                    type="reaction:add", sessionId=SID, commentId=cid, emoji=emoji
                )
                assert (r["code"], r["path"]) == ("invalid_message", "$.emoji"), emoji
            r = await alice.request(type="thread:create", sessionId=SID, body="   ")
            assert (r["code"], r["path"]) == ("invalid_message", "$.body")
            r = await alice.request(type="thread:create", sessionId=SID, body="x" * 10_001)
            assert (r["code"], r["path"]) == ("invalid_message", "$.body")
            r = await alice.request(
                type="thread:create",
                sessionId=SID,
                body="ok",
                metadata={f"k{i}": i for i in range(65)},
            )
            assert (r["code"], r["path"]) == ("invalid_message", "$.metadata")
            r = await alice.request(
                type="comment:create", sessionId=SID, threadId=t["id"], body="x", parentId="cm_no"
            )
            assert (r["code"], r["path"]) == ("not_found", "$.parentId")
            # nesting stops at the documented depth
            parent = cid
            for _ in range(8):
                r = await alice.request(
                    type="comment:create",
                    sessionId=SID,
                    threadId=t["id"],
                    body="d",
                    parentId=parent,
                )
                parent = r["result"]["id"]
            r = await alice.request(
                type="comment:create", sessionId=SID, threadId=t["id"], body="d", parentId=parent
            )
            assert (r["code"], r["path"]) == ("invalid_message", "$.parentId")
            # nothing changed on error
            got = await alice.request(type="thread:get", sessionId=SID, threadId=t["id"])
            assert got["result"]["commentCount"] == 9
            assert got["result"]["comments"][0]["body"] == "mine"
            assert got["result"]["comments"][0]["reactions"] == {}


async def test_non_member_in_production_is_refused(autojump_clock: trio.testing.MockClock) -> None:
    secret = "p" * 8 + "0123456789abcdefghijklmnopqrstuvwxyz"
    async with open_test_server(
        profile="production", jwt_secret=secret, api_key="k" * 32
    ) as server:
        headers = {"authorization": "Bearer " + "k" * 32}
        await server.http("POST", "/v1/sessions", {"id": SID}, headers)
        await server.http("PUT", f"/v1/sessions/{SID}/members/viewer", {"role": "viewer"}, headers)
        async with server.websocket(token=server.token("mallory")) as ws:
            m = Inbox(ws)
            await m.next()
            r = await m.request(type="session:join", sessionId=SID)
            assert r["code"] == "forbidden"
            r = await m.request(type="thread:create", sessionId=SID, body="hi")
            assert r["type"] == "error" and r["code"] in ("forbidden", "not_joined")
        async with server.websocket(token=server.token("viewer")) as ws:
            v = Inbox(ws)
            await v.next()
            assert (await v.request(type="session:join", sessionId=SID))["type"] == "session:joined"
            r = await v.request(type="thread:create", sessionId=SID, body="hi")
            assert r["code"] == "forbidden"
        status, body = await server.http(
            "POST", f"/v1/sessions/{SID}/threads", {"userId": "mallory", "body": "hi"}, headers
        )
        assert status == 403 and body["error"]["code"] == "forbidden"
        _, page = await server.http("GET", f"/v1/sessions/{SID}/threads", None, headers)
        assert page["threads"] == []


async def test_http_api_round_trip(autojump_clock: trio.testing.MockClock) -> None:
    async with open_test_server() as server:
        status, thread = await server.http(
            "POST", f"/v1/sessions/{SID}/threads", {"userId": "alice", "body": "hi"}
        )
        assert status == 201 and thread["seq"] == 1
        status, comment = await server.http(
            "POST",
            f"/v1/sessions/{SID}/threads/{thread['id']}/comments",
            {"userId": "bob", "body": "hey", "mentions": ["alice"]},
        )
        assert status == 201 and comment["position"] == 2
        status, body = await server.http(
            "PATCH",
            f"/v1/sessions/{SID}/comments/{comment['id']}",
            {"userId": "alice", "body": "x"},
        )
        assert status == 403
        status, body = await server.http(
            "POST",
            f"/v1/sessions/{SID}/comments/{comment['id']}/reactions",
            {"userId": "alice", "emoji": "nope"},
        )
        assert status == 400 and body["error"]["path"] == "$.emoji"
        status, _ = await server.http("GET", f"/v1/sessions/{SID}/threads/th_missing")
        assert status == 404
        status, body = await server.http(
            "POST", f"/v1/sessions/{SID}/threads/{thread['id']}/resolve", {"userId": "bob"}
        )
        assert status == 200 and body["resolved"] is True
        status, events = await server.http("GET", f"/v1/sessions/{SID}/events")
        assert [e["name"] for e in events["events"]] == [
            "thread:created",
            "comment:created",
            "thread:resolved",
        ]


@pytest.mark.parametrize("emoji", ["👍", "❤️", "👍🏽", "🇫🇷", "👨‍👩‍👧", "1️⃣", "🏳️‍🌈"])
def test_emoji_accepted(emoji: str) -> None:
    assert emoji_problem(emoji) is None


@pytest.mark.parametrize("text", ["", "ok", "+1", ":)", "é", "a👍", "👍 ", "x" * 33, "\u200d"])
def test_emoji_refused(text: str) -> None:
    assert emoji_problem(text) is not None
