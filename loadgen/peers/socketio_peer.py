"""Peer server: python-socketio (ASGI on uvicorn); fan-out via rooms and sio.emit(room=...).

Tandem's messages travel as the payload of one socket.io event named "msg", so on the wire a
publish looks like ``42["msg",{"type":"event:publish",...}]``.
"""

from __future__ import annotations

from typing import Any

import socketio
import uvicorn

from loadgen.peers.common import Hub, error, new_user_id, parse_port

sio = socketio.AsyncServer(async_mode="asgi", cors_allowed_origins="*", transports=["websocket"])
hub: Hub[str] = Hub()
users: dict[str, str] = {}


@sio.event  # type: ignore[untyped-decorator]
async def connect(sid: str, environ: dict[str, Any]) -> None:
    users[sid] = new_user_id()


@sio.event  # type: ignore[untyped-decorator]
async def disconnect(sid: str, *args: Any) -> None:
    hub.leave_all(sid)
    users.pop(sid, None)


@sio.on("msg")  # type: ignore[untyped-decorator]
async def on_msg(sid: str, msg: dict[str, Any]) -> None:
    user_id = users[sid]
    kind = msg.get("type")
    if kind == "event:publish":
        out = hub.publish(user_id, msg)
        if out is None:
            await sio.emit("msg", error("not joined"), to=sid)
            return
        session, event, ack = out
        await sio.emit("msg", event, room=session.id)
        await sio.emit("msg", ack, to=sid)
    elif kind == "presence:update":
        pres = hub.presence(user_id, msg)
        if pres is not None:
            session, update = pres
            await sio.emit("msg", update, room=session.id, skip_sid=sid)
    elif kind == "session:join":
        session_id = str(msg.get("sessionId"))
        await sio.enter_room(sid, session_id)
        await sio.emit("msg", hub.join(sid, user_id, session_id), to=sid)
    elif kind == "ping":
        await sio.emit("msg", {"type": "pong"}, to=sid)


def main() -> None:
    port = parse_port(__doc__ or "")
    print(f"PORT {port}", flush=True)
    uvicorn.run(
        socketio.ASGIApp(sio),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        ws="websockets-sansio",
        ws_per_message_deflate=False,
        lifespan="off",
    )


if __name__ == "__main__":
    main()
