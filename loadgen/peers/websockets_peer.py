"""Peer server: the `websockets` library (asyncio), fan-out with websockets.broadcast()."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed

from loadgen.peers.common import Hub, error, new_user_id, parse_port

hub: Hub[ServerConnection] = Hub()


async def handler(ws: ServerConnection) -> None:
    user_id = new_user_id()
    try:
        async for raw in ws:
            try:
                msg: dict[str, Any] = orjson.loads(raw)
            except orjson.JSONDecodeError:
                await ws.send(orjson.dumps(error("bad json")).decode())
                continue
            kind = msg.get("type")
            if kind == "event:publish":
                out = hub.publish(user_id, msg)
                if out is None:
                    await ws.send(orjson.dumps(error("not joined")).decode())
                    continue
                session, event, ack = out
                broadcast(session.members.keys(), orjson.dumps(event).decode())
                await ws.send(orjson.dumps(ack).decode())
            elif kind == "presence:update":
                pres = hub.presence(user_id, msg)
                if pres is not None:
                    session, update = pres
                    others = [c for c in session.members if c is not ws]
                    broadcast(others, orjson.dumps(update).decode())
            elif kind == "session:join":
                joined = hub.join(ws, user_id, str(msg.get("sessionId")))
                await ws.send(orjson.dumps(joined).decode())
            elif kind == "ping":
                await ws.send('{"type":"pong"}')
    except ConnectionClosed:
        pass  # the generator tears connections down abruptly at the end of a run
    finally:
        hub.leave_all(ws)


async def main(port: int) -> None:
    async with serve(handler, "127.0.0.1", port, compression=None, max_queue=None) as server:
        bound = server.sockets[0].getsockname()[1]
        print(f"PORT {bound}", flush=True)
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(parse_port(__doc__ or "")))
