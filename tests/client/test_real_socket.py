"""End to end over a real loopback socket, using the url path (real clock)."""

from __future__ import annotations

import pytest
import trio

from client import ConnectionEnded, open_tandem_client
from runtime.testing import open_test_server
from tests.client.helpers import collect_events, next_message

pytestmark = pytest.mark.integration


async def test_url_path_end_to_end() -> None:
    with trio.fail_after(10):
        async with open_test_server(real_socket=True) as server:
            async with (
                open_tandem_client(server.url, token=server.token("alice")) as alice,
                open_tandem_client(server.url, token=server.token("bob")) as bob,
            ):
                assert alice.user_id == "alice"
                await alice.join("doc")
                await bob.join("doc")
                assert await alice.publish("doc", "edit", {"n": 1}) == 1
                assert await bob.publish("doc", "edit", {"n": 2}) == 2
                for client in (alice, bob):
                    events = await collect_events(client, "doc", 2)
                    assert [e["data"] for e in events] == [{"n": 1}, {"n": 2}]
                await bob.update_presence("doc", {"typing": True})
                await next_message(alice, "presence")
                assert await alice.ping() >= 0
                # A server-side drop over TCP: bob resumes and misses nothing.
                assert bob.connection_id is not None
                server.node.connections[bob.connection_id].abort(4000, "test")
                assert await alice.publish("doc", "edit", {"n": 3}) == 3
                events = await collect_events(bob, "doc", 1)
                assert [e["seq"] for e in events] == [3]
                assert bob.reconnects == 1


async def test_url_path_bad_token_is_refused() -> None:
    with trio.fail_after(10):
        async with open_test_server(real_socket=True) as server:
            with pytest.raises(ConnectionEnded) as info:
                async with open_tandem_client(server.url, token="nope"):
                    pytest.fail("entered with a bad token")
            assert info.value.code == 4402
