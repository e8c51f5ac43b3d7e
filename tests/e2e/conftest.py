"""Helpers for end-to-end tests against an in-process server."""

from __future__ import annotations

from typing import Any

import orjson
import trio
import trio_websocket


class Inbox:
    """Reads frames from a WebSocket and hands out messages one by one (arrays flattened)."""

    def __init__(self, ws: trio_websocket.WebSocketConnection) -> None:
        self.ws = ws
        self.pending: list[dict[str, Any]] = []

    async def next(self) -> dict[str, Any]:
        while not self.pending:
            frame = orjson.loads(await self.ws.get_message())
            self.pending.extend(frame if isinstance(frame, list) else [frame])
        return self.pending.pop(0)

    async def next_of(self, *types: str) -> dict[str, Any]:
        while True:
            message = await self.next()
            if message["type"] in types:
                return message

    async def send(self, **message: Any) -> None:
        await self.ws.send_message(orjson.dumps(message).decode())

    async def request(self, **message: Any) -> dict[str, Any]:
        """Send with a ref and return the reply carrying it (other messages are skipped)."""
        ref = message.setdefault("ref", f"r{id(message)}")
        await self.send(**message)
        while True:
            reply = await self.next()
            if reply.get("ref") == ref:
                return reply

    async def events(self, session_id: str, until_seq: int) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        while not out or out[-1]["seq"] < until_seq:
            message = await self.next_of("event")
            if message["sessionId"] == session_id:
                out.append(message)
        return out

    async def quiet(self, seconds: float = 1.0) -> list[dict[str, Any]]:
        """Everything that arrives within ``seconds``."""
        got: list[dict[str, Any]] = []
        with trio.move_on_after(seconds):
            while True:
                got.append(await self.next())
        return got
