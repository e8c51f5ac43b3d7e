"""Bad input gets a clear error and costs nothing else."""

from __future__ import annotations

import pytest
import trio
import trio.testing
import trio_websocket

from runtime.protocol.errors import CloseCode
from runtime.testing import open_test_server
from tests.e2e.conftest import Inbox

BAD = [
    ("{not json", "invalid_json", None),
    ('{"type":"warp"}', "unknown_type", "$.type"),
    ('{"sessionId":"x"}', "unknown_type", "$.type"),
    ('{"type":"session:join"}', "invalid_message", "$.sessionId"),
    ('{"type":"session:join","sessionId":42}', "invalid_message", "$.sessionId"),
    ('{"type":"session:join","sessionId":"has space"}', "invalid_message", "$.sessionId"),
    ('{"type":"session:join","sessionId":"' + "x" * 129 + '"}', "invalid_message", "$.sessionId"),
    ('{"type":"session:join","sessionId":"s","since":-1}', "invalid_message", "$.since"),
    ('{"type":"session:join","sessionId":"s","extra":1}', "invalid_message", "$"),
    (
        '{"type":"event:publish","sessionId":"s","name":"n","data":{"__proto__":{}}}',
        "invalid_message",
        "$.data.__proto__",
    ),
    (
        '{"type":"event:publish","sessionId":"s","name":"n","data":' + "[" * 40 + "]" * 40 + "}",
        "invalid_message",
        None,
    ),
    # beyond JavaScript's safe integers: a browser could not read it back unchanged
    (
        '{"type":"event:publish","sessionId":"s","name":"n","data":9007199254740993}',
        "invalid_message",
        "$.data",
    ),
    (
        '{"type":"presence:update","sessionId":"s","state":"not an object"}',
        "invalid_message",
        "$.state",
    ),
    ("[]", "invalid_message", "$"),
    ('"just a string"', "invalid_message", "$"),
    ('{"type":"event:publish","sessionId":"s","name":"n","data":1}', "not_joined", None),
    ('{"type":"session:leave","sessionId":"s"}', "not_joined", None),
]


@pytest.mark.parametrize(("frame", "code", "path"), BAD)
async def test_bad_message_gets_an_error_and_the_connection_survives(
    frame: str, code: str, path: str | None, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_test_server() as server, server.websocket() as ws:
        inbox = Inbox(ws)
        await inbox.next_of("welcome")
        await ws.send_message(frame)
        error = await inbox.next()
        assert error["type"] == "error" and error["code"] == code, error
        if path is not None:
            assert error["path"] == path
        assert error["message"]
        assert (await inbox.request(type="ping"))["type"] == "pong"


async def test_array_frames_answer_each_message(autojump_clock: trio.testing.MockClock) -> None:
    async with open_test_server() as server, server.websocket() as ws:
        inbox = Inbox(ws)
        await inbox.next_of("welcome")
        await ws.send_message(
            '[{"type":"ping","ref":1},{"type":"nope","ref":2},{"type":"ping","ref":3}]'
        )
        replies = [await inbox.next() for _ in range(3)]
        assert [(r["type"], r["ref"]) for r in replies] == [("pong", 1), ("error", 2), ("pong", 3)]


async def test_binary_frame_is_refused_politely(autojump_clock: trio.testing.MockClock) -> None:
    async with open_test_server() as server, server.websocket() as ws:
        inbox = Inbox(ws)
        await inbox.next_of("welcome")
        await ws.send_message(b"\x00\x01")
        assert (await inbox.next())["code"] == "unsupported_frame"
        assert (await inbox.request(type="ping"))["type"] == "pong"


async def test_oversized_message_closes_with_1009_and_others_carry_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_test_server(max_message_bytes=4096) as server:
        async with server.websocket() as big, server.websocket() as bystander:
            other = Inbox(bystander)
            await other.request(type="session:join", sessionId="s")
            await big.send_message('{"type":"ping","pad":"' + "x" * 5000 + '"}')
            with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                while True:
                    await big.get_message()
            assert closed.value.reason.code == CloseCode.MESSAGE_TOO_BIG
            ack = await other.request(type="event:publish", sessionId="s", name="n", data=1)
            assert ack["seq"] == 1


async def test_a_flood_of_requests_is_answered_in_full(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_test_server(mailbox_size=8) as server, server.websocket() as ws:
        inbox = Inbox(ws)
        await inbox.request(type="session:join", sessionId="s")
        for i in range(3000):
            await inbox.send(type="event:publish", sessionId="s", name="n", data=i, ref=i)
        acks = []
        while len(acks) < 3000:
            message = await inbox.next_of("event:ack", "error")
            assert message["type"] == "event:ack", message
            acks.append(message["seq"])
        assert acks == list(range(1, 3001))


async def test_slow_consumer_is_disconnected_with_4000_and_nobody_else_suffers(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_test_server(outbound_limit=64 * 1024) as server:
        async with server.websocket() as fast_ws:
            fast = Inbox(fast_ws)
            fast_id = (await fast.next_of("welcome"))["connectionId"]
            await fast.request(type="session:join", sessionId="s")
            slow_stream = server.connect_stream(capacity=16 * 1024)  # a client that never reads
            from wsproto import WSConnection
            from wsproto.connection import ConnectionType
            from wsproto.events import Request, TextMessage

            ws = WSConnection(ConnectionType.CLIENT)
            await slow_stream.send_all(ws.send(Request(host="t", target="/")))
            await trio.testing.wait_all_tasks_blocked()
            ws.receive_data(await slow_stream.receive_some(65536))
            list(ws.events())
            await slow_stream.send_all(
                ws.send(TextMessage('{"type":"session:join","sessionId":"s"}'))
            )
            await trio.testing.wait_all_tasks_blocked()
            (slow_conn,) = [c for c in server.node.connections.values() if c.id != fast_id]
            assert slow_conn.joined == {"s"}
            payload = "x" * 900
            for i in range(400):
                await fast.send(type="event:publish", sessionId="s", name="n", data=payload, ref=i)
            events = await fast.events("s", 400)
            assert [e["seq"] for e in events] == list(range(1, 401))
            await trio.sleep(10)
            assert slow_conn.close_code == CloseCode.SLOW_CONSUMER
            assert slow_conn.id not in server.node.connections
            slow_stream.abort()


async def test_shutdown_closes_clients_with_1001(autojump_clock: trio.testing.MockClock) -> None:
    async with open_test_server() as server, server.websocket() as ws:
        inbox = Inbox(ws)
        await inbox.request(type="session:join", sessionId="s")
        server.node.shutdown()
        with pytest.raises(trio_websocket.ConnectionClosed) as closed:
            while True:
                await ws.get_message()
        assert closed.value.reason.code == CloseCode.GOING_AWAY
