"""Property: random interleavings of publishes, drops and resumes never lose,
duplicate or reorder an event (in-process server, MockClock, fresh per example)."""

from __future__ import annotations

from typing import Any

import orjson
import trio
import trio.testing
import trio_websocket
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime.testing import TestServer, open_test_server

N_CLIENTS = 3
script_strategy = st.lists(
    st.tuples(
        st.sampled_from(["publish", "publish", "drop", "resume"]), st.integers(0, N_CLIENTS - 1)
    ),
    min_size=1,
    max_size=40,
)


class Member:
    def __init__(self, server: TestServer, n: int) -> None:
        self.server = server
        self.n = n
        self.seen: list[tuple[int, Any]] = []  # (seq, data) across every connection
        self.ws: trio_websocket.WebSocketConnection | None = None
        self.scope: trio.CancelScope | None = None
        self.stream: Any = None

    @property
    def last_seq(self) -> int:
        return self.seen[-1][0] if self.seen else 0

    async def connect(self, nursery: trio.Nursery) -> None:
        self.stream = self.server.connect_stream()
        joined = trio.Event()
        nursery.start_soon(self._run, joined)
        await joined.wait()

    async def _run(self, joined: trio.Event) -> None:
        with trio.CancelScope() as self.scope:
            async with trio.open_nursery() as nursery:
                ws = await trio_websocket.wrap_client_stream(nursery, self.stream, "t", "/")
                self.ws = ws
                await ws.send_message(
                    orjson.dumps(
                        {"type": "session:join", "sessionId": "p", "since": self.last_seq}
                    ).decode()
                )
                try:
                    while True:
                        frame = orjson.loads(await ws.get_message())
                        for m in frame if isinstance(frame, list) else [frame]:
                            if m["type"] == "session:joined":
                                joined.set()
                            elif m["type"] == "event":
                                self.seen.append((m["seq"], m["data"]))
                            elif m["type"] == "event:ack":
                                self.acked.set()
                except trio_websocket.ConnectionClosed:
                    pass

    acked: trio.Event

    async def publish(self, value: Any) -> None:
        assert self.ws is not None
        self.acked = trio.Event()
        await self.ws.send_message(
            orjson.dumps(
                {"type": "event:publish", "sessionId": "p", "name": "n", "data": value, "ref": 1}
            ).decode()
        )
        await self.acked.wait()

    def drop(self) -> None:
        """Vanish abruptly: no close frame."""
        self.stream.abort()
        assert self.scope is not None
        self.scope.cancel()
        self.ws = None


async def scenario(script: list[tuple[str, int]]) -> None:
    async with open_test_server() as server, trio.open_nursery() as nursery:
        members = [Member(server, n) for n in range(N_CLIENTS)]
        for member in members:
            await member.connect(nursery)
        published: list[Any] = []
        for op, n in script:
            member = members[n]
            if op == "publish" and member.ws is not None:
                value = {"by": n, "k": len(published)}
                await member.publish(value)
                published.append(value)
            elif op == "drop" and member.ws is not None:
                member.drop()
            elif op == "resume" and member.ws is None:
                await member.connect(nursery)
        for member in members:
            if member.ws is None:
                await member.connect(nursery)
        await trio.sleep(1)
        expected = list(enumerate(published, start=1))
        for member in members:
            assert member.seen == expected, (member.n, member.seen, expected)
        nursery.cancel_scope.cancel()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(script_strategy)
def test_publish_drop_resume_interleavings_lose_nothing(script: list[tuple[str, int]]) -> None:
    trio.run(scenario, script, clock=trio.testing.MockClock(autojump_threshold=0))
