"""Comments and notifications for :class:`client.TandemClient` (protocol v1).

The methods send the messages of ``docs/protocol.md`` ("Comments and
notifications") and return the reply's ``result`` as it is on the wire (dicts
with camelCase keys). Session messages need :meth:`TandemClient.join` first
(else :class:`TandemError` ``not_joined``); every change also arrives to every
member, this client included, as an ``event`` through
:meth:`TandemClient.messages` (``thread:created``, ``comment:created``, ...).

Refusals raise :class:`client.TandemError`: ``not_found`` (``path`` names the
unknown thread, comment or parent), ``forbidden`` (someone else's comment, or
the role does not allow it), ``invalid_message`` (``path``: ``$.body``,
``$.emoji``, ...), ``rate_limited`` (``retry_after``). Live notifications
arrive through :meth:`TandemClient.messages` as ``notification`` (new or
grown, with ``unread``), ``notifications`` (the snapshot after connecting) and
``notifications:unread`` (another tab read some).

>>> thread = await client.create_thread("doc-1", "Is this right?", mentions=["bob"])
>>> reply = await client.create_comment("doc-1", thread["id"], "Yes")
>>> await client.add_reaction("doc-1", reply["id"], "👍")
>>> await client.resolve_thread("doc-1", thread["id"])
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from client.transport import Message

JSON = Any


class CommentsMixin:
    """Comment and notification requests; :class:`TandemClient` provides :meth:`_call`."""

    async def _call(self, msg: Message) -> Message:
        """Send ``msg`` as a request and return its ``<type>:ok`` reply (raises on ``error``)."""
        raise NotImplementedError

    async def _result(self, msg: Message) -> dict[str, JSON]:
        reply = await self._call({k: v for k, v in msg.items() if v is not None})
        result: dict[str, JSON] = reply["result"]
        return result

    # -- threads and comments -----------------------------------------------------

    async def create_thread(
        self,
        session_id: str,
        body: str,
        *,
        anchor: JSON = None,
        metadata: dict[str, JSON] | None = None,
        mentions: Sequence[str] = (),
    ) -> dict[str, JSON]:
        """Start a thread; returns it with ``comments: [first]``."""
        return await self._result(
            {
                "type": "thread:create",
                "sessionId": session_id,
                "body": body,
                "anchor": anchor,
                "metadata": metadata,
                "mentions": list(mentions),
            }
        )

    async def update_thread(
        self,
        session_id: str,
        thread_id: str,
        *,
        metadata: dict[str, JSON] | None = None,
        anchor: JSON = None,
    ) -> dict[str, JSON]:
        """Replace a thread's metadata and/or anchor (None: unchanged); author or owner."""
        return await self._result(
            {
                "type": "thread:update",
                "sessionId": session_id,
                "threadId": thread_id,
                "metadata": metadata,
                "anchor": anchor,
            }
        )

    async def create_comment(
        self,
        session_id: str,
        thread_id: str,
        body: str,
        *,
        parent_id: str | None = None,
        mentions: Sequence[str] = (),
    ) -> dict[str, JSON]:
        """Write in a thread (a reply to ``parent_id`` when given); returns the comment."""
        return await self._result(
            {
                "type": "comment:create",
                "sessionId": session_id,
                "threadId": thread_id,
                "body": body,
                "parentId": parent_id,
                "mentions": list(mentions),
            }
        )

    reply = create_comment

    async def edit_comment(
        self,
        session_id: str,
        comment_id: str,
        body: str,
        *,
        mentions: Sequence[str] | None = None,
    ) -> dict[str, JSON]:
        """Change one's own comment (``mentions`` None: kept); returns it, ``editedAt`` set."""
        return await self._result(
            {
                "type": "comment:edit",
                "sessionId": session_id,
                "commentId": comment_id,
                "body": body,
                "mentions": None if mentions is None else list(mentions),
            }
        )

    async def delete_comment(self, session_id: str, comment_id: str) -> dict[str, JSON]:
        """Delete a comment (one's own, or any as the session's owner); returns the tombstone."""
        return await self._result(
            {"type": "comment:delete", "sessionId": session_id, "commentId": comment_id}
        )

    async def add_reaction(self, session_id: str, comment_id: str, emoji: str) -> dict[str, JSON]:
        """React; returns the comment with ``reactions: {emoji: {count, users}}``."""
        return await self._result(
            {
                "type": "reaction:add",
                "sessionId": session_id,
                "commentId": comment_id,
                "emoji": emoji,
            }
        )

    async def remove_reaction(
        self, session_id: str, comment_id: str, emoji: str
    ) -> dict[str, JSON]:
        """Take one's reaction back; returns the comment."""
        return await self._result(
            {
                "type": "reaction:remove",
                "sessionId": session_id,
                "commentId": comment_id,
                "emoji": emoji,
            }
        )

    async def resolve_thread(self, session_id: str, thread_id: str) -> dict[str, JSON]:
        """Mark a thread resolved (no change, no event if it already is); returns the thread."""
        return await self._result(
            {"type": "thread:resolve", "sessionId": session_id, "threadId": thread_id}
        )

    async def reopen_thread(self, session_id: str, thread_id: str) -> dict[str, JSON]:
        """Reopen a resolved thread; returns the thread."""
        return await self._result(
            {"type": "thread:reopen", "sessionId": session_id, "threadId": thread_id}
        )

    async def list_threads(
        self,
        session_id: str,
        *,
        resolved: bool | None = None,
        author_id: str | None = None,
        metadata: dict[str, JSON] | None = None,
        anchor: JSON = None,
        after: str | None = None,
        limit: int | None = None,
    ) -> dict[str, JSON]:
        """One page of threads, oldest first: ``{threads, next}``; pass ``next`` as ``after``."""
        return await self._result(
            {
                "type": "thread:list",
                "sessionId": session_id,
                "resolved": resolved,
                "authorId": author_id,
                "metadata": metadata,
                "anchor": anchor,
                "after": after,
                "limit": limit,
            }
        )

    async def iter_threads(
        self,
        session_id: str,
        *,
        resolved: bool | None = None,
        author_id: str | None = None,
        metadata: dict[str, JSON] | None = None,
        anchor: JSON = None,
        page_size: int | None = None,
    ) -> AsyncIterator[dict[str, JSON]]:
        """Every matching thread, following the cursor page by page."""
        after: str | None = None
        while True:
            page = await self.list_threads(
                session_id,
                resolved=resolved,
                author_id=author_id,
                metadata=metadata,
                anchor=anchor,
                after=after,
                limit=page_size,
            )
            for thread in page["threads"]:
                yield thread
            after = page["next"]
            if after is None:
                return

    async def get_thread(self, session_id: str, thread_id: str) -> dict[str, JSON]:
        """A thread with every comment (tombstones included) in ``position`` order."""
        return await self._result(
            {"type": "thread:get", "sessionId": session_id, "threadId": thread_id}
        )

    # -- notifications ------------------------------------------------------------

    async def list_notifications(
        self, *, before: int | None = None, limit: int | None = None, unread_only: bool = False
    ) -> dict[str, JSON]:
        """Newest activity first: ``{notifications, next, unread}``; pass ``next`` as ``before``."""
        return await self._result(
            {
                "type": "notifications:list",
                "before": before,
                "limit": limit,
                "unreadOnly": unread_only or None,
            }
        )

    async def mark_notification_read(self, notification_id: str) -> dict[str, JSON]:
        """Mark one read: ``{notification, unread}``; ``not_found`` if it is not yours."""
        return await self._result({"type": "notification:read", "id": notification_id})

    async def mark_all_notifications_read(self) -> dict[str, JSON]:
        """Mark every notification read: ``{marked, unread}``."""
        return await self._result({"type": "notifications:read_all"})


__all__ = ["CommentsMixin"]
