"""Threads, comments and reactions as plain records, their JSON shape and value rules.

Pure: no trio, no stores. The service (``runtime.comments.service``) decides,
the stores (``runtime.gateways.comment_store*``) keep, this module says what a valid
value is and how a record looks on the wire.
"""

from __future__ import annotations

import unicodedata
from typing import Any

import attrs

JSON = Any

#: Deepest reply chain: a comment replying to the thread has depth 0, a reply to it 1, ...
MAX_DEPTH = 8
#: Most users one comment may mention.
MAX_MENTIONS = 50
#: Longest emoji string, in characters (a ZWJ family sequence is about 11).
MAX_EMOJI_CHARS = 32
#: Largest page of threads per listing.
MAX_PAGE = 200


class CommentError(Exception):
    """A request the service refuses; ``code`` is a protocol error code."""

    code = "internal"

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.path = path


class NotFound(CommentError):
    code = "not_found"


class Forbidden(CommentError):
    code = "forbidden"


class Invalid(CommentError):
    code = "invalid_message"


class Unavailable(CommentError):
    """The session's stream could not take the event now (its owner node did not answer)."""

    code = "overloaded"


@attrs.frozen(slots=True)
class ThreadRecord:
    id: str
    session_id: str
    author_id: str
    anchor: JSON  # free-form JSON, or None
    metadata: JSON  # an object
    resolved: bool
    resolved_by: str | None
    resolved_at: float | None
    comment_count: int  # comments ever added (positions handed out), tombstones included
    created_at: float
    updated_at: float
    pos: int = 0  # listing order and cursor; assigned by the store


@attrs.frozen(slots=True)
class CommentRecord:
    id: str
    thread_id: str
    session_id: str
    parent_id: str | None  # None: replies to the thread itself
    depth: int
    position: int  # 1, 2, ... in the order the thread received them
    author_id: str
    body: str
    mentions: tuple[str, ...]
    created_at: float
    edited_at: float | None
    deleted_at: float | None
    deleted_by: str | None


@attrs.frozen(slots=True)
class ThreadFilter:
    resolved: bool | None = None
    author_id: str | None = None
    metadata: dict[str, JSON] = attrs.field(factory=dict)  # top-level key == value
    anchor: JSON = None
    match_anchor: bool = False  # anchor None is a value too: filter on it only when asked


# -- JSON ---------------------------------------------------------------------------------


def thread_json(thread: ThreadRecord) -> dict[str, JSON]:
    return {
        "id": thread.id,
        "sessionId": thread.session_id,
        "authorId": thread.author_id,
        "anchor": thread.anchor,
        "metadata": thread.metadata,
        "resolved": thread.resolved,
        "resolvedBy": thread.resolved_by,
        "resolvedAt": thread.resolved_at,
        "commentCount": thread.comment_count,
        "createdAt": thread.created_at,
        "updatedAt": thread.updated_at,
    }


def reactions_json(reactions: dict[str, list[str]]) -> dict[str, JSON]:
    """``{emoji: {"count": n, "users": [...]}}`` in a stable order."""
    return {
        emoji: {"count": len(users), "users": sorted(users)}
        for emoji, users in sorted(reactions.items())
        if users
    }


def comment_json(comment: CommentRecord, reactions: dict[str, list[str]]) -> dict[str, JSON]:
    deleted = comment.deleted_at is not None
    return {
        "id": comment.id,
        "threadId": comment.thread_id,
        "sessionId": comment.session_id,
        "parentId": comment.parent_id,
        "depth": comment.depth,
        "position": comment.position,
        "authorId": comment.author_id,
        "body": "" if deleted else comment.body,  # a tombstone keeps its place, not its text
        "mentions": [] if deleted else list(comment.mentions),
        "createdAt": comment.created_at,
        "editedAt": comment.edited_at,
        "deleted": deleted,
        "deletedAt": comment.deleted_at,
        "reactions": {} if deleted else reactions_json(reactions),
    }


# -- value rules --------------------------------------------------------------------------

_EMOJI_JOINERS = {"\u200d", "\ufe0f", "\ufe0e", "\u20e3"}  # ZWJ, variation selectors, keycap


def _emoji_char(c: str) -> bool:
    cp = ord(c)
    if c in _EMOJI_JOINERS:
        return True
    if 0x1F3FB <= cp <= 0x1F3FF:  # skin tone modifiers (Sk)
        return True
    if 0x1F1E6 <= cp <= 0x1F1FF:  # regional indicators (flags)
        return True
    if 0xE0020 <= cp <= 0xE007F:  # tag characters (subdivision flags)
        return True
    return unicodedata.category(c) in ("So", "Sk", "Mn", "Cf") and not c.isascii()


def emoji_problem(value: object) -> str | None:
    """Why ``value`` is not an emoji reaction, or None.

    1-32 characters, every one an emoji-ish code point (symbols So/Sk, combining
    marks, ZWJ, variation selectors, skin tones, regional indicators, tags) and at
    least one pictographic symbol. ASCII is refused outright, keycaps aside
    (``#``/``*``/digits followed by U+FE0F U+20E3), so ``+1`` or ``lol`` is no emoji.
    """
    if not isinstance(value, str):
        return "must be a string"
    if not 1 <= len(value) <= MAX_EMOJI_CHARS:
        return f"must be 1-{MAX_EMOJI_CHARS} characters"
    keycap = len(value) in (2, 3) and value[0] in "#*0123456789" and value.endswith("\u20e3")
    chars = value[1:] if keycap else value
    if not all(_emoji_char(c) for c in chars):
        return "must be emoji characters only"
    if not keycap and not any(
        unicodedata.category(c) == "So" or 0x1F1E6 <= ord(c) <= 0x1F1FF for c in value
    ):
        return "must contain an emoji"
    return None
