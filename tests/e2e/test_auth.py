"""Identity: tokens in the URL or an `auth` message; guests only in the dev profile."""

from __future__ import annotations

import pytest
import trio
import trio.lowlevel
import trio.testing
import trio_websocket

from runtime.protocol.errors import CloseCode
from runtime.testing import open_test_server
from tests.e2e.conftest import Inbox

SECRET = "s" * 40


async def test_production_refuses_anonymous_requests(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_test_server(profile="production", jwt_secret=SECRET) as server:
        async with server.websocket() as ws:
            inbox = Inbox(ws)
            error = await inbox.request(type="session:join", sessionId="s")
            assert error["code"] == "auth_required"
            token = server.token("ann", name="Ann", grants={"s": "editor"})
            ok = await inbox.request(type="auth", token=token)
            assert ok == {"type": "auth:ok", "userId": "ann", "name": "Ann", "ref": ok["ref"]}
            joined = await inbox.request(type="session:join", sessionId="s")
            assert joined["type"] == "session:joined"


async def test_token_in_the_url_sets_the_identity(autojump_clock: trio.testing.MockClock) -> None:
    async with open_test_server(profile="production", jwt_secret=SECRET) as server:
        async with server.websocket(token=server.token("bob", name="Bob")) as ws:
            welcome = await Inbox(ws).next()
            assert (welcome["userId"], welcome["name"], welcome["guest"]) == ("bob", "Bob", False)


@pytest.mark.parametrize(
    ("token", "code", "close"),
    [("garbage", "token_invalid", CloseCode.TOKEN_INVALID)],
)
async def test_bad_token_in_the_url_closes_with_a_documented_code(
    token: str, code: str, close: int, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_test_server(profile="production", jwt_secret=SECRET) as server:
        async with server.websocket(token=token) as ws:
            inbox = Inbox(ws)
            assert (await inbox.next())["code"] == code
            with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                await inbox.next()
            assert closed.value.reason.code == close


async def test_expired_token_is_refused(autojump_clock: trio.testing.MockClock) -> None:
    async with open_test_server(profile="production", jwt_secret=SECRET) as server:
        stale = server.token("ann", ttl=60, issued_at=server.node.wall_clock() - 3600)
        async with server.websocket(token=stale) as ws:
            inbox = Inbox(ws)
            assert (await inbox.next())["code"] == "token_expired"
            with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                await inbox.next()
            assert closed.value.reason.code == CloseCode.TOKEN_EXPIRED


async def test_bad_auth_message_closes_an_anonymous_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_test_server(profile="production", jwt_secret=SECRET) as server:
        async with server.websocket() as ws:
            inbox = Inbox(ws)
            assert (await inbox.request(type="auth", token="nope"))["code"] == "token_invalid"
            with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                await inbox.next()
            assert closed.value.reason.code == CloseCode.TOKEN_INVALID


async def test_identity_cannot_change_inside_a_session(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_test_server() as server, server.websocket() as ws:
        inbox = Inbox(ws)
        await inbox.request(type="session:join", sessionId="s")
        reply = await inbox.request(type="auth", token=server.token("mallory"))
        assert reply["code"] == "already_authenticated"


async def test_session_limit_per_connection(autojump_clock: trio.testing.MockClock) -> None:
    async with open_test_server(max_sessions_per_connection=2) as server, server.websocket() as ws:
        inbox = Inbox(ws)
        for sid in ("a", "b"):
            assert (await inbox.request(type="session:join", sessionId=sid))[
                "type"
            ] == "session:joined"
        assert (await inbox.request(type="session:join", sessionId="c"))[
            "code"
        ] == "too_many_sessions"
        await trio.lowlevel.checkpoint()
