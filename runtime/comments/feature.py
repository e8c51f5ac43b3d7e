"""Comments, notification inboxes and webhooks, wired into a node.

``Collaboration(node, stores)`` registers the ``inbox`` actor kind (under the
``inboxes`` supervisor, a child of root), the WebSocket messages, the HTTP
routes and the membership hook; ``start`` runs the supervisor and the webhook
delivery task in the node's nursery.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import attrs
import trio
from trio_util import AsyncValue

from actors.inbox.actor import Deliver, InboxActor, InboxConfig, InboxMessage
from actors.inbox.state import Incoming
from actors.inbox.writer import InboxWriter
from actors.messages import AppendEvent
from runtime.comments.service import CommentService, Notice
from runtime.gateways.comment_store import CommentStore
from runtime.gateways.comment_store_memory import MemoryCommentStore
from runtime.gateways.comment_store_postgres import PostgresCommentStore
from runtime.gateways.database import DatabaseGateway
from runtime.gateways.encryption import Sealer, sealer_from_settings
from runtime.gateways.notifications import (
    MemoryNotificationStore,
    NotificationRecord,
    NotificationStore,
    PostgresNotificationStore,
    notification_json,
)
from runtime.gateways.webhooks import MemoryWebhookStore, PostgresWebhookStore, WebhookStore
from runtime.mailbox import Mailbox, MailboxClosed, MailboxFull
from runtime.registry import ActorKind, SpawnFailed
from runtime.security.permissions import Op, allowed
from runtime.security.tokens import Identity
from runtime.supervisor import RestartPolicy, Supervisor
from runtime.transport.connection import ClientConnection
from runtime.webhooks.delivery import WebhookConfig, Webhooks

if TYPE_CHECKING:
    from runtime.node import TandemNode

logger = logging.getLogger(__name__)

JSON = Any
#: Unread notifications sent right after `welcome`.
CONNECT_LATEST = 20
#: Notices waiting for the fan-out task before a change waits for it (backpressure).
FANOUT_QUEUE = 10_000


@attrs.frozen
class CollabStores:
    comments: CommentStore
    notifications: NotificationStore
    webhooks: WebhookStore


def memory_collab_stores(sealer: Sealer | None = None) -> CollabStores:
    return CollabStores(
        MemoryCommentStore(sealer=sealer), MemoryNotificationStore(), MemoryWebhookStore()
    )


def postgres_collab_stores(db: DatabaseGateway, sealer: Sealer | None = None) -> CollabStores:
    """``sealer``: comment bodies and thread metadata are stored encrypted with it."""
    return CollabStores(
        PostgresCommentStore(db, sealer=sealer),
        PostgresNotificationStore(db),
        PostgresWebhookStore(db),
    )


class Collaboration:
    def __init__(self, node: TandemNode, stores: CollabStores | None = None) -> None:
        from runtime.api.comments import CommentsApi
        from runtime.api.notifications import NotificationsApi, WebhooksApi
        from runtime.comments.ws import CommentHandlers

        settings = node.settings
        self.node = node
        self.stores = stores or memory_collab_stores(sealer_from_settings(settings))
        self.notifications = self.stores.notifications
        # Every inbox's batch goes through one writer: many inboxes, one statement.
        self.inbox_writer = InboxWriter(self.notifications)
        self.inboxes_supervisor = Supervisor("inboxes", RestartPolicy(max_restarts=5, period=10.0))
        inbox_config = InboxConfig(
            group_window=settings.notification_group_window,
            pace=settings.notification_pace,
            passivate_after=settings.passivate_after,
        )
        self.inbox_kind: ActorKind[Mailbox[InboxMessage]] = ActorKind(
            "inbox",
            lambda: Mailbox(settings.mailbox_size),
            lambda user_id, mailbox: InboxActor(
                user_id,
                mailbox,
                store=self.inbox_writer,
                may_read=self._may_read,
                pushed=self._pushed,
                config=inbox_config,
                clock=node.wall_clock,
            ),
            self.inboxes_supervisor,
        )
        node.registry.add_kind(self.inbox_kind)
        self.webhooks = Webhooks(
            self.stores.webhooks,
            config=WebhookConfig(
                retry_base=settings.webhook_retry_base,
                retry_cap=settings.webhook_retry_cap,
                disable_after=settings.webhook_disable_after,
                request_timeout=settings.webhook_timeout,
            ),
            clock=node.wall_clock,
        )
        self.comments = CommentService(
            self.stores.comments,
            # With keys configured, the copies of comments in the event log are sealed too.
            append=functools.partial(
                node.append_event, sensitive=sealer_from_settings(settings) is not None
            ),
            published=self._session_event,
            notify=self._notice,
            limits=node.limits,
            clock=node.wall_clock,
            queue_events=self._queue_events,
        )
        self._sensitive = sealer_from_settings(settings) is not None
        CommentHandlers(self).register(node.dispatcher.register)
        CommentsApi(node, self).register(node.http)
        NotificationsApi(node, self).register(node.http)
        WebhooksApi(node, self).register(node.http)
        node.sessions.on_member_change.append(self._member_changed)
        self._nursery: trio.Nursery | None = None
        # Each user's sockets (all tabs), so a notification does not scan every
        # connection of the node. Entries of closed sockets, or of sockets that
        # authenticated as someone else since, are dropped when met; the whole
        # index is rebuilt from the node's connections when it outgrows them.
        self._sockets: dict[str, list[ClientConnection]] = {}
        self._indexed = 0
        self._fanout_send, self._fanout_recv = trio.open_memory_channel[Notice](FANOUT_QUEUE)
        self._notices_queued = AsyncValue(0)  # queued or being handed out

    async def start(self, root: Supervisor, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        await nursery.start(self.inbox_writer.run)
        await root.start_child(
            "inboxes",
            self.inboxes_supervisor.run,
            kind="supervisor",
            supervisor=self.inboxes_supervisor,
        )
        try:
            await self.webhooks.load()
        except Exception as exc:  # the delivery task retries; endpoints load on next start
            logger.warning("could not load webhook endpoints: %s", exc)
        nursery.start_soon(self.webhooks.run)
        nursery.start_soon(self._fan_out)
        await nursery.start(self.comments.writers.run)  # batches new comments per session

    def status(self) -> dict[str, JSON]:
        return self.webhooks.status()

    async def settle(self) -> None:
        """Shutdown, once no request can come: wait until the comments being written
        are answered and every notification they and earlier changes raised is in its
        inbox's mailbox, so the inboxes' own drain stores them. The caller bounds it."""
        await self.comments.writers.settle()
        await self._notices_queued.wait_value(0)

    # -- notifications ----------------------------------------------------------------

    async def deliver(self, user_id: str, incoming: Incoming) -> NotificationRecord | None:
        """Hand one notification to a user's inbox and wait until it is stored."""
        send, receive = trio.open_memory_channel[NotificationRecord | Exception | None](1)
        with trio.fail_after(self.node.settings.mailbox_timeout):
            await self.node.registry.send(self.inbox_kind, user_id, Deliver(incoming, send))
        result = await receive.receive()
        if isinstance(result, Exception):
            raise result
        return result

    async def _notice(self, notice: Notice) -> None:
        """Queue a change's notifications; the fan-out task hands them to the inboxes.

        The change is already stored and its event appended: its author does not
        wait for a hundred inbox writes. Only a queue of ``FANOUT_QUEUE`` notices
        makes it wait (backpressure); before ``start`` they are delivered inline.
        """
        if self._nursery is None:
            await self._hand_out(notice)
            return
        self._notices_queued.value += 1
        try:
            try:
                self._fanout_send.send_nowait(notice)
            except trio.WouldBlock:
                await self._fanout_send.send(notice)
        except BaseException:
            self._handed_out()  # never queued
            raise

    async def _fan_out(self) -> None:
        async for notice in self._fanout_recv:
            try:
                await self._hand_out(notice)
            finally:
                self._handed_out()

    def _handed_out(self) -> None:
        self._notices_queued.value -= 1

    async def _hand_out(self, notice: Notice) -> None:
        # One message for every recipient (it is immutable, and an inbox knows whose
        # it is): a comment in a busy thread has a recipient per participant.
        deliver = Deliver(
            Incoming(
                kind=notice.kind,
                session_id=notice.session_id,
                thread_id=notice.thread_id,
                actor_id=notice.actor_id,
                data=notice.data,
            )
        )
        for user_id in notice.user_ids:
            # A live inbox with room takes it at once: no wait, no timeout to set up.
            live = self.node.registry.lookup(self.inbox_kind, user_id)
            if live is not None:
                try:
                    live.post(deliver)
                    continue
                except (MailboxFull, MailboxClosed):
                    pass  # wait for room, or for its successor, as below
            with trio.move_on_after(self.node.settings.mailbox_timeout) as scope:
                try:
                    await self.node.registry.send(self.inbox_kind, user_id, deliver)
                except (MailboxClosed, SpawnFailed) as exc:
                    logger.warning("notification for %s dropped: %s", user_id, exc)
            if scope.cancelled_caught:
                logger.warning("notification for %s dropped: inbox busy", user_id)

    async def _may_read(self, user_id: str, session_id: str) -> bool:
        identity = Identity(user_id=user_id, name=user_id, guest=False)
        return allowed(await self.node.access.role(identity, session_id), Op.READ_HISTORY)

    async def _pushed(self, record: NotificationRecord, unread: int) -> None:
        message = {
            "type": "notification",
            "notification": notification_json(record),
            "unread": unread,
        }
        self._to_user(record.user_id, message)
        kind = "notification:created" if record.count == 1 else "notification:grouped"
        await self.webhooks.publish(
            kind, f"user:{record.user_id}", f"notification:{record.id}:{record.count}", message
        )

    def _to_user(self, user_id: str, message: dict[str, JSON]) -> None:
        sockets = self._sockets.get(user_id)
        if not sockets:
            return
        live = [c for c in sockets if not c.closed and c.user_id == user_id]
        if len(live) < len(sockets):
            self._indexed -= len(sockets) - len(live)
            if live:
                self._sockets[user_id] = live
            else:
                del self._sockets[user_id]
        for conn in live:
            conn.send(message)

    def connected(self, conn: ClientConnection) -> None:
        """A socket got its identity: send the unread count and the latest unread (if any)."""
        if conn.identity is None:
            return
        if self._indexed > 2 * len(self.node.connections) + 64:
            self._reindex()
        sockets = self._sockets.setdefault(conn.user_id, [])
        if conn not in sockets:
            sockets.append(conn)
            self._indexed += 1
        if self._nursery is not None:
            self._nursery.start_soon(self._snapshot, conn)

    def _reindex(self) -> None:
        self._sockets = {}
        for conn in self.node.connections.values():
            if conn.identity is not None and not conn.closed:
                self._sockets.setdefault(conn.user_id, []).append(conn)
        self._indexed = sum(len(sockets) for sockets in self._sockets.values())

    async def _snapshot(self, conn: ClientConnection) -> None:
        try:
            page = await self.notification_page(
                conn.user_id, before=None, limit=CONNECT_LATEST, unread_only=True
            )
        except Exception as exc:
            logger.warning("no notification snapshot for %s: %s", conn.user_id, exc)
            return
        if page["unread"] == 0:
            return  # nothing to tell: a client without notifications sees no new message
        conn.send(
            {"type": "notifications", "unread": page["unread"], "latest": page["notifications"]}
        )

    async def notification_page(
        self, user_id: str, *, before: int | None, limit: int, unread_only: bool
    ) -> dict[str, JSON]:
        records = await self.notifications.list(
            user_id, before=before, limit=limit, unread_only=unread_only
        )
        return {
            "notifications": [notification_json(r) for r in records],
            "next": records[-1].pos if len(records) == limit else None,
            "unread": await self.notifications.unread_count(user_id),
        }

    async def mark_read(self, user_id: str, notification_id: str) -> dict[str, JSON] | None:
        record = await self.notifications.mark_read(
            user_id, notification_id, self.node.wall_clock()
        )
        if record is None:
            return None
        unread = await self.notifications.unread_count(user_id)
        self._to_user(
            user_id, {"type": "notifications:unread", "unread": unread, "read": [record.id]}
        )
        return {"notification": notification_json(record), "unread": unread}

    async def mark_all_read(self, user_id: str) -> dict[str, JSON]:
        marked = await self.notifications.mark_all_read(user_id, self.node.wall_clock())
        unread = await self.notifications.unread_count(user_id)
        self._to_user(user_id, {"type": "notifications:unread", "unread": unread, "all": True})
        return {"marked": marked, "unread": unread}

    # -- the stream -------------------------------------------------------------------

    async def _queue_events(
        self, session_id: str, events: Sequence[tuple[str, JSON, str]]
    ) -> _Replies:
        """Queue ``events`` on the session's stream in this order; wait for them later.

        All are queued before any is awaited, so the session actor takes them as one
        batch (one store write, one broadcast frame) unless its mailbox is short of
        room. One that could not be queued in time gets ``TooSlowError`` as its seq.
        """
        replies: list[trio.MemoryReceiveChannel[int | Exception] | Exception] = []
        live = self.node.registry.lookup(self.node.session_kind, session_id)
        try:
            with trio.fail_after(self.node.settings.mailbox_timeout):
                for name, data, user_id in events:
                    send, receive = trio.open_memory_channel[int | Exception](1)
                    message = AppendEvent(name, data, user_id, send, self._sensitive)
                    # Posted while the live mailbox has room: a checkpoint per event
                    # would let every runnable task run in between (a batch can hold
                    # hundreds). Else wait for room (or a successor), in order still.
                    try:
                        if live is None:
                            raise MailboxClosed
                        live.post(message)
                    except (MailboxFull, MailboxClosed):
                        live = None
                        await self.node.send_to_session(session_id, message)
                    replies.append(receive)
        except Exception as exc:  # too slow, or the session kept closing: the rest fail
            replies.extend([exc] * (len(events) - len(replies)))
        return _Replies(replies)

    # -- webhooks ---------------------------------------------------------------------

    async def _session_event(self, session_id: str, seq: int, name: str, data: JSON) -> None:
        await self.webhooks.publish(
            name,
            f"session:{session_id}",
            f"session:{session_id}:{seq}",
            {"sessionId": session_id, "seq": seq, "record": data},
        )

    def _member_changed(self, session_id: str, user_id: str) -> None:
        if self._nursery is not None:
            self._nursery.start_soon(self._member_event, session_id, user_id)

    async def _member_event(self, session_id: str, user_id: str) -> None:
        try:
            role = await self.node.sessions.get_member_role(session_id, user_id)
            at = self.node.wall_clock()
            await self.webhooks.publish(
                "session:member_changed",
                f"session:{session_id}",
                f"member:{session_id}:{user_id}:{at:.6f}",
                {"sessionId": session_id, "userId": user_id, "role": role},
            )
        except Exception as exc:
            logger.warning("member change webhook for %s lost: %s", session_id, exc)


@attrs.frozen
class _Replies:
    """The session actor's answers to queued ``AppendEvent`` messages, in order."""

    replies: list[trio.MemoryReceiveChannel[int | Exception] | Exception]

    async def seqs(self) -> list[int | Exception]:
        seqs: list[int | Exception] = []
        for reply in self.replies:
            if isinstance(reply, Exception):
                seqs.append(reply)
                continue
            try:
                try:  # the session answers a batch at once: no checkpoint per event
                    seqs.append(reply.receive_nowait())
                except trio.WouldBlock:
                    seqs.append(await reply.receive())
            except trio.EndOfChannel:  # the session actor dropped it (it crashed)
                seqs.append(RuntimeError("the session stopped before storing the event"))
        return seqs
