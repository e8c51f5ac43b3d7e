"""Session bookkeeping shared by the Python peer servers (the sending is theirs)."""

from __future__ import annotations

import argparse
import itertools
import time
from typing import Any, Generic, TypeVar

C = TypeVar("C")

_user_ids = itertools.count(1)


def new_user_id() -> str:
    return f"u{next(_user_ids)}"


def parse_port(description: str) -> int:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--port", type=int, default=0, help="TCP port (0 = pick one)")
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args()
    return int(args.port)


class Session(Generic[C]):
    def __init__(self, session_id: str) -> None:
        self.id = session_id
        self.seq = 0
        self.members: dict[C, str] = {}  # connection -> userId


class Hub(Generic[C]):
    """Sessions by id. Every method returns the messages to send; callers do the I/O."""

    def __init__(self) -> None:
        self.sessions: dict[str, Session[C]] = {}

    def join(self, conn: C, user_id: str, session_id: str) -> dict[str, Any]:
        session = self.sessions.get(session_id)
        if session is None:
            session = self.sessions[session_id] = Session(session_id)
        session.members[conn] = user_id
        return {
            "type": "session:joined",
            "sessionId": session_id,
            "seq": session.seq,
            "participants": sorted(set(session.members.values())),
            "presence": {},
        }

    def publish(
        self, user_id: str, msg: dict[str, Any]
    ) -> tuple[Session[C], dict[str, Any], dict[str, Any]] | None:
        session = self.sessions.get(msg.get("sessionId", ""))
        if session is None:
            return None
        session.seq += 1
        event = {
            "type": "event",
            "sessionId": session.id,
            "seq": session.seq,
            "name": msg.get("name"),
            "data": msg.get("data"),
            "userId": user_id,
            "ts": time.time_ns() // 1_000_000,
        }
        ack = {
            "type": "event:ack",
            "ref": msg.get("ref"),
            "sessionId": session.id,
            "seq": session.seq,
        }
        return session, event, ack

    def presence(
        self, user_id: str, msg: dict[str, Any]
    ) -> tuple[Session[C], dict[str, Any]] | None:
        session = self.sessions.get(msg.get("sessionId", ""))
        if session is None:
            return None
        update = {
            "type": "presence",
            "sessionId": session.id,
            "userId": user_id,
            "state": msg.get("state"),
        }
        return session, update

    def leave_all(self, conn: C) -> None:
        for sid in [sid for sid, s in self.sessions.items() if conn in s.members]:
            session = self.sessions[sid]
            del session.members[conn]
            if not session.members:
                del self.sessions[sid]


def error(message: str) -> dict[str, Any]:
    return {"type": "error", "message": message}
