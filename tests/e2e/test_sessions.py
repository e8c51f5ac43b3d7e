"""End to end over the real server code, in memory, on a MockClock."""

from __future__ import annotations

import trio
import trio.testing

from runtime.testing import TestServer, open_test_server
from tests.e2e.conftest import Inbox


async def test_join_answers_session_joined(autojump_clock: trio.testing.MockClock) -> None:
    async with open_test_server() as server, server.websocket() as ws:
        inbox = Inbox(ws)
        welcome = await inbox.next()
        assert welcome["type"] == "welcome" and welcome["guest"] is True
        await ws.send_message('{"type":"session:join","sessionId":"test"}')
        joined = await inbox.next()
        assert joined == {
            "type": "session:joined",
            "sessionId": "test",
            "seq": 0,
            "participants": [],
            "presence": {},
        }


async def test_members_see_each_others_presence_and_events(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_test_server() as server:
        async with (
            server.websocket(token=server.token("ann")) as a,
            server.websocket(token=server.token("bob")) as b,
        ):
            ann, bob = Inbox(a), Inbox(b)
            await ann.request(type="session:join", sessionId="doc")
            joined = await bob.request(type="session:join", sessionId="doc")
            assert [p["userId"] for p in joined["participants"]] == ["ann"]
            await bob.send(type="presence:update", sessionId="doc", state={"cursor": [1, 2]})
            change = await ann.next_of("presence")
            assert change["changes"][0]["userId"] == "bob"
            assert change["changes"][0]["state"] == {"cursor": [1, 2]}
            ack = await bob.request(
                type="event:publish", sessionId="doc", name="draw", data={"x": 1}
            )
            assert ack["type"] == "event:ack" and ack["seq"] == 1
            event = await ann.next_of("event")
            assert (event["seq"], event["name"], event["data"], event["userId"]) == (
                1,
                "draw",
                {"x": 1},
                "bob",
            )


async def test_two_tabs_of_one_user_are_one_participant(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_test_server() as server:
        async with server.websocket(token=server.token("obs")) as o:
            obs = Inbox(o)
            await obs.request(type="session:join", sessionId="doc")
            async with server.websocket(token=server.token("ann")) as t1:
                await Inbox(t1).request(type="session:join", sessionId="doc")
                async with server.websocket(token=server.token("ann")) as t2:
                    await Inbox(t2).request(type="session:join", sessionId="doc")
                    seen = await obs.quiet(1)
                    joins = [
                        m
                        for m in seen
                        if m["type"] == "participant:joined" and m["participant"]["userId"] == "ann"
                    ]
                    assert len(joins) == 1
                seen = await obs.quiet(1)  # one tab closed: ann is still here
                assert not [m for m in seen if m["type"] == "participant:left"]
            left = await obs.next_of("participant:left")
            assert left["userId"] == "ann"


async def test_two_publishers_one_identical_gap_free_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_test_server() as server:
        async with server.websocket() as a, server.websocket() as b, server.websocket() as c:
            inboxes = [Inbox(a), Inbox(b), Inbox(c)]
            for inbox in inboxes:
                await inbox.request(type="session:join", sessionId="race")

            async def publish(inbox: Inbox, who: str) -> None:
                for i in range(1000):
                    await inbox.send(
                        type="event:publish", sessionId="race", name=who, data={"i": i}
                    )

            seen: list[list[tuple[int, str, int]]] = [[], [], []]

            async def collect(n: int) -> None:
                events = await inboxes[n].events("race", 2000)
                seen[n] = [(e["seq"], e["name"], e["data"]["i"]) for e in events]

            async with trio.open_nursery() as nursery:
                for n in range(3):
                    nursery.start_soon(collect, n)
                nursery.start_soon(publish, inboxes[0], "a")
                nursery.start_soon(publish, inboxes[1], "b")
            assert seen[0] == seen[1] == seen[2]
            assert [s for s, _, _ in seen[0]] == list(range(1, 2001))
            for who in "ab":  # each publisher's own events keep their order
                assert [i for _, w, i in seen[0] if w == who] == list(range(1000))


async def test_resume_with_since_replays_exactly_the_missed_events(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_test_server() as server:
        async with server.websocket() as a:
            pub = Inbox(a)
            await pub.request(type="session:join", sessionId="s")
            for i in range(10):
                await pub.request(type="event:publish", sessionId="s", name="n", data=i)
            async with server.websocket() as b:
                late = Inbox(b)
                joined = await late.request(type="session:join", sessionId="s", since=4)
                assert joined["seq"] == 10
                events = await late.events("s", 10)
                assert [e["seq"] for e in events] == [5, 6, 7, 8, 9, 10]
                await pub.request(type="event:publish", sessionId="s", name="n", data=10)
                assert (await late.next_of("event"))["seq"] == 11  # live follows, no duplicate


async def test_resume_beyond_retention_says_reset(autojump_clock: trio.testing.MockClock) -> None:
    async with open_test_server() as server, server.websocket() as a:
        pub = Inbox(a)
        await pub.request(type="session:join", sessionId="s", since=7)
        reset = await pub.next_of("session:reset")
        assert (reset["seq"], reset["sessionId"]) == (0, "s")


async def test_vanished_client_leaves_presence_within_the_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_test_server(presence_timeout=15.0) as server:
        async with server.websocket(token=server.token("obs")) as o:
            obs = Inbox(o)
            await obs.request(type="session:join", sessionId="doc")
            ghost = await _silent_client(server, "ghost", "doc")
            await obs.next_of("participant:joined")
            vanished_at = trio.current_time()
            left = await obs.next_of("participant:left")
            assert left["userId"] == "ghost"
            assert trio.current_time() - vanished_at <= 15.0
            ghost.abort()


async def _silent_client(server: TestServer, user: str, session: str) -> object:
    """A client that joins, then never sends another byte (no pongs, no close frame)."""
    from wsproto import WSConnection
    from wsproto.connection import ConnectionType
    from wsproto.events import AcceptConnection, Request, TextMessage

    stream = server.connect_stream()
    ws = WSConnection(ConnectionType.CLIENT)
    await stream.send_all(ws.send(Request(host="t", target=f"/?token={server.token(user)}")))
    accepted = False
    while not accepted:
        ws.receive_data(await stream.receive_some(65536))
        accepted = any(isinstance(e, AcceptConnection) for e in ws.events())
    await stream.send_all(
        ws.send(TextMessage(f'{{"type":"session:join","sessionId":"{session}"}}'))
    )
    return stream


async def test_crashed_session_restarts_without_disturbing_others(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_test_server() as server:
        async with server.websocket() as a, server.websocket() as b:
            doomed, other = Inbox(a), Inbox(b)
            await doomed.request(type="session:join", sessionId="doomed")
            await other.request(type="session:join", sessionId="calm")
            await other.request(type="event:publish", sessionId="calm", name="n", data=1)
            await doomed.request(type="event:publish", sessionId="doomed", name="n", data=1)
            assert await server.node.inject_failure("session:doomed")
            lost = await doomed.next_of("session:left")
            assert lost["reason"] == "restart"
            # the client rejoins from its last seq and continues the same sequence
            await doomed.request(type="session:join", sessionId="doomed", since=1)
            ack = await doomed.request(type="event:publish", sessionId="doomed", name="n", data=2)
            assert ack["seq"] == 2
            ack = await other.request(type="event:publish", sessionId="calm", name="n", data=2)
            assert ack["seq"] == 2
            status, body = await server.http("GET", "/status")
            assert status == 200
            sessions = next(c for c in body["actors"]["children"] if c["name"] == "sessions")
            tree = sessions["supervisor"]
            assert tree["restarts"] == 1
            assert tree["recentFailures"][0]["name"] == "session:doomed"
            assert tree["recentFailures"][0]["failure"] == "InjectedFailure: injected failure"
            restarted = {c["name"]: c["restarts"] for c in tree["children"]}
            assert restarted == {"session:doomed": 1, "session:calm": 0}


async def test_server_side_events_join_the_same_ordered_stream(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_test_server() as server, server.websocket() as ws:
        member = Inbox(ws)
        await member.request(type="session:join", sessionId="doc")
        await member.request(type="event:publish", sessionId="doc", name="n", data=1)
        seq = await server.node.append_event("doc", "thread:created", {"id": "t1"}, "ann")
        assert seq == 2
        event = await member.next_of("event")  # seq 1 went by with its ack
        assert (event["seq"], event["name"], event["userId"]) == (2, "thread:created", "ann")
        async with server.websocket() as late_ws:  # and resumes replay it like any event
            late = Inbox(late_ws)
            await late.request(type="session:join", sessionId="doc", since=1)
            replayed = await late.next_of("event")
            assert (replayed["seq"], replayed["data"]) == (2, {"id": "t1"})


async def test_presence_interval_spaces_a_sessions_presence_broadcasts(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def gap(interval: float) -> float:
        """Time between the broadcasts of two presence updates sent back to back."""
        async with open_test_server(presence_interval=interval) as server:
            async with (
                server.websocket(token=server.token("ann")) as a,
                server.websocket(token=server.token("bob")) as b,
            ):
                ann, bob = Inbox(a), Inbox(b)
                await ann.request(type="session:join", sessionId="doc")
                await bob.request(type="session:join", sessionId="doc")
                seen = []
                for x in (1, 2):
                    await bob.send(type="presence:update", sessionId="doc", state={"x": x})
                    while True:
                        change = await ann.next_of("presence")
                        if any(c.get("state") == {"x": x} for c in change["changes"]):
                            seen.append(trio.current_time())
                            break
                return seen[1] - seen[0]

    with trio.fail_after(60):
        assert await gap(1.0) >= 1.0  # the second update waits out the interval
        assert await gap(0.02) < 0.1
