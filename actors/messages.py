"""Messages between actors, and the handle through which actors reach a client.

Every message is a small frozen attrs class; actors never call into each
other's state. ``Peer`` is what a session knows of a client connection: a
non-blocking way to hand it frames, like a reply channel in OTP.
"""

from __future__ import annotations

from typing import Any, Protocol

import attrs
import trio

from runtime.actor import Fail
from runtime.protocol.frames import SharedFrame
from runtime.protocol.messages import Ref

JSON = Any


class Peer(Protocol):
    """A client connection as actors see it. Every method returns at once."""

    @property
    def id(self) -> str: ...

    @property
    def user_id(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def closed(self) -> bool: ...

    def send_shared(self, frame: SharedFrame) -> None:
        """Queue a frame built once for many members (past the outbound bound: disconnect)."""

    def send(self, message: dict[str, JSON]) -> None:
        """Queue one message for this connection only."""

    def session_lost(self, session_id: str, reason: str) -> None:
        """The session actor stopped without the client leaving (crash, shutdown)."""

    def join_failed(self, session_id: str, ref: Ref) -> None:
        """The session actor stopped before it handled this peer's join: not a member.

        Answered with ``error`` ``internal`` and the join's ``ref`` (retry), so
        no join goes unanswered and the connection no longer counts the session.
        """


# --- to a session actor ------------------------------------------------------------


@attrs.frozen
class JoinSession:
    peer: Peer
    since: int | None
    ref: Ref
    enqueued_at: float = attrs.field(factory=trio.current_time, eq=False)  # for latency metrics


@attrs.frozen
class LeaveSession:
    peer: Peer
    ref: Ref
    reply: bool = True  # False when the connection is gone and nobody is listening
    enqueued_at: float = attrs.field(factory=trio.current_time, eq=False)


@attrs.frozen
class PublishEvent:
    peer: Peer
    name: str
    data: JSON
    durable: bool
    ref: Ref
    sensitive: bool = False  # store the payload encrypted (when keys are configured)
    enqueued_at: float = attrs.field(factory=trio.current_time, eq=False)  # publish-to-delivery


@attrs.frozen(eq=False)
class AppendEvent:
    """A durable event from the server itself (comments, threads, the HTTP API).

    It takes the next seq like any published event, is stored, broadcast and
    replayed the same way; ``reply`` (a channel of size 1) gets the seq once
    the event is durable, or the exception that stopped it.
    """

    name: str
    data: JSON
    user_id: str
    reply: trio.MemorySendChannel[int | Exception]
    sensitive: bool = False  # store the payload encrypted (when keys are configured)


@attrs.frozen
class PresenceChanged:
    """From the session's presence actor: what changed, as whole participant records.

    Whole records because this never leaves the process; the session actor
    diffs ``updated`` against its roster and sends members only what changed.
    """

    joined: list[JSON]
    left: list[str]
    updated: list[JSON]


@attrs.frozen(eq=False)
class GetParticipants:
    """A question: who is present. The answer goes to ``reply`` (a channel of size 1).

    A relay node answers with the exception that stopped it asking the owner.
    """

    reply: trio.MemorySendChannel[list[JSON] | Exception]


@attrs.frozen
class PresenceSnapshot:
    """From the presence actor after a :class:`Sync`: every present user, as whole records.

    The session actor reconciles its roster with it: members are told who
    left (users they hold that are not here), who joined, and what changed.
    """

    participants: list[JSON]


@attrs.frozen
class PresenceRestarted:
    """The session's presence actor was restarted after a crash, and so knows nobody.

    Sent by the registry before the fresh actor runs; the session actor answers
    with a :class:`Sync` of its members. A first spawn sends nothing: the
    session's own ``Track`` is what spawns it.
    """


PresenceToSession = PresenceChanged | PresenceSnapshot | PresenceRestarted

SessionMessage = (
    JoinSession
    | LeaveSession
    | PublishEvent
    | AppendEvent
    | PresenceChanged
    | PresenceSnapshot
    | PresenceRestarted
    | GetParticipants
    | Fail
)


# --- to a presence actor (coalesced per connection id) -----------------------------


@attrs.frozen
class Track:
    user_id: str
    name: str
    state: JSON = None


@attrs.frozen
class Untrack:
    pass


@attrs.frozen
class SetPresence:
    state: JSON
    at: float | None = attrs.field(default=None, eq=False)  # trio time posted, for metrics


@attrs.frozen
class Sync:
    """From the session actor: exactly these connections are members (by connection id).

    The presence actor untracks every other connection, tracks the ones it does
    not know (with the given state: the one members last saw), keeps the ones
    it knows as they are, and answers with a :class:`PresenceSnapshot`. Posted
    under :data:`SYNC_KEY`, so per-connection messages posted after it are
    applied after it.
    """

    members: dict[str, Track]


#: Mailbox keys of the presence actor's system messages (never a connection id).
SYNC_KEY = "\x00sync"
FAIL_KEY = "\x00fail"

PresenceMessage = Track | Untrack | SetPresence | Sync | Fail


def merge_presence(old: PresenceMessage, new: PresenceMessage) -> PresenceMessage | None:
    """Coalesce two queued presence messages of one connection into one.

    The result must leave the connection tracked or not exactly as applying both
    would (a wrong merge is a ghost or a missing member):

    * anything then Untrack is the Untrack. Even after a Track: that Track may
      re-track a connection that is already present (a rejoin or a resume), so
      dropping both would leave it tracked for good;
    * Untrack then Track is the Track (a leave and rejoin): the connection ends up
      present; if it was already tracked it keeps its state, as on a resume;
    * Untrack then SetPresence stays the Untrack (a late update of a leaver);
    * Track then SetPresence is a Track with that state; otherwise the newer wins.
    """
    if isinstance(new, Untrack):
        return new
    if isinstance(old, Untrack):
        return new if isinstance(new, Track) else old
    if isinstance(new, SetPresence) and isinstance(old, Track):
        return Track(old.user_id, old.name, new.state)
    return new
