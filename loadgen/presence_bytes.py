"""Bytes of one presence flush in a cursor storm, whole records vs lean change entries.

Not a benchmark (no timing): one flush of 200 state-only changes (a 500 x 20 Hz storm
sends ~200 changed users per 20 ms flush) with the loadgen's state shape, encoded with
the server's codec as the session actor does. "before" is the message as it was (whole
participant records), "after" what the Roster sends now, and "deflated" that frame as
sent to members that negotiated permessage-deflate (the pad is random, as the loadgen's).

    python -m loadgen.presence_bytes
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from actors.messages import PresenceChanged
from actors.presence.roster import Roster
from loadgen.worker import random_pad
from runtime.protocol import messages as wire
from runtime.protocol.codec import encode
from runtime.protocol.frames import SharedFrame

USERS = 200
SESSION = "s0"  # the loadgen's session ids


def record(n: int, state: object) -> dict[str, object]:
    return {
        "userId": f"user-{n}",
        "name": f"User {n}",
        "state": state,
        "status": "active",
        "connections": 1,
    }


def loadgen_state(n: int) -> dict[str, object]:
    pad = random_pad(40, random.Random(n).randbytes)  # seeded: the same bytes every run
    return {"pt": 1795000000000000 + n, "pc": 100 + n, "pad": pad}


def main() -> None:
    roster = Roster()
    for n in range(USERS):  # everyone joined (and members hold their records) long ago
        roster.joined(record(n, loadgen_state(n)))
    moved = [record(n, loadgen_state(n + 1)) for n in range(USERS)]  # each cursor moved
    before = encode(wire.presence(SESSION, moved))
    (message,) = roster.broadcast(SESSION, PresenceChanged(joined=[], left=[], updated=moved))
    after = encode(message)
    assert [set(c) for c in message["changes"]] == [{"userId", "state"}] * USERS
    print(f"one flush, {USERS} state-only changes, {SESSION!r}:")
    print(f"  before (whole records): {len(before):6d} bytes, {len(before) / USERS:.1f} per change")
    print(f"  after  (lean entries):  {len(after):6d} bytes, {len(after) / USERS:.1f} per change")
    print(f"  after / before: {len(after) / len(before):.2f}")
    frame = SharedFrame(after)
    deflated = frame.deflated()
    print(f"  frame {len(frame.websocket):6d} bytes, deflated {len(deflated):6d} bytes", end="")
    print(f" ({len(deflated) / len(frame.websocket):.2f})")


if __name__ == "__main__":
    main()
