"""The comment service: every change to threads, comments and reactions goes through here.

One change is: validate (nothing is written if anything is wrong), write to the
store, append one durable event to the session's stream (``node.append_event``:
every member gets it in order, resumes replay it), queue it for webhooks, then
hand notifications to the recipients' inboxes. Changes to one session are
serialised by a lock per session, so the stream's order is the store's order
(positions within a thread, ``comment:created`` events) on this node. New
comments, the frequent change, are written in batches by a writer per session
(``writer.py``, ``batch.py``): one transaction and one append for all that queued.

Callers (WebSocket handlers, the HTTP API) have already checked the caller's role
for the operation; the service checks ownership (edit own comments; delete own,
or any as the session's owner).
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import attrs
import orjson

from runtime.comments.batch import (
    Appended,
    CommentBatches,
    Created,
    NewThread,
    Queued,
    QueueEvents,
    stream_error,
)
from runtime.comments.locks import SessionLocks, Turn
from runtime.comments.model import (
    MAX_MENTIONS,
    MAX_PAGE,
    CommentRecord,
    Forbidden,
    Invalid,
    NotFound,
    ThreadFilter,
    ThreadRecord,
    comment_json,
    emoji_problem,
    thread_json,
)
from runtime.comments.writer import CommentWriters
from runtime.gateways.comment_store import CommentStore
from runtime.security.permissions import Role
from runtime.security.validation import Limits, check_metadata, check_text, valid_id

JSON = Any
Append = Callable[[str, str, JSON, str], Awaitable[int]]  # (session, name, data, user) -> seq
Published = Callable[[str, int, str, JSON], Awaitable[None]]  # (session, seq, name, data)
Notify = Callable[["Notice"], Awaitable[None]]

MAX_ANCHOR_BYTES = 4096


@attrs.frozen
class Notice:
    """Notifications to hand out after a change: ``kind`` for each of ``user_ids``."""

    user_ids: tuple[str, ...]
    kind: str  # mention | reply | thread_resolved
    session_id: str
    thread_id: str
    actor_id: str
    data: JSON


@attrs.frozen
class Change:
    """What a request did: its result and the seq of its event (None: nothing changed)."""

    result: dict[str, JSON]
    seq: int | None


class CommentService:
    def __init__(
        self,
        store: CommentStore,
        *,
        append: Append,
        published: Published,
        notify: Notify,
        limits: Limits,
        clock: Callable[[], float],
        queue_events: QueueEvents | None = None,
    ) -> None:
        """``queue_events`` queues several events on a session's stream in order, to be
        awaited later (default: ``append`` one by one, awaiting each).

        Run :attr:`writers` (``nursery.start(service.writers.run)``) to batch new
        comments; without it each is written on its own.
        """
        self.store = store
        self._append = append
        self._published = published
        self._notify = notify
        self._limits = limits
        self._clock = clock
        self._locks = SessionLocks()
        self._queue_events = queue_events or self._append_each
        batches = CommentBatches(
            store,
            locks=self._locks,
            queue_events=self._queue_events,
            published=published,
            clock=clock,
        )
        self.writers = CommentWriters(batches)

    # -- reads ------------------------------------------------------------------------

    async def list_threads(
        self, session_id: str, where: ThreadFilter, after: str | None, limit: int
    ) -> dict[str, JSON]:
        try:
            after_pos = int(after) if after else 0
        except ValueError:
            raise Invalid("not a cursor from a previous page", "$.after") from None
        limit = min(MAX_PAGE, max(1, limit))
        threads = await self.store.list_threads(session_id, where, after_pos, limit)
        page: dict[str, JSON] = {"threads": [thread_json(t) for t in threads]}
        page["next"] = str(threads[-1].pos) if len(threads) == limit else None
        return page

    async def get_thread(self, session_id: str, thread_id: str) -> dict[str, JSON]:
        thread = await self._thread(session_id, thread_id)
        comments = await self.store.list_comments(session_id, thread_id)
        reactions = await self.store.reactions([c.id for c in comments])
        return {
            **thread_json(thread),
            "comments": [comment_json(c, reactions.get(c.id, {})) for c in comments],
        }

    # -- changes ----------------------------------------------------------------------

    async def create_thread(
        self,
        user_id: str,
        session_id: str,
        *,
        body: str,
        anchor: JSON = None,
        metadata: JSON = None,
        mentions: Sequence[str] = (),
    ) -> Change:
        metadata = {} if metadata is None else metadata
        self._check_body(body)
        problem = check_metadata(metadata, self._limits, "$.metadata")
        if problem is not None:
            raise Invalid(problem.reason, problem.path)
        if anchor is not None and len(orjson.dumps(anchor)) > MAX_ANCHOR_BYTES:
            raise Invalid(f"anchor encodes to more than {MAX_ANCHOR_BYTES} bytes", "$.anchor")
        mentioned = self._check_mentions(mentions)
        now = self._clock()
        thread = ThreadRecord(
            id=_new_id("th"),
            session_id=session_id,
            author_id=user_id,
            anchor=anchor,
            metadata=metadata,
            resolved=False,
            resolved_by=None,
            resolved_at=None,
            comment_count=1,
            created_at=now,
            updated_at=now,
        )
        first = _draft(session_id, thread.id, None, 0, user_id, body, mentioned, now)

        async def then(created: Created) -> None:  # run by the writer (writer.py)
            await self._mentions(mentioned, created.added.thread, created.added.comment, user_id)

        # Batched with the session's other new threads and comments (writer.py).
        created = await self.writers.submit(session_id, NewThread(thread, first), then)
        return Change(created.data, created.seq)

    async def update_thread(
        self,
        user_id: str,
        role: Role,
        session_id: str,
        thread_id: str,
        *,
        metadata: JSON = None,
        anchor: JSON = None,
        set_anchor: bool = False,
    ) -> Change:
        if metadata is not None:
            problem = check_metadata(metadata, self._limits, "$.metadata")
            if problem is not None:
                raise Invalid(problem.reason, problem.path)
        if anchor is not None and len(orjson.dumps(anchor)) > MAX_ANCHOR_BYTES:
            raise Invalid(f"anchor encodes to more than {MAX_ANCHOR_BYTES} bytes", "$.anchor")
        async with self._session(session_id) as emit:
            thread = await self._thread(session_id, thread_id)
            if thread.author_id != user_id and role is not Role.OWNER:
                raise Forbidden("only its author or the session's owner may change a thread")
            updated = await self.store.update_thread(
                session_id,
                thread_id,
                metadata=thread.metadata if metadata is None else metadata,
                anchor=anchor if set_anchor else thread.anchor,
                at=self._clock(),
            )
            assert updated is not None
            data = thread_json(updated)
            await emit("thread:updated", data, user_id)
        return Change(data, emit.seq)

    async def create_comment(
        self,
        user_id: str,
        session_id: str,
        thread_id: str,
        *,
        body: str,
        parent_id: str | None = None,
        mentions: Sequence[str] = (),
    ) -> Change:
        self._check_body(body)
        mentioned = self._check_mentions(mentions)
        draft = _draft(session_id, thread_id, parent_id, 0, user_id, body, mentioned, 0.0)

        async def then(created: Created) -> None:  # run by the writer (writer.py)
            thread, comment = created.added.thread, created.added.comment
            await self._mentions(mentioned, thread, comment, user_id)
            repliers = tuple(sorted(created.added.participants - set(mentioned) - {user_id}))
            if repliers:
                about = _about(thread, comment)
                await self._notify(Notice(repliers, "reply", session_id, thread.id, user_id, about))

        # Written with whatever else this session's writer has queued (writer.py).
        created = await self.writers.submit(session_id, draft, then)
        return Change(created.data, created.seq)

    async def edit_comment(
        self,
        user_id: str,
        session_id: str,
        comment_id: str,
        *,
        body: str,
        mentions: Sequence[str] | None = None,
    ) -> Change:
        self._check_body(body)
        new_mentions = None if mentions is None else self._check_mentions(mentions)
        async with self._session(session_id) as emit:
            comment = await self._comment(session_id, comment_id)
            if comment.author_id != user_id:
                raise Forbidden("only its author may edit a comment")
            keep = comment.mentions if new_mentions is None else new_mentions
            edited = await self.store.edit_comment(
                session_id, comment_id, body, keep, self._clock()
            )
            if edited is None:
                raise NotFound(f"no comment {comment_id!r}", "$.commentId")
            reactions = await self.store.reactions([comment_id])
            data = comment_json(edited, reactions.get(comment_id, {}))
            await emit("comment:edited", data, user_id)
        seq = emit.seq
        added = tuple(m for m in keep if m not in comment.mentions)
        if added:
            thread = await self._thread(session_id, edited.thread_id)
            await self._mentions(added, thread, edited, user_id)
        return Change(data, seq)

    async def delete_comment(
        self, user_id: str, role: Role, session_id: str, comment_id: str
    ) -> Change:
        async with self._session(session_id) as emit:
            comment = await self._comment(session_id, comment_id)
            if comment.author_id != user_id and role is not Role.OWNER:
                raise Forbidden("only its author or the session's owner may delete a comment")
            deleted = await self.store.delete_comment(
                session_id, comment_id, user_id, self._clock()
            )
            if deleted is None:
                raise NotFound(f"no comment {comment_id!r}", "$.commentId")
            data = comment_json(deleted, {})
            await emit("comment:deleted", data, user_id)
        return Change(data, emit.seq)

    async def react(
        self, user_id: str, session_id: str, comment_id: str, emoji: str, *, add: bool
    ) -> Change:
        problem = emoji_problem(emoji)
        if problem is not None:
            raise Invalid(problem, "$.emoji")
        async with self._session(session_id) as emit:
            comment = await self._comment(session_id, comment_id)
            if add:
                changed = await self.store.add_reaction(comment_id, emoji, user_id, self._clock())
            else:
                changed = await self.store.remove_reaction(comment_id, emoji, user_id)
            reactions = await self.store.reactions([comment_id])
            data = comment_json(comment, reactions.get(comment_id, {}))
            data["reaction"] = {"emoji": emoji, "userId": user_id}
            if changed:
                name = "reaction:added" if add else "reaction:removed"
                await emit(name, data, user_id)
        return Change(data, emit.seq)

    async def resolve(
        self, user_id: str, session_id: str, thread_id: str, *, resolved: bool
    ) -> Change:
        async with self._session(session_id) as emit:
            thread = await self._thread(session_id, thread_id)
            if thread.resolved == resolved:
                return Change(thread_json(thread), None)  # already so: no event
            updated = await self.store.set_resolved(
                session_id, thread_id, resolved, user_id, self._clock()
            )
            assert updated is not None
            data = thread_json(updated)
            name = "thread:resolved" if resolved else "thread:reopened"
            await emit(name, data, user_id)
            participants = await self.store.participants(session_id, thread_id)
        seq = emit.seq
        others = tuple(sorted(participants - {user_id}))
        if resolved and others:
            await self._notify(
                Notice(others, "thread_resolved", session_id, thread_id, user_id, {"thread": data})
            )
        return Change(data, seq)

    # -- helpers ----------------------------------------------------------------------

    async def _append_each(
        self, session_id: str, events: Sequence[tuple[str, JSON, str]]
    ) -> Appended:
        seqs: list[int | Exception] = []
        for name, data, user_id in events:
            try:
                seqs.append(await self._append(session_id, name, data, user_id))
            except Exception as exc:
                seqs.append(exc)
        return Appended(seqs)

    async def _mentions(
        self, mentioned: Sequence[str], thread: ThreadRecord, comment: CommentRecord, by: str
    ) -> None:
        users = tuple(m for m in mentioned if m != by)
        if users:
            await self._notify(
                Notice(users, "mention", thread.session_id, thread.id, by, _about(thread, comment))
            )

    async def _thread(self, session_id: str, thread_id: str) -> ThreadRecord:
        thread = await self.store.get_thread(session_id, thread_id)
        if thread is None:
            raise NotFound(f"no thread {thread_id!r} in session {session_id!r}", "$.threadId")
        return thread

    async def _comment(self, session_id: str, comment_id: str) -> CommentRecord:
        comment = await self.store.get_comment(session_id, comment_id)
        if comment is None or comment.deleted_at is not None:
            raise NotFound(f"no comment {comment_id!r} in session {session_id!r}", "$.commentId")
        return comment

    def _check_body(self, body: object) -> None:
        problem = check_text(body, self._limits.max_comment_chars, "$.body")
        if problem is not None:
            raise Invalid(problem.reason, problem.path)
        assert isinstance(body, str)
        if not body.strip():
            raise Invalid("must not be empty", "$.body")

    def _check_mentions(self, mentions: Sequence[str]) -> tuple[str, ...]:
        if len(mentions) > MAX_MENTIONS:
            raise Invalid(f"at most {MAX_MENTIONS} mentions", "$.mentions")
        for i, user in enumerate(mentions):
            if not valid_id(user):
                raise Invalid("must be a user id", f"$.mentions[{i}]")
        return tuple(dict.fromkeys(mentions))

    @asynccontextmanager
    async def _session(self, session_id: str) -> AsyncIterator[_Emit]:
        """The session's lock, then (once released) the change's event made durable.

        The event is queued on the stream under the lock and awaited after it, so
        the session's next change is stored meanwhile; its webhook is queued in turn.
        """
        async with self._locks.taking_turn(session_id) as turn:
            emit = _Emit(session_id, self._queue_events, self._published)
            async with turn.locked():
                yield emit
            await emit.settle(turn)


class _Emit:
    """The event of one change: queued under the session's lock, durable after it."""

    def __init__(self, session_id: str, queue: QueueEvents, published: Published) -> None:
        self.seq: int | None = None  # set once durable (None: the change had no event)
        self._session_id = session_id
        self._queue = queue
        self._published = published
        self._event: tuple[str, JSON] | None = None
        self._queued: Queued | None = None

    async def __call__(self, name: str, data: JSON, user_id: str) -> None:
        assert self._queued is None, "one event per change"
        self._event = (name, data)
        self._queued = await self._queue(self._session_id, [(name, data, user_id)])

    async def settle(self, turn: Turn) -> None:
        """Wait until the event is durable (raising why not), then queue its webhook."""
        if self._queued is None or self._event is None:
            return
        [seq] = await self._queued.seqs()
        if isinstance(seq, Exception):
            raise stream_error(seq)
        await turn.wait()
        await self._published(self._session_id, seq, *self._event)
        self.seq = seq


def _new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


def _draft(
    session_id: str,
    thread_id: str,
    parent_id: str | None,
    depth: int,
    user_id: str,
    body: str,
    mentions: tuple[str, ...],
    now: float,
) -> CommentRecord:
    return CommentRecord(
        id=_new_id("cm"),
        thread_id=thread_id,
        session_id=session_id,
        parent_id=parent_id,
        depth=depth,
        position=0,  # the store assigns it (and the depth, for a new comment)
        author_id=user_id,
        body=body,
        mentions=mentions,
        created_at=now,
        edited_at=None,
        deleted_at=None,
        deleted_by=None,
    )


def _about(thread: ThreadRecord, comment: CommentRecord) -> dict[str, JSON]:
    """What a notification says about a comment: enough to show it and link to it."""
    return {
        "commentId": comment.id,
        "threadId": thread.id,
        "anchor": thread.anchor,
        "excerpt": comment.body[:200],
    }
