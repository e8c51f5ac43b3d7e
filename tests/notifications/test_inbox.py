"""Notification inboxes on an in-memory node (MockClock): offline fan-out, grouping, all tabs."""

from __future__ import annotations

from functools import partial
from typing import Any

import attrs
import trio
import trio.testing

from actors.inbox.state import Incoming, group_key, groups_with, new_notification
from runtime.testing import open_test_server
from tests.e2e.conftest import Inbox

SID = "doc-1"


async def test_mentions_of_offline_users_arrive_on_connect(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_test_server() as server:
        service = server.node.collab.comments
        thread = (
            await service.create_thread(
                "alice", SID, body="hi @bob @carol", mentions=["bob", "carol"]
            )
        ).result
        await service.create_comment("dave", SID, thread["id"], body="me too")  # reply to alice
        await trio.sleep(1)
        async with server.websocket(token=server.token("bob")) as ws:
            bob = Inbox(ws)
            assert (await bob.next())["type"] == "welcome"
            snapshot = await bob.next_of("notifications")
            assert snapshot["unread"] == 1
            [mention] = snapshot["latest"]
            assert mention["kind"] == "mention" and mention["actorIds"] == ["alice"]
            assert mention["data"]["threadId"] == thread["id"]
        async with server.websocket(token=server.token("alice")) as ws:
            alice = Inbox(ws)
            snapshot = await alice.next_of("notifications")
            assert [n["kind"] for n in snapshot["latest"]] == ["reply"]


async def test_live_to_every_tab_grouped_and_read(autojump_clock: trio.testing.MockClock) -> None:
    # No pacing: every occurrence is its own write and push (the pacing test is below).
    async with open_test_server(notification_group_window=300.0, notification_pace=0.0) as server:
        service = server.node.collab.comments
        async with (
            server.websocket(token=server.token("alice")) as w1,
            server.websocket(token=server.token("alice")) as w2,
        ):
            tab1, tab2 = Inbox(w1), Inbox(w2)
            assert (await tab1.next())["type"] == "welcome"  # no unread: no snapshot
            assert (await tab2.next())["type"] == "welcome"
            thread = (await service.create_thread("alice", SID, body="root")).result
            for user in ("bob", "carol", "bob"):
                await service.create_comment(user, SID, thread["id"], body="reply")
            for tab in (tab1, tab2):
                counts = [
                    (await tab.next_of("notification"))["notification"]["count"] for _ in range(3)
                ]
                assert counts == [1, 2, 3]
            page = await tab1.request(type="notifications:list")
            [grouped] = page["result"]["notifications"]
            assert grouped["count"] == 3 and grouped["actorIds"] == ["carol", "bob"]
            await service.create_thread("bob", SID, body="@alice", mentions=["alice"])
            fresh = (await tab1.next_of("notification"))["notification"]
            assert fresh["kind"] == "mention" and fresh["count"] == 1  # another group
            read = await tab1.request(type="notification:read", id=grouped["id"])
            assert read["result"]["unread"] == 1
            assert (await tab2.next_of("notifications:unread"))["unread"] == 1
            missing = await tab1.request(type="notification:read", id="nt_missing")
            assert missing["code"] == "not_found"
            done = await tab1.request(type="notifications:read_all")
            assert done["result"] == {"marked": 1, "unread": 0}


async def test_occurrences_within_the_pace_are_one_write(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_test_server(notification_pace=10.0) as server:
        service = server.node.collab.comments
        async with server.websocket(token=server.token("alice")) as ws:
            tab = Inbox(ws)
            assert (await tab.next())["type"] == "welcome"
            thread = (await service.create_thread("alice", SID, body="root")).result
            await service.create_comment("bob", SID, thread["id"], body="one")
            first = (await tab.next_of("notification"))["notification"]
            first_at = trio.current_time()
            assert first["count"] == 1  # the first after a quiet spell: at once
            for user in ("carol", "bob"):
                await service.create_comment(user, SID, thread["id"], body="more")
            merged = (await tab.next_of("notification"))["notification"]
            # Both waited out the pace and were stored as one write of the same group.
            assert trio.current_time() - first_at >= 10.0
            assert merged["id"] == first["id"] and merged["count"] == 3
            assert merged["actorIds"] == ["carol", "bob"]
            page = await tab.request(type="notifications:list")
            assert [n["count"] for n in page["result"]["notifications"]] == [3]


async def test_custom_kind_over_http_and_revoked_readers(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_test_server(default_access="none") as server:
        await server.http("POST", "/v1/sessions", {"id": SID})
        await server.http("PUT", f"/v1/sessions/{SID}/members/alice", {"role": "editor"})
        await server.http("PUT", f"/v1/sessions/{SID}/members/bob", {"role": "viewer"})
        status, body = await server.http(
            "POST", "/v1/users/bob/notifications", {"kind": "export_ready", "data": {"url": "/x"}}
        )
        assert status == 201 and body["kind"] == "export_ready"
        service = server.node.collab.comments
        await service.create_thread("alice", SID, body="@bob", mentions=["bob"])
        await trio.sleep(1)  # past the inbox's pace: stored while bob could still read
        await server.http("DELETE", f"/v1/sessions/{SID}/members/bob")
        await service.create_thread("alice", SID, body="@bob again", mentions=["bob"])
        await trio.sleep(1)
        status, page = await server.http("GET", "/v1/users/bob/notifications")
        assert [n["kind"] for n in page["notifications"]] == ["mention", "export_ready"]
        status, body = await server.http(
            "POST", "/v1/users/bob/notifications", {"kind": "x", "sessionId": SID}
        )
        assert status == 403


def test_grouping_window() -> None:
    incoming = Incoming(kind="reply", session_id="s", thread_id="t", actor_id="a")
    first = new_notification("u", incoming, "n1", now=1000.0)
    assert first.group_key == "reply:s:t"
    assert groups_with(first, 1000.0 + 300, window=300)
    assert not groups_with(first, 1000.0 + 300.5, window=300)
    assert not groups_with(attrs.evolve(first, read_at=1001.0), 1002.0, window=300)
    assert not groups_with(first, 1000.0, window=0)
    assert group_key(Incoming(kind="custom")) is None


async def test_notifications_follow_sockets_that_close_or_change_user(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_test_server() as server:
        collab = server.node.collab
        service = collab.comments
        thread = (await service.create_thread("alice", SID, body="root")).result
        async with server.websocket(token=server.token("alice")) as w1:
            tab = Inbox(w1)
            assert (await tab.next())["type"] == "welcome"
            async with server.websocket(token=server.token("alice")) as w2:
                assert (await Inbox(w2).next())["type"] == "welcome"
            await trio.sleep(1)  # the second tab is gone
            await service.create_comment("bob", SID, thread["id"], body="reply")
            assert (await tab.next_of("notification"))["notification"]["kind"] == "reply"
            # The same socket authenticates as carol: carol's notifications follow it.
            assert (await tab.request(type="auth", token=server.token("carol")))["type"] == (
                "auth:ok"
            )
            await service.create_thread("bob", SID, body="@carol", mentions=["carol"])
            note = (await tab.next_of("notification"))["notification"]
            assert (note["userId"], note["kind"]) == ("carol", "mention")
        # Sockets that come and go do not pile up in the index of users' sockets.
        for n in range(150):
            async with server.websocket(token=server.token(f"u{n}")) as ws:
                assert (await Inbox(ws).next())["type"] == "welcome"
        await trio.sleep(1)
        assert sum(len(s) for s in collab._sockets.values()) <= 64 + 2


async def test_a_create_whose_requester_left_still_notifies(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_test_server() as server:
        service = server.node.collab.comments
        thread = (await service.create_thread("alice", SID, body="root")).result
        store = service.store
        add_comments = store.add_comments

        async def slow(drafts: Any) -> Any:
            await trio.sleep(1)  # the requester leaves while its comment is being written
            return await add_comments(drafts)

        store.add_comments = slow  # type: ignore[method-assign]
        with trio.CancelScope() as requester:
            requester.deadline = trio.current_time() + 0.5
            await service.create_comment(
                "bob", SID, thread["id"], body="@carol see this", mentions=["carol"]
            )
        assert requester.cancelled_caught
        await trio.sleep(5)
        # Stored and streamed all the same, so what follows it went out too.
        [_, comment] = (await service.get_thread(SID, thread["id"]))["comments"]
        assert comment["body"] == "@carol see this"
        inboxes = server.node.collab.notifications
        [mention] = await inboxes.list("carol", before=None, limit=10, unread_only=False)
        [reply] = await inboxes.list("alice", before=None, limit=10, unread_only=False)
        assert (mention.kind, reply.kind) == ("mention", "reply")


async def test_graceful_shutdown_stores_every_queued_notification(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_test_server() as server:
        collab = server.node.collab
        service = collab.comments
        notifications = collab.notifications
        add_batch, hand_out = notifications.add_batch, collab._hand_out

        async def slow(*args: Any) -> Any:
            await trio.sleep(0.01)  # inbox writes lag: notices queue up behind them
            return await add_batch(*args)

        async def slow_hand_out(notice: Any) -> None:
            await trio.sleep(0.01)  # and so does the fan-out to the inboxes
            await hand_out(notice)

        notifications.add_batch = slow  # type: ignore[method-assign]
        collab._hand_out = slow_hand_out  # type: ignore[method-assign]
        thread = (await service.create_thread("alice", SID, body="root")).result
        async with trio.open_nursery() as nursery:
            for n in range(40):
                nursery.start_soon(
                    partial(
                        service.create_comment,
                        f"u{n}",
                        SID,
                        thread["id"],
                        body=f"@u{n + 1} and @alice",
                        mentions=[f"u{n + 1}", "alice"],
                    )
                )
        assert collab._notices_queued.value > 0  # still on their way when the server stops
    # Every mention (40 users, and alice 40 times) reached its inbox.
    mentioned = [
        n
        for user in [f"u{n}" for n in range(1, 41)] + ["alice"]
        for n in await notifications.list(user, before=None, limit=100, unread_only=False)
        if n.kind == "mention"
    ]
    assert sum(n.count for n in mentioned) == 80


async def test_a_create_in_flight_at_shutdown_is_written_and_notifies(
    autojump_clock: trio.testing.MockClock,
) -> None:
    answers: list[object] = []
    async with trio.open_nursery() as requests:  # outlives the server: answered in its drain
        async with open_test_server() as server:
            collab = server.node.collab
            service = collab.comments
            thread = (await service.create_thread("alice", SID, body="root")).result
            add_comments = service.store.add_comments

            async def slow(drafts: Any) -> Any:
                await trio.sleep(1)  # still being written when the server stops
                return await add_comments(drafts)

            service.store.add_comments = slow  # type: ignore[method-assign]

            async def create() -> None:
                try:
                    change = await service.create_comment(
                        "bob", SID, thread["id"], body="@carol late", mentions=["carol"]
                    )
                    answers.append(change.seq)
                except Exception as exc:
                    answers.append(exc)

            requests.start_soon(create)
            await trio.sleep(0.5)
    assert [type(a) for a in answers] == [int]
    [mention] = await collab.notifications.list("carol", before=None, limit=10, unread_only=False)
    assert mention.kind == "mention"
