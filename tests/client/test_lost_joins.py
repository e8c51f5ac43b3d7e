"""Every join gets one answer, and no session actor stops without telling its members.

* A ``session:join`` the session actor took from its mailbox but never handled,
  because the actor crashed first (the replay read failed, or a ``SeqConflict``
  in the flush before the join), used to get no answer at all while the
  dispatcher counted the connection as joined. Now it is refused with
  ``error`` ``internal`` and its ``ref``, and the connection is not joined.
* When the ``sessions`` supervisor gives up (a session crashed past the restart
  intensity), its other session actors are cancelled. Their members used to hear
  nothing, stay joined in the dispatcher and stay tracked in presence (ghosts).
  Now they get ``session:left`` with reason ``restart``, and joins in flight or
  still queued are refused.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import pytest
import trio

from client import Disconnected, TandemError, open_tandem_client
from runtime.cluster.requests import ClusterRequestError
from runtime.gateways.memory import SeqConflict, StoreError
from runtime.testing import open_test_server
from runtime.testing.server import TestServer
from tests.client.helpers import (
    break_replay_reads,
    next_message,
    rejoin_after_refused_join,
    wait_until,
)
from tests.e2e.conftest import Inbox


def child(children: list[Any], name: str) -> Any:
    return next((c for c in children if c.name == name), None)


def session_depth(server: TestServer, session_id: str) -> int:
    mailbox = server.node.registry.lookup(server.node.session_kind, session_id)
    return mailbox.depth if mailbox is not None else -1


def joined_on_server(server: TestServer, connection_id: str) -> set[str]:
    return set(server.node.connections[connection_id].joined)


async def escalate_sessions(server: TestServer) -> None:
    """Crash session "doc" until the sessions supervisor escalates (more than 5 in 10 s)."""
    node = server.node
    await node.append_event("doc", "spawn", None, "system")
    for _ in range(6):
        await wait_until(
            lambda: (
                (c := child(node.sessions_supervisor.children(), "session:doc")) is not None
                and c.state == "running"
            )
        )
        assert await node.inject_failure("session:doc")
        await wait_until(
            lambda: (
                (c := child(node.sessions_supervisor.children(), "session:doc")) is None
                or c.state != "running"
            )
        )


async def connect(server: TestServer, stack: AsyncExitStack, user: str) -> tuple[Inbox, str]:
    ws = await stack.enter_async_context(server.websocket(token=server.token(user, name=user)))
    inbox = Inbox(ws)
    welcome = await inbox.next_of("welcome")
    return inbox, str(welcome["connectionId"])


async def test_a_join_lost_when_the_replay_read_crashes_the_session_is_refused(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with open_test_server(memory_retention=1) as server:
        node = server.node
        for n in range(2):  # only the last stays in memory: a resume from 0 reads the store
            await node.append_event("doc", "note", {"n": n}, "system")

        break_replay_reads(node.store, monkeypatch)
        async with server.websocket(token=server.token("bob", name="Bob")) as ws:
            bob = Inbox(ws)
            conn_id = str((await bob.next_of("welcome"))["connectionId"])
            with trio.fail_after(10):
                refused = await bob.request(type="session:join", sessionId="doc", since=0, ref="j")
            assert (refused["type"], refused["code"], refused["sessionId"]) == (
                "error",
                "internal",
                "doc",
            )
            assert "doc" not in joined_on_server(server, conn_id)
            await rejoin_after_refused_join(
                bob, monkeypatch, lambda: "doc" in joined_on_server(server, conn_id)
            )


async def test_joins_of_a_batch_that_crashes_in_the_flush_are_refused(
    autojump_clock: trio.testing.MockClock, server: TestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A SeqConflict storing the events before a join (another writer moved the head)."""
    node = server.node
    real_append = node.store.append
    gate = trio.Event()
    calls = 0

    async def append(events: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            await gate.wait()  # hold the actor while the next batch queues up
            await real_append(events)
        elif calls == 2:
            raise SeqConflict("another writer moved the head")
        else:
            await real_append(events)

    monkeypatch.setattr(node.store, "append", append)
    async with trio.open_nursery() as nursery, _stack() as stack:
        alice, _ = await connect(server, stack, "alice")
        bob, bob_id = await connect(server, stack, "bob")
        carol, carol_id = await connect(server, stack, "carol")
        with trio.fail_after(10):
            assert (await alice.request(type="session:join", sessionId="doc"))["type"] == (
                "session:joined"
            )
            await alice.send(type="event:publish", sessionId="doc", name="a", ref="p1")
            await wait_until(lambda: calls == 1)
            # One batch behind the held write: a publish, then two joins.
            await alice.send(type="event:publish", sessionId="doc", name="b", ref="p2")
            await wait_until(lambda: session_depth(server, "doc") == 1)
            await bob.send(type="session:join", sessionId="doc", ref="jb")
            await wait_until(lambda: session_depth(server, "doc") == 2)
            await carol.send(type="session:join", sessionId="doc", ref="jc")
            await wait_until(lambda: session_depth(server, "doc") == 3)
            gate.set()
            for inbox, ref in ((bob, "jb"), (carol, "jc")):
                refused = await inbox.next_of("error", "session:joined")
                assert (refused["type"], refused["code"], refused["ref"]) == (
                    "error",
                    "internal",
                    ref,
                )
            assert (await alice.next_of("session:left"))["reason"] == "restart"
            assert "doc" not in joined_on_server(server, bob_id)
            assert "doc" not in joined_on_server(server, carol_id)
            # A join after the refusal works, and the connection counts as joined again.
            joined = await bob.request(type="session:join", sessionId="doc", since=0)
            assert (joined["type"], joined["seq"]) == ("session:joined", 1)
            ack = await bob.request(type="event:publish", sessionId="doc", name="c")
            assert (ack["type"], ack["seq"]) == ("event:ack", 2)
        nursery.cancel_scope.cancel()


async def test_an_escalation_tells_every_member_and_refuses_pending_joins(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with open_test_server(memory_retention=1) as server:
        node = server.node
        for n in range(2):  # a resume of "other" from 0 reads the store
            await node.append_event("other", "note", {"n": n}, "system")
        real_read = node.store.read_since
        hold = trio.Event()  # never set: carol's replay read hangs until the escalation

        async def read_since(session_id: str, *args: Any) -> Any:
            if session_id == "other":
                await hold.wait()
            return await real_read(session_id, *args)

        monkeypatch.setattr(node.store, "read_since", read_since)
        async with _stack() as stack:
            alice, alice_id = await connect(server, stack, "alice")
            bob, bob_id = await connect(server, stack, "bob")
            carol, carol_id = await connect(server, stack, "carol")
            dave, dave_id = await connect(server, stack, "dave")
            with trio.fail_after(30):
                for inbox in (alice, bob):
                    joined = await inbox.request(type="session:join", sessionId="other")
                    assert joined["type"] == "session:joined"
                users: set[str] = set()
                while users != {"alice", "bob"}:
                    await trio.sleep(0.01)
                    users = {p["userId"] for p in await node.participants("other")}
                # Carol's join is being handled (its replay read waits), dave's is queued.
                await carol.send(type="session:join", sessionId="other", since=0, ref="jc")
                await dave.send(type="session:join", sessionId="other", ref="jd")
                await wait_until(lambda: session_depth(server, "other") == 1)

                await escalate_sessions(server)

                for inbox in (alice, bob):
                    left = await inbox.next_of("session:left")
                    assert (left["sessionId"], left["reason"]) == ("other", "restart")
                for inbox, ref in ((carol, "jc"), (dave, "jd")):
                    refused = await inbox.next_of("error", "session:joined")
                    assert (refused["code"], refused["ref"], refused["sessionId"]) == (
                        "internal",
                        ref,
                        "other",
                    )
                for conn_id in (alice_id, bob_id, carol_id, dave_id):
                    assert "other" not in joined_on_server(server, conn_id)
                # The root restarts the sessions supervisor: alice rejoins; bob does not.
                await wait_until(lambda: child(node.root.children(), "sessions").state == "running")
                monkeypatch.undo()
                while True:
                    joined = await alice.request(type="session:join", sessionId="other", since=2)
                    if joined["type"] == "session:joined":
                        break
                    assert joined["code"] == "internal"  # the supervisor was not back yet
                    await trio.sleep(0.1)
                assert joined["participants"] == []  # bob is no ghost
                change = await alice.next_of("participant:joined")
                assert change["participant"]["userId"] == "alice"
                ack = await bob.request(type="event:publish", sessionId="other", name="x")
                assert (ack["type"], ack["code"]) == ("error", "not_joined")
            # Past away_after (60 s): a presence actor still tracking bob's connection
            # would report him away, and the session would show him again.
            await trio.sleep(120)
            with trio.fail_after(10):
                assert {p["userId"] for p in await node.participants("other")} == {"alice"}
                assert not [m for m in await alice.quiet(0.1) if m["type"] == "participant:joined"]


async def test_an_escalation_answers_queued_appends_and_participant_questions(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Queued behind a join when the sessions supervisor gives up, they hear "unavailable".

    At once, not at their own limits: a server-side append had none (it waited for
    good), and a participants question returned [] after ``mailbox_timeout``, which
    reads as "nobody is there".
    """
    async with open_test_server(memory_retention=1) as server:
        node = server.node
        for n in range(2):  # a resume of "other" from 0 reads the store
            await node.append_event("other", "note", {"n": n}, "system")
        real_read = node.store.read_since
        reading = trio.Event()
        hold = trio.Event()  # never set: the replay read hangs until the escalation

        async def read_since(session_id: str, *args: Any) -> Any:
            if session_id == "other":
                reading.set()
                await hold.wait()
            return await real_read(session_id, *args)

        monkeypatch.setattr(node.store, "read_since", read_since)
        answers: dict[str, tuple[object, float]] = {}

        async def ask(name: str, question: Callable[[], Awaitable[object]]) -> None:
            try:
                answer = await question()
            except Exception as exc:
                answer = exc
            answers[name] = (answer, trio.current_time())

        async with trio.open_nursery() as nursery, _stack() as stack:
            carol, _ = await connect(server, stack, "carol")
            with trio.fail_after(30):
                await carol.send(type="session:join", sessionId="other", since=0, ref="jc")
                await reading.wait()
                nursery.start_soon(
                    ask, "append", lambda: node.append_event("other", "late", None, "system")
                )
                await wait_until(lambda: session_depth(server, "other") == 1)
                nursery.start_soon(ask, "participants", lambda: node.participants("other"))
                await wait_until(lambda: session_depth(server, "other") == 2)
                queued_at = trio.current_time()

                await escalate_sessions(server)
                refused = await carol.next_of("error", "session:joined")
                assert (refused["code"], refused["ref"]) == ("internal", "jc")
                await wait_until(lambda: len(answers) == 2)
            for name in ("append", "participants"):
                answer, at = answers[name]
                # What the HTTP API maps to 503 and comments to ``Unavailable``.
                assert isinstance(answer, ClusterRequestError), (name, answer)
                assert at < queued_at + node.settings.mailbox_timeout, name
            nursery.cancel_scope.cancel()


async def test_the_python_client_raises_on_a_refused_join_and_retries_a_refused_rejoin(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with open_test_server(memory_retention=1) as server:
        await _client_scenario(server, monkeypatch)


async def _client_scenario(server: TestServer, monkeypatch: pytest.MonkeyPatch) -> None:
    node = server.node
    real_append = node.store.append
    real_read = node.store.read_since
    failures = {"append": 0, "read": 0}

    async def down(*args: Any, **kwargs: Any) -> Any:
        raise StoreError("store down")

    token = server.token("alice", name="Alice")
    async with open_tandem_client(connect=lambda: server.websocket(token=token)) as alice:
        with trio.fail_after(10):
            for n in range(2):  # only the last stays in memory: a join from 0 reads the store
                await node.append_event("doc", "note", {"n": n}, "system")
            # The session crashes reading alice's replay: her join is answered, and raises.
            monkeypatch.setattr(node.store, "read_since", down)
            with pytest.raises(TandemError) as refused:
                await alice.join("doc", since=0)
            assert (refused.value.code, refused.value.session_id) == ("internal", "doc")
            assert "doc" not in alice.sessions
            monkeypatch.undo()
            await alice.join("doc", since=0)
            await next_message(alice, "event", lambda m: m["seq"] == 2, limit=10)

        # A split brain: another writer stored this batch (so the head moved), and this
        # actor crashes on SeqConflict before broadcasting it. Alice's rejoin (since 2)
        # reads the store, which fails once: the refusal is retried with backoff.
        async def conflict(events: Any) -> None:
            failures["append"] += 1
            await real_append(events)
            raise SeqConflict("another writer moved the head")

        async def read_once_down(*args: Any) -> Any:
            if not failures["read"]:
                failures["read"] += 1
                raise StoreError("store down")
            return await real_read(*args)

        monkeypatch.setattr(node.store, "append", conflict)
        monkeypatch.setattr(node.store, "read_since", read_once_down)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_publish_ignoring_loss, alice)
            await wait_until(lambda: failures["append"] == 1, limit=10)
            monkeypatch.setattr(node.store, "append", real_append)
            event = await next_message(alice, "event", lambda m: m["seq"] == 3, limit=10)
        assert event["name"] == "lost"
        assert failures["read"] == 1
        assert "doc" in alice.sessions
        with trio.fail_after(10):
            assert await alice.publish("doc", "after") == 4


async def _publish_ignoring_loss(client: Any) -> None:
    with pytest.raises(Disconnected):  # the session restarted before the ack
        await client.publish("doc", "lost")


def _stack() -> AsyncExitStack:
    return AsyncExitStack()


async def test_an_append_in_a_batch_that_crashes_is_answered(
    autojump_clock: trio.testing.MockClock, server: TestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server-side append (HTTP API, comments) whose batch crashes the actor gets an
    error at once instead of waiting for a reply nobody will send."""
    node = server.node
    await node.append_event("doc", "note", {"n": 0}, "system")  # the actor is live
    real_append = node.store.append
    conflicts = 0

    async def append(events: Any) -> None:
        nonlocal conflicts
        if conflicts == 0:
            conflicts += 1
            raise SeqConflict("another writer moved the head")
        await real_append(events)

    monkeypatch.setattr(node.store, "append", append)
    session = child(node.sessions_supervisor.children(), "session:doc")
    with trio.fail_after(10):
        with pytest.raises(ClusterRequestError, match="stopped while handling"):
            await node.append_event("doc", "note", {"n": 1}, "system")
        await wait_until(lambda: session.restarts == 1, limit=5)
        # The successor rehydrated from the store: the next append takes the next seq.
        assert await node.append_event("doc", "note", {"n": 2}, "system") == 2
