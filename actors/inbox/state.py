"""Pure rules of a user's inbox: which notifications group, and what a new one looks like.

Repeated activity of one kind on one thread (one ``group_key``) within
``window`` seconds of the group's last activity, while it is still unread,
becomes one notification with a ``count``; anything else is a new notification.
"""

from __future__ import annotations

from typing import Any

import attrs

from runtime.gateways.notifications import NotificationRecord, merged_actors

JSON = Any

#: Notification kinds Tandem itself produces; apps post their own over HTTP.
BUILTIN_KINDS = ("mention", "reply", "thread_resolved")


@attrs.frozen
class Incoming:
    """One occurrence, before grouping. Whose it is, is the inbox it is sent to: a
    comment's readers all get the same one."""

    kind: str
    session_id: str | None = None
    thread_id: str | None = None
    actor_id: str | None = None
    data: JSON = attrs.field(factory=dict)
    group_key: str | None = None  # None: derived (kind + thread) for thread activity


def group_key(incoming: Incoming) -> str | None:
    """The key occurrences group under; None never groups."""
    if incoming.group_key is not None:
        return incoming.group_key
    if incoming.thread_id is None:
        return None
    return f"{incoming.kind}:{incoming.session_id}:{incoming.thread_id}"


def groups_with(existing: NotificationRecord | None, now: float, window: float) -> bool:
    """True if the occurrence joins ``existing`` (unread, touched within the window)."""
    return (
        existing is not None
        and window > 0
        and existing.read_at is None
        and now - existing.updated_at <= window
    )


def new_notification(
    user_id: str,
    incoming: Incoming,
    notification_id: str,
    now: float,
    *,
    count: int = 1,
    actor_ids: tuple[str, ...] | None = None,
) -> NotificationRecord:
    """A new notification for ``incoming`` (standing for ``count`` occurrences by
    ``actor_ids``, by default just its own)."""
    return NotificationRecord(
        id=notification_id,
        user_id=user_id,
        kind=incoming.kind,
        group_key=group_key(incoming),
        session_id=incoming.session_id,
        thread_id=incoming.thread_id,
        actor_ids=merged_actors((), incoming.actor_id) if actor_ids is None else actor_ids,
        data=incoming.data,
        count=count,
        created_at=now,
        updated_at=now,
        read_at=None,
    )
