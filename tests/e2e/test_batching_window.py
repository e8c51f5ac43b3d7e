"""A session whose fan-out is heavy waits for more events per frame; a light one does not."""

from __future__ import annotations

import orjson
import trio
import trio.testing

from runtime.testing import open_test_server
from tests.e2e.conftest import Inbox


async def _events_per_frame(**settings: float) -> list[int]:
    """200 events/s into a two-member session for half a second, as the watcher's frames."""
    async with open_test_server(batch_delay=0.01, batch_delay_max=0.03, **settings) as server:
        async with (
            server.websocket(token=server.token("ann")) as a,
            server.websocket(token=server.token("bob")) as b,
        ):
            ann, bob = Inbox(a), Inbox(b)
            await ann.request(type="session:join", sessionId="doc")
            await bob.request(type="session:join", sessionId="doc")
            await bob.quiet(1)  # ann's arrival and presence, before counting frames
            sizes: list[int] = []
            async with trio.open_nursery() as nursery:

                async def publish() -> None:
                    for n in range(100):
                        await ann.send(type="event:publish", sessionId="doc", name="n", data=n)
                        await trio.sleep(0.005)

                nursery.start_soon(publish)
                seen = 0
                while seen < 100:
                    frame = orjson.loads(await b.get_message())
                    messages = frame if isinstance(frame, list) else [frame]
                    events = [m["data"] for m in messages if m["type"] == "event"]
                    assert events == list(range(seen, seen + len(events)))  # in order, no gap
                    seen += len(events)
                    if events:
                        sizes.append(len(events))
            return sizes


async def test_the_window_opens_by_offered_rate(autojump_clock: trio.testing.MockClock) -> None:
    # 200 events/s to 2 local members is 400 deliveries/s: past twice a widen rate of 100,
    # so the window is fully open (30 ms, ~6 events a frame); with the rule off, and the
    # CPU share of an in-memory test negligible, every event is a frame of its own.
    heavy = await _events_per_frame(batch_widen_rate=100)
    light = await _events_per_frame(batch_widen_rate=0)
    assert light == [1] * 100
    assert len(heavy) < 40
    assert max(heavy) >= 5
