"""Python client for Tandem (protocol v1), on trio and trio-websocket.

>>> async with open_tandem_client("ws://127.0.0.1:8080/", token=token) as client:
...     await client.join("doc-1")
...     seq = await client.publish("doc-1", "edit", {"op": "..."})
...     async for message in client.messages():
...         ...

Comments and notifications: ``client.create_thread``, ``client.create_comment``,
``client.list_notifications``, ... (see :mod:`client.comments`).
"""

from client.backoff import Backoff
from client.comments import CommentsMixin
from client.connection import JoinedSession, TandemClient, open_tandem_client
from client.errors import ConnectionEnded, Disconnected, TandemError
from client.presence import Participants, merge_change
from client.transport import Message, open_websocket

__all__ = [
    "Backoff",
    "CommentsMixin",
    "ConnectionEnded",
    "Disconnected",
    "JoinedSession",
    "Message",
    "Participants",
    "TandemClient",
    "TandemError",
    "merge_change",
    "open_tandem_client",
    "open_websocket",
]
