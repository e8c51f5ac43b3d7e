"""The security gate on a live server: every role against every operation, live
revocation, rate limits on a MockClock, and hostile input that costs nothing else."""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime.security.permissions import MATRIX, Op, Role
from runtime.testing import TestServer, open_test_server
from tests.e2e.conftest import Inbox

SECRET = "k" * 40
PRODUCTION: dict[str, Any] = {"profile": "production", "jwt_secret": SECRET}


async def _try(server: TestServer, role: Role, op: Op) -> bool:
    """Attempt ``op`` in session "s" as a user granted ``role``; True if it was allowed."""
    grants = {"s": role.value} if role is not Role.NONE else {"s": "none"}
    async with server.websocket(token=server.token(f"u-{role.value}", grants=grants)) as ws:
        inbox = Inbox(ws)
        since = 0 if op is Op.READ_HISTORY else None
        joined = await inbox.request(type="session:join", sessionId="s", since=since)
        if op in (Op.JOIN, Op.READ_HISTORY):
            return bool(joined["type"] == "session:joined")
        assert joined["type"] == "session:joined", joined  # every role that can join
        if op is Op.PUBLISH:
            reply = await inbox.request(type="event:publish", sessionId="s", name="n", data=1)
            return bool(reply["type"] == "event:ack")
        if op is Op.PRESENCE:
            await inbox.send(type="presence:update", sessionId="s", state={"x": 1}, ref="p")
            reply = await inbox.request(type="ping")  # presence has no reply: errors come first
            seen = [m for m in inbox.pending if m.get("ref") == "p"]
            return reply["type"] == "pong" and not seen
        raise AssertionError(op)


WS_OPS = [Op.JOIN, Op.READ_HISTORY, Op.PUBLISH, Op.PRESENCE]


@pytest.mark.parametrize("role", list(Role), ids=str)
async def test_every_role_against_every_websocket_operation(
    role: Role, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_test_server(**PRODUCTION) as server:
        outcome = {
            op: await _try(server, role, op)
            if op in MATRIX[role] or op is Op.JOIN or role is not Role.NONE
            else False
            for op in WS_OPS
        }
        expected = {op: op in MATRIX[role] for op in WS_OPS}
        assert outcome == expected


async def test_a_removed_member_stops_receiving_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_test_server(**PRODUCTION, api_key="a" * 32) as server:
        auth = {"authorization": "Bearer " + "a" * 32}
        assert (await server.http("POST", "/v1/sessions", {"id": "s"}, auth))[0] == 201
        for user, role in (("owner", "owner"), ("bob", "editor")):
            status, _ = await server.http(
                "PUT", f"/v1/sessions/s/members/{user}", {"role": role}, auth
            )
            assert status == 200
        async with (
            server.websocket(token=server.token("owner")) as o,
            server.websocket(token=server.token("bob")) as b,
        ):
            owner, bob = Inbox(o), Inbox(b)
            await owner.request(type="session:join", sessionId="s")
            await bob.request(type="session:join", sessionId="s")
            assert (await server.http("DELETE", "/v1/sessions/s/members/bob", None, auth))[0] == 204
            removed_at = trio.current_time()
            left = await bob.next_of("session:left")
            assert left["reason"] == "revoked"
            assert trio.current_time() - removed_at < 1.0
            await owner.request(type="event:publish", sessionId="s", name="secret", data=1)
            seen = await bob.quiet(2)
            assert not [m for m in seen if m["type"] == "event"]  # nothing after revocation
            again = await bob.request(type="session:join", sessionId="s")
            assert again["code"] == "forbidden"


async def test_a_lowered_role_is_read_only_from_the_next_message(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_test_server(**PRODUCTION, api_key="a" * 32) as server:
        auth = {"authorization": "Bearer " + "a" * 32}
        await server.http("POST", "/v1/sessions", {"id": "s"}, auth)
        await server.http("PUT", "/v1/sessions/s/members/bob", {"role": "editor"}, auth)
        async with server.websocket(token=server.token("bob")) as b:
            bob = Inbox(b)
            await bob.request(type="session:join", sessionId="s")
            assert (await bob.request(type="event:publish", sessionId="s", name="n"))[
                "type"
            ] == "event:ack"
            await server.http("PUT", "/v1/sessions/s/members/bob", {"role": "viewer"}, auth)
            await trio.testing.wait_all_tasks_blocked()
            reply = await bob.request(type="event:publish", sessionId="s", name="n")
            assert reply["code"] == "forbidden"


async def test_rate_limits_refuse_then_recover_on_the_clock(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        open_test_server(rate_limits="event_per_connection=2/4") as server,
        server.websocket() as ws,
    ):
        inbox = Inbox(ws)
        await inbox.request(type="session:join", sessionId="s")
        replies = [
            await inbox.request(type="event:publish", sessionId="s", name="n", data=i)
            for i in range(6)
        ]
        assert [r["type"] for r in replies] == ["event:ack"] * 4 + ["error"] * 2
        assert replies[4]["code"] == "rate_limited"
        await trio.sleep(replies[5]["retryAfter"])
        assert (await inbox.request(type="event:publish", sessionId="s", name="n"))[
            "type"
        ] == "event:ack"


async def test_presence_over_its_limit_is_coalesced_not_failed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_test_server(rate_limits="presence_per_connection=5/5") as server:
        async with server.websocket() as a, server.websocket() as b:
            mover, watcher = Inbox(a), Inbox(b)
            await mover.request(type="session:join", sessionId="s")
            await watcher.request(type="session:join", sessionId="s")
            for x in range(50):
                await mover.send(type="presence:update", sessionId="s", state={"x": x})
            assert not [m for m in await mover.quiet(0.5) if m["type"] == "error"]
            last = None
            with trio.move_on_after(5):
                while last != 49:
                    change = await watcher.next_of("presence")
                    last = change["changes"][-1]["state"]["x"]
            assert last == 49  # the newest state arrived


# --- hostile input against a live server ----------------------------------------------

json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.text(max_size=20),
)
hostile_value = st.recursive(
    json_leaf,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(
            st.sampled_from(
                ["__proto__", "constructor", "prototype", "a", "sessionId", "type", "data"]
            ),
            children,
            max_size=4,
        ),
    ),
    max_leaves=30,
)
TYPES = [
    "session:join",
    "session:leave",
    "presence:update",
    "event:publish",
    "ping",
    "auth",
    "auth:refresh",
    "nope",
    None,
    7,
]


@st.composite
def hostile_frame(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["message", "deep", "raw"]))
    if kind == "deep":
        depth = draw(st.integers(33, 3000))
        return (
            b'{"type":"event:publish","sessionId":"s","name":"n","data":'
            + b"[" * depth
            + b"]" * depth
            + b"}"
        )
    if kind == "raw":
        return draw(st.binary(max_size=64))
    message: dict[str, Any] = {"type": draw(st.sampled_from(TYPES))}
    for field in draw(
        st.lists(
            st.sampled_from(
                ["sessionId", "since", "state", "name", "data", "durable", "ref", "token", "extra"]
            ),
            max_size=5,
        )
    ):
        message[field] = draw(hostile_value)
    # stdlib json: it writes what orjson refuses to (huge integers, Infinity)
    return json.dumps(message if draw(st.booleans()) else [message, message]).encode()


async def _hostile_scenario(frames: list[bytes]) -> None:
    with trio.fail_after(300):  # virtual seconds: a hang fails instead of spinning the clock
        await _hostile_exchange(frames)


async def _hostile_exchange(frames: list[bytes]) -> None:
    async with open_test_server() as server:
        async with server.websocket() as b:
            bystander = Inbox(b)
            await bystander.request(type="session:join", sessionId="s")
            async with server.websocket() as h:
                hostile = Inbox(h)
                await hostile.next_of("welcome")
                for frame in frames:
                    try:
                        await h.send_message(frame.decode("utf-8"))
                    except UnicodeDecodeError:
                        await h.send_message(frame)  # binary frame: unsupported_frame
                    reply = await hostile.request(type="ping")  # still answered after each
                    assert reply["type"] == "pong"
            ack = await bystander.request(type="event:publish", sessionId="s", name="ok", data=1)
            assert ack["type"] == "event:ack"  # everyone else kept working


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(hostile_frame(), min_size=1, max_size=8))
def test_hostile_messages_get_errors_and_cost_nothing_else(frames: list[bytes]) -> None:
    trio.run(_hostile_scenario, frames, clock=trio.testing.MockClock(autojump_threshold=0))
