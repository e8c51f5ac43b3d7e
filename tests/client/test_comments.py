"""Client comment and notification methods against the real server, in-process (autojump clock)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import trio
import trio.testing

from client import TandemError, open_tandem_client
from tests.client.conftest import Connect
from tests.client.helpers import collect_events, next_message

SID = "doc"


async def test_thread_replies_reactions_resolve_round_trip(
    autojump_clock: trio.testing.MockClock, connect_as: Callable[[str], Connect]
) -> None:
    async with (
        open_tandem_client(connect=connect_as("alice")) as alice,
        open_tandem_client(connect=connect_as("bob")) as bob,
    ):
        await alice.join(SID)
        await bob.join(SID)
        thread = await alice.create_thread(
            SID, "Is this right?", anchor={"block": "p3"}, metadata={"kind": "question"}
        )
        first = thread["comments"][0]
        assert (first["position"], first["depth"], first["authorId"]) == (1, 0, "alice")
        reply = await bob.create_comment(SID, thread["id"], "Yes", parent_id=first["id"])
        assert (reply["position"], reply["depth"], reply["parentId"]) == (2, 1, first["id"])
        flat = await bob.reply(SID, thread["id"], "Also")
        assert (flat["position"], flat["depth"]) == (3, 0)
        edited = await bob.edit_comment(SID, reply["id"], "Yes, it is")
        assert edited["body"] == "Yes, it is" and edited["editedAt"] is not None

        reacted = await alice.add_reaction(SID, reply["id"], "👍")
        assert reacted["reactions"]["👍"] == {"count": 1, "users": ["alice"]}
        reacted = await bob.add_reaction(SID, reply["id"], "👍")
        assert reacted["reactions"]["👍"]["count"] == 2
        reacted = await alice.remove_reaction(SID, reply["id"], "👍")
        assert reacted["reactions"]["👍"] == {"count": 1, "users": ["bob"]}

        assert (await bob.resolve_thread(SID, thread["id"]))["resolved"] is True
        assert (await bob.resolve_thread(SID, thread["id"]))["resolved"] is True  # no-op
        assert await alice.list_threads(SID, resolved=False) == {"threads": [], "next": None}
        assert (await alice.reopen_thread(SID, thread["id"]))["resolved"] is False
        updated = await alice.update_thread(SID, thread["id"], metadata={"kind": "todo"})
        assert updated["metadata"] == {"kind": "todo"}

        tomb = await bob.delete_comment(SID, flat["id"])
        assert tomb["deleted"] is True and tomb["body"] == ""
        got = await alice.get_thread(SID, thread["id"])
        assert [c["position"] for c in got["comments"]] == [1, 2, 3]
        assert got["comments"][1]["body"] == "Yes, it is"
        assert got["comments"][2]["deleted"] is True

        # every change is one event, in order, to every member
        names = [e["name"] for e in await collect_events(bob, SID, 11)]
        assert names == [
            "thread:created",
            "comment:created",
            "comment:created",
            "comment:edited",
            "reaction:added",
            "reaction:added",
            "reaction:removed",
            "thread:resolved",
            "thread:reopened",
            "thread:updated",
            "comment:deleted",
        ]


async def test_list_threads_filters_and_cursor(
    autojump_clock: trio.testing.MockClock, connect_as: Callable[[str], Connect]
) -> None:
    async with open_tandem_client(connect=connect_as("alice")) as alice:
        await alice.join(SID)
        ids = []
        for n in range(5):
            t = await alice.create_thread(SID, f"t{n}", metadata={"n": n % 2}, anchor={"b": n})
            ids.append(t["id"])
        first = await alice.list_threads(SID, limit=2)
        assert [t["id"] for t in first["threads"]] == ids[:2] and first["next"] is not None
        second = await alice.list_threads(SID, limit=2, after=first["next"])
        assert [t["id"] for t in second["threads"]] == ids[2:4]
        assert [t["id"] async for t in alice.iter_threads(SID, page_size=2)] == ids
        odd = await alice.list_threads(SID, metadata={"n": 1})
        assert [t["id"] for t in odd["threads"]] == [ids[1], ids[3]]
        anchored = await alice.list_threads(SID, anchor={"b": 4})
        assert [t["id"] for t in anchored["threads"]] == [ids[4]]
        assert (await alice.list_threads(SID, author_id="bob"))["threads"] == []


async def test_refusals_raise_tandem_error_codes(
    autojump_clock: trio.testing.MockClock, connect_as: Callable[[str], Connect]
) -> None:
    async with (
        open_tandem_client(connect=connect_as("alice")) as alice,
        open_tandem_client(connect=connect_as("bob")) as bob,
    ):
        with pytest.raises(TandemError) as info:
            await alice.create_thread(SID, "not joined yet")
        assert info.value.code == "not_joined"
        await alice.join(SID)
        await bob.join(SID)
        thread = await alice.create_thread(SID, "mine")
        cid = thread["comments"][0]["id"]

        cases = [
            (alice.get_thread(SID, "th_missing"), "not_found", "$.threadId"),
            (
                alice.create_comment(SID, thread["id"], "x", parent_id="cm_no"),
                "not_found",
                "$.parentId",
            ),
            (bob.edit_comment(SID, cid, "not yours"), "forbidden", None),
            (bob.delete_comment(SID, cid), "forbidden", None),
            (alice.add_reaction(SID, cid, "+1"), "invalid_message", "$.emoji"),
            (alice.create_comment(SID, thread["id"], "   "), "invalid_message", "$.body"),
            (alice.mark_notification_read("nt_missing"), "not_found", "$.id"),
        ]
        for call, code, path in cases:
            with pytest.raises(TandemError) as info:
                await call
            assert info.value.code == code, info.value
            if path is not None:
                assert info.value.path == path
        # a refused request changed nothing, and the connection is still usable
        got = await alice.get_thread(SID, thread["id"])
        assert got["commentCount"] == 1 and got["comments"][0]["body"] == "mine"


async def test_mention_arrives_live_and_read_marks_it(
    autojump_clock: trio.testing.MockClock, connect_as: Callable[[str], Connect]
) -> None:
    async with (
        open_tandem_client(connect=connect_as("alice")) as alice,
        open_tandem_client(connect=connect_as("bob")) as bob,
        open_tandem_client(connect=connect_as("bob")) as bob_tab,
    ):
        await alice.join(SID)  # bob needs no join to be notified
        thread = await alice.create_thread(SID, "Look @bob", mentions=["bob"])
        live = await next_message(bob, "notification")
        note = live["notification"]
        assert live["unread"] == 1
        assert (note["kind"], note["userId"], note["threadId"]) == ("mention", "bob", thread["id"])
        assert note["actorIds"] == ["alice"] and note["read"] is False
        assert note["data"]["excerpt"] == "Look @bob"
        await next_message(bob_tab, "notification")  # every tab of the user

        # a second mention in the same thread groups into the same notification
        await alice.create_comment(SID, thread["id"], "ping @bob", mentions=["bob"])
        grown = await next_message(bob, "notification")
        assert grown["notification"]["id"] == note["id"]
        assert grown["notification"]["count"] == 2 and grown["unread"] == 1

        page = await bob.list_notifications()
        assert page["unread"] == 1 and [n["id"] for n in page["notifications"]] == [note["id"]]
        assert (await alice.list_notifications())["unread"] == 0

        marked = await bob.mark_notification_read(note["id"])
        assert marked["unread"] == 0 and marked["notification"]["read"] is True
        told = await next_message(bob_tab, "notifications:unread")
        assert told["unread"] == 0 and told["read"] == [note["id"]]
        assert (await bob.list_notifications(unread_only=True))["notifications"] == []

        # after reading, new activity is a new notification; read-all clears it
        await alice.create_comment(SID, thread["id"], "again @bob", mentions=["bob"])
        fresh = await next_message(bob, "notification")
        assert fresh["notification"]["id"] != note["id"] and fresh["unread"] == 1
        cleared = await bob.mark_all_notifications_read()
        assert cleared == {"marked": 1, "unread": 0}
        assert (await bob.list_notifications(limit=1))["unread"] == 0
