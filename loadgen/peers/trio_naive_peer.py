"""Peer server: trio-websocket, naive fan-out (await send_message to each member in turn)."""

from __future__ import annotations

from functools import partial
from typing import Any

import orjson
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest, serve_websocket

from loadgen.peers.common import Hub, error, new_user_id, parse_port

hub: Hub[WebSocketConnection] = Hub()


async def send_quietly(ws: WebSocketConnection, text: str) -> None:
    try:
        await ws.send_message(text)
    except ConnectionClosed:
        pass


async def handler(request: WebSocketRequest) -> None:
    ws = await request.accept()
    user_id = new_user_id()
    try:
        while True:
            try:
                raw = await ws.get_message()
            except ConnectionClosed:
                return
            try:
                msg: dict[str, Any] = orjson.loads(raw)
            except orjson.JSONDecodeError:
                await send_quietly(ws, orjson.dumps(error("bad json")).decode())
                continue
            kind = msg.get("type")
            if kind == "event:publish":
                out = hub.publish(user_id, msg)
                if out is None:
                    await send_quietly(ws, orjson.dumps(error("not joined")).decode())
                    continue
                session, event, ack = out
                text = orjson.dumps(event).decode()
                for member in list(session.members):
                    await send_quietly(member, text)
                await send_quietly(ws, orjson.dumps(ack).decode())
            elif kind == "presence:update":
                pres = hub.presence(user_id, msg)
                if pres is not None:
                    session, update = pres
                    text = orjson.dumps(update).decode()
                    for member in list(session.members):
                        if member is not ws:
                            await send_quietly(member, text)
            elif kind == "session:join":
                joined = hub.join(ws, user_id, str(msg.get("sessionId")))
                await send_quietly(ws, orjson.dumps(joined).decode())
            elif kind == "ping":
                await send_quietly(ws, '{"type":"pong"}')
    finally:
        hub.leave_all(ws)


async def main(port: int) -> None:
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            partial(
                serve_websocket,
                handler,
                "127.0.0.1",
                port,
                ssl_context=None,
                max_message_size=1 << 20,
            )
        )
        bound = server.port
        print(f"PORT {bound}", flush=True)


if __name__ == "__main__":
    trio.run(main, parse_port(__doc__ or ""))
