"""A node dies without a goodbye: its users leave presence everywhere within the timeout."""

from __future__ import annotations

import trio

from runtime.app import memory_stores
from runtime.testing import open_test_server
from tests.cluster.helpers import SECRET, open_nodes
from tests.e2e.conftest import Inbox

TIMEOUT = 3.0  # TANDEM_PRESENCE_TIMEOUT for this test: node leases of 1.5 s


async def test_dead_nodes_members_leave_presence(redis_url: str, redis_prefix: str) -> None:
    stores = memory_stores()
    async with open_nodes(2, redis_url, redis_prefix, stores=stores, presence_timeout=TIMEOUT) as (
        a,
        b,
    ):
        async with (
            a.websocket(token=a.token("ann")) as wa,
            b.websocket(token=b.token("bob")) as wb,
        ):
            ia, ib = Inbox(wa), Inbox(wb)
            with trio.fail_after(10):
                assert (await ia.request(type="session:join", sessionId="doc"))["type"] == (
                    "session:joined"
                )  # ann's node owns the session
                assert (await ib.request(type="session:join", sessionId="doc"))["type"] == (
                    "session:joined"
                )

            async def doomed(task_status: trio.TaskStatus[None]) -> None:
                async with open_test_server(
                    stores=stores,
                    redis_url=redis_url,
                    redis_prefix=redis_prefix,
                    jwt_secret=SECRET,
                    presence_timeout=TIMEOUT,
                ) as c:
                    async with c.websocket(token=c.token("cat")) as wc:
                        joined = await Inbox(wc).request(type="session:join", sessionId="doc")
                        assert joined["type"] == "session:joined", joined
                        task_status.started()
                        await trio.sleep_forever()

            with trio.fail_after(10):
                async with trio.open_nursery() as nursery:
                    await nursery.start(doomed)
                    for inbox in (ia, ib):
                        while True:
                            message = await inbox.next_of("participant:joined")
                            if message["participant"]["userId"] == "cat":
                                break
                    nursery.cancel_scope.cancel()  # no graceful shutdown: no leave is sent
            killed_at = trio.current_time()
            with trio.fail_after(TIMEOUT):
                for inbox in (ia, ib):
                    while (await inbox.next_of("participant:left"))["userId"] != "cat":
                        pass
            assert trio.current_time() - killed_at < TIMEOUT

            # the survivors keep one order
            with trio.fail_after(10):
                for i in range(10):
                    await (ia if i % 2 else ib).send(
                        type="event:publish", sessionId="doc", name="n", data=i
                    )
                seen = [await inbox.events("doc", 10) for inbox in (ia, ib)]
            orders = [[(e["seq"], e["data"]) for e in events] for events in seen]
            assert orders[0] == orders[1]
            assert [seq for seq, _ in orders[0]] == list(range(1, 11))
            assert sorted(data for _, data in orders[0]) == list(range(10))
