"""/metrics after known traffic: exact counter and histogram deltas."""

from __future__ import annotations

import trio
import trio.testing

from runtime.testing import open_test_server
from tests.e2e.conftest import Inbox
from tests.observability.helpers import delta, scrape, value

OP = "tandem_operation_seconds_count"


async def test_a_publish_moves_exactly_its_counters(autojump_clock: trio.testing.MockClock) -> None:
    async with open_test_server() as server, server.websocket() as ws:
        inbox = Inbox(ws)
        joined = await inbox.request(type="session:join", sessionId="doc-1")
        assert joined["type"] == "session:joined"
        await inbox.next_of("participant:joined")  # presence settled: nothing else in flight
        await trio.sleep(1)
        before = await scrape(server)

        payload = b'{"type":"event:publish","sessionId":"doc-1","name":"edit","data":1,"ref":"p1"}'
        await ws.send_message(payload.decode())
        event = await inbox.next_of("event")
        ack = await inbox.next_of("event:ack")
        assert (event["seq"], ack["ref"]) == (1, "p1")
        after = await scrape(server)

    assert delta(before, after, OP, operation="publish") == 1
    assert delta(before, after, OP, operation="join") == 0
    assert delta(before, after, "tandem_messages_in_total") == 1
    # A masked client frame: 2 header bytes + 4 mask bytes + the payload.
    assert delta(before, after, "tandem_bytes_in_total") == len(payload) + 6
    assert delta(before, after, "tandem_frames_flushed_total") == 1
    assert delta(before, after, "tandem_frame_messages_count") == 1
    assert delta(before, after, "tandem_frame_messages_sum") == 1  # one event in the frame
    assert delta(before, after, "tandem_fanout_deliveries_total") == 1  # one member
    assert delta(before, after, "tandem_messages_out_total") == 2  # the event frame and the ack
    assert delta(before, after, "tandem_bytes_out_total") > 0
    # Publish-to-delivery took no (virtual) time: it sits in the lowest bucket.
    low = "tandem_operation_seconds_bucket"
    assert delta(before, after, low, operation="publish", le="0.0005") == 1
    # The first scrape itself is in the second one.
    assert delta(before, after, "tandem_http_request_seconds_count", route="GET /metrics") == 1


async def test_joins_leaves_and_closes_by_code(autojump_clock: trio.testing.MockClock) -> None:
    async with open_test_server() as server:
        before = await scrape(server)
        async with server.websocket() as ws:
            inbox = Inbox(ws)
            await inbox.request(type="session:join", sessionId="doc-2")
            await inbox.request(type="session:leave", sessionId="doc-2")
            assert value(await scrape(server), "tandem_connections_open") == 1
        await trio.sleep(1.0)  # the close handshake and the connection's end
        assert not server.node.connections
        after = await scrape(server)

    assert delta(before, after, OP, operation="join") == 1
    assert delta(before, after, OP, operation="leave") == 1
    assert delta(before, after, "tandem_connections_opened_total") == 1
    assert delta(before, after, "tandem_connections_closed_total", code="1000") == 1
    assert value(after, "tandem_connections_open") == 0


async def test_presence_updates_and_gauges(autojump_clock: trio.testing.MockClock) -> None:
    async with open_test_server() as server, server.websocket() as ws:
        inbox = Inbox(ws)
        await inbox.request(type="session:join", sessionId="doc-3")
        await inbox.next_of("participant:joined")
        before = await scrape(server)
        await inbox.send(type="presence:update", sessionId="doc-3", state={"cursor": 1})
        await inbox.next_of("presence:update", "presence")
        after = await scrape(server)

    assert delta(before, after, OP, operation="presence") == 1
    assert value(after, "tandem_actors", kind="session") == 1
    assert value(after, "tandem_actors", kind="presence") == 1
    assert value(after, "tandem_mailbox_depth", kind="session") == 0
    assert value(after, "tandem_alert_active", alert="publish_p99") == 0
    assert value(after, "process_resident_memory_bytes") > 0
    assert ("process_cpu_seconds_total", frozenset()) in after
