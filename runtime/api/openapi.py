"""The OpenAPI 3.1 document served at ``/openapi.json`` (kept beside the handlers it describes)."""

from __future__ import annotations

from typing import Any

_ERROR = {"$ref": "#/components/schemas/Error"}
_SESSION_ID = {
    "name": "id",
    "in": "path",
    "required": True,
    "schema": {"$ref": "#/components/schemas/Id"},
}
_USER_ID = {
    "name": "user",
    "in": "path",
    "required": True,
    "schema": {"$ref": "#/components/schemas/Id"},
}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    text = {400: "invalid input", 404: "not found", 409: "conflict"}
    return {str(code): _json(_ERROR, text[code]) for code in codes}


OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "Tandem HTTP API",
        "version": "1",
        "description": "Sessions and members for the app's backend. The real-time protocol "
        "(WebSocket at / and /v1/ws) is described in docs/protocol.md.",
    },
    "paths": {
        "/v1/sessions": {
            "post": {
                "summary": "Create a session",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {"$ref": "#/components/schemas/CreateSession"}
                        }
                    },
                },
                "responses": {
                    "201": _json({"$ref": "#/components/schemas/Session"}, "created"),
                    **_errors(400, 409),
                },
            },
            "get": {
                "summary": "List sessions, by id, a page at a time",
                "parameters": [
                    {
                        "name": "after",
                        "in": "query",
                        "schema": {"type": "string"},
                        "description": "the `next` cursor of the previous page",
                    },
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 200, "default": 50},
                    },
                ],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "sessions": {
                                    "type": "array",
                                    "items": {"$ref": "#/components/schemas/Session"},
                                },
                                "next": {"type": "string"},
                            },
                        },
                        "a page",
                    )
                },
            },
        },
        "/v1/sessions/{id}": {
            "parameters": [_SESSION_ID],
            "get": {
                "summary": "Get a session",
                "responses": {
                    "200": _json({"$ref": "#/components/schemas/Session"}, "the session"),
                    **_errors(404),
                },
            },
            "patch": {
                "summary": "Replace a session's metadata",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["metadata"],
                                "additionalProperties": False,
                                "properties": {"metadata": {"type": "object"}},
                            }
                        }
                    },
                },
                "responses": {
                    "200": _json({"$ref": "#/components/schemas/Session"}, "updated"),
                    **_errors(400, 404),
                },
            },
            "delete": {
                "summary": "Archive (soft-delete) a session",
                "responses": {"204": {"description": "archived"}, **_errors(404)},
            },
        },
        "/v1/sessions/{id}/members": {
            "parameters": [_SESSION_ID],
            "get": {
                "summary": "List members and their roles",
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "members": {
                                    "type": "array",
                                    "items": {"$ref": "#/components/schemas/Member"},
                                }
                            },
                        },
                        "members",
                    ),
                    **_errors(404),
                },
            },
        },
        "/v1/sessions/{id}/members/{user}": {
            "parameters": [_SESSION_ID, _USER_ID],
            "put": {
                "summary": "Add a member or change their role",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["role"],
                                "additionalProperties": False,
                                "properties": {"role": {"$ref": "#/components/schemas/Role"}},
                            }
                        }
                    },
                },
                "responses": {
                    "200": _json({"$ref": "#/components/schemas/Member"}, "the membership"),
                    **_errors(400, 404),
                },
            },
            "delete": {
                "summary": "Remove a member",
                "responses": {"204": {"description": "removed"}, **_errors(404)},
            },
        },
        "/v1/sessions/{id}/participants": {
            "parameters": [_SESSION_ID],
            "get": {
                "summary": "Who is connected right now (live presence)",
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "participants": {"type": "array", "items": {"type": "object"}}
                            },
                        },
                        "participants",
                    )
                },
            },
        },
        "/v1/sessions/{id}/events": {
            "parameters": [_SESSION_ID],
            "get": {
                "summary": "Read the stored event log",
                "parameters": [
                    {"name": "after", "in": "query", "schema": {"type": "integer", "default": 0}},
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {
                            "type": "integer",
                            "minimum": 1,
                            "maximum": 1000,
                            "default": 100,
                        },
                    },
                ],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "events": {
                                    "type": "array",
                                    "items": {"$ref": "#/components/schemas/Event"},
                                }
                            },
                        },
                        "events",
                    )
                },
            },
        },
        "/v1/audit": {
            "get": {
                "summary": "List the audit log (oldest first), filtered, a page at a time",
                "parameters": [
                    {"name": "action", "in": "query", "schema": {"type": "string"}},
                    {"name": "actor", "in": "query", "schema": {"type": "string"}},
                    {
                        "name": "since",
                        "in": "query",
                        "schema": {"type": "number"},
                        "description": "unix seconds: records at or after this time",
                    },
                    {
                        "name": "after",
                        "in": "query",
                        "schema": {"type": "string"},
                        "description": "the `next` cursor of the previous page",
                    },
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {
                            "type": "integer",
                            "minimum": 1,
                            "maximum": 500,
                            "default": 100,
                        },
                    },
                ],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "records": {
                                    "type": "array",
                                    "items": {"$ref": "#/components/schemas/AuditRecord"},
                                },
                                "next": {"type": "string"},
                            },
                        },
                        "a page of audit records",
                    ),
                    **_errors(400, 404),
                },
            },
        },
        "/healthz": {
            "get": {"summary": "Liveness", "responses": {"200": {"description": "alive"}}}
        },
        "/readyz": {
            "get": {
                "summary": "Readiness (accepting, database reachable)",
                "responses": {"200": {"description": "ready"}, "503": {"description": "not ready"}},
            }
        },
        "/status": {
            "get": {
                "summary": "The supervision tree, connections and settings",
                "responses": {"200": {"description": "status"}},
            }
        },
    },
    "components": {
        "schemas": {
            "Id": {"type": "string", "pattern": "^[A-Za-z0-9_.:@-]{1,128}$"},
            "Role": {"type": "string", "enum": ["owner", "editor", "commenter", "viewer"]},
            "CreateSession": {
                "type": "object",
                "required": ["id"],
                "additionalProperties": False,
                "properties": {
                    "id": {"$ref": "#/components/schemas/Id"},
                    "metadata": {"type": "object"},
                },
            },
            "Session": {
                "type": "object",
                "properties": {
                    "id": {"type": "string"},
                    "metadata": {"type": "object"},
                    "seq": {"type": "integer", "description": "last event seq"},
                    "createdAt": {"type": "number"},
                    "updatedAt": {"type": "number"},
                    "deletedAt": {"type": "number"},
                },
            },
            "Member": {
                "type": "object",
                "properties": {
                    "userId": {"type": "string"},
                    "role": {"$ref": "#/components/schemas/Role"},
                    "joinedAt": {"type": "number"},
                },
            },
            "Event": {
                "type": "object",
                "properties": {
                    "seq": {"type": "integer"},
                    "name": {"type": "string"},
                    "data": {},
                    "userId": {"type": "string"},
                    "ts": {"type": "number"},
                },
            },
            "AuditRecord": {
                "type": "object",
                "properties": {
                    "seq": {"type": "integer"},
                    "ts": {"type": "number"},
                    "actor": {"type": "string"},
                    "action": {"type": "string"},
                    "target": {"type": "string"},
                    "details": {"type": "object"},
                    "prevHash": {"type": "string"},
                    "hash": {"type": "string"},
                },
            },
            "Error": {
                "type": "object",
                "properties": {
                    "error": {
                        "type": "object",
                        "properties": {
                            "code": {"type": "string"},
                            "message": {"type": "string"},
                            "path": {"type": "string"},
                        },
                    }
                },
            },
        }
    },
}


# -- comments, notifications and webhooks (runtime/api/comments.py, notifications.py) --------

_COLLAB_ERRORS = {
    400: "invalid input (`path` names the field)",
    403: "the acting user's role does not allow it, or not their comment",
    404: "unknown thread, comment or parent",
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _path(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string"},
    }


def _query(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema or {"type": "string"},
    }


def _op(
    summary: str,
    params: list[dict[str, Any]],
    responses: dict[str, Any],
    *,
    body: str | None = None,
    errors: tuple[int, ...] = (400, 403, 404),
) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "parameters": params, "responses": {**responses}}
    for code in errors:
        op["responses"][str(code)] = _json(_ERROR, _COLLAB_ERRORS[code])
    if body is not None:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _ref(body)}},
        }
    return op


_THREAD = _path("thread", "thread id")
_COMMENT = _path("comment", "comment id")
_ACTING_USER = {**_query("userId", "the acting user (required)"), "required": True}
_THREAD_OUT = _json(_ref("ThreadChange"), "the thread, and `seq` of its event (null: no change)")
_COMMENT_OUT = _json(_ref("CommentChange"), "the comment, and `seq` of its event")

_COLLAB_PATHS: dict[str, Any] = {
    "/v1/sessions/{id}/threads": {
        "post": _op(
            "Start a thread (as `userId`), with its first comment",
            [_SESSION_ID],
            {"201": _json(_ref("ThreadChange"), "the thread with `comments: [first]`, `seq`")},
            body="NewThread",
        ),
        "get": _op(
            "List threads, oldest first, a page at a time",
            [
                _SESSION_ID,
                _query("resolved", "true/false: only (un)resolved threads"),
                _query("author", "only threads started by this user"),
                _query("anchor", "JSON: only threads anchored exactly here"),
                _query("metadata.<key>", "JSON or text: threads whose metadata has this value"),
                _query("after", "`next` of the previous page"),
                _query("limit", "1-200 (50)", {"type": "integer", "minimum": 1, "maximum": 200}),
            ],
            {"200": _json(_ref("ThreadPage"), "a page of threads")},
            errors=(400,),
        ),
    },
    "/v1/sessions/{id}/threads/{thread}": {
        "get": _op(
            "A thread with every comment in position order (tombstones included)",
            [_SESSION_ID, _THREAD],
            {"200": _json(_ref("Thread"), "the thread with `comments`")},
            errors=(404,),
        ),
        "patch": _op(
            "Change a thread's metadata and/or anchor (its author or the session's owner)",
            [_SESSION_ID, _THREAD],
            {"200": _THREAD_OUT},
            body="ThreadPatch",
        ),
    },
    "/v1/sessions/{id}/threads/{thread}/resolve": {
        "post": _op(
            "Resolve a thread (no event if already resolved)",
            [_SESSION_ID, _THREAD],
            {"200": _THREAD_OUT},
            body="Actor",
        ),
    },
    "/v1/sessions/{id}/threads/{thread}/reopen": {
        "post": _op(
            "Reopen a resolved thread",
            [_SESSION_ID, _THREAD],
            {"200": _THREAD_OUT},
            body="Actor",
        ),
    },
    "/v1/sessions/{id}/threads/{thread}/comments": {
        "post": _op(
            "Write in a thread (a reply to `parentId` when given)",
            [_SESSION_ID, _THREAD],
            {"201": _COMMENT_OUT},
            body="NewComment",
        ),
    },
    "/v1/sessions/{id}/comments/{comment}": {
        "patch": _op(
            "Edit a comment (its author only)",
            [_SESSION_ID, _COMMENT],
            {"200": _COMMENT_OUT},
            body="CommentPatch",
        ),
        "delete": _op(
            "Delete a comment (its author, or the session's owner): leaves a tombstone",
            [_SESSION_ID, _COMMENT, _ACTING_USER],
            {"200": _COMMENT_OUT},
        ),
    },
    "/v1/sessions/{id}/comments/{comment}/reactions": {
        "post": _op(
            "Add the acting user's reaction (no event if already there)",
            [_SESSION_ID, _COMMENT],
            {"200": _COMMENT_OUT},
            body="Reaction",
        ),
    },
    "/v1/sessions/{id}/comments/{comment}/reactions/{emoji}": {
        "delete": _op(
            "Remove the acting user's reaction",
            [_SESSION_ID, _COMMENT, _path("emoji", "the emoji, URL-encoded"), _ACTING_USER],
            {"200": _COMMENT_OUT},
        ),
    },
    "/v1/users/{user}/notifications": {
        "post": _op(
            "Post an app notification to a user's inbox (grouped, delivered live)",
            [_USER_ID],
            {"201": _json(_ref("Notification"), "the new or grown notification")},
            body="PostNotification",
            errors=(400, 403),
        ),
        "get": _op(
            "A user's notifications, newest activity first",
            [
                _USER_ID,
                _query("before", "`next` of the previous page", {"type": "integer"}),
                _query("limit", "1-200 (50)", {"type": "integer", "minimum": 1, "maximum": 200}),
                _query("unread", "1: unread only"),
            ],
            {"200": _json(_ref("NotificationPage"), "a page, and the unread count")},
            errors=(400,),
        ),
    },
    "/v1/users/{user}/notifications/read-all": {
        "post": _op(
            "Mark every notification of the user read",
            [_USER_ID],
            {
                "200": _json(
                    {
                        "type": "object",
                        "properties": {
                            "marked": {"type": "integer"},
                            "unread": {"type": "integer"},
                        },
                    },
                    "how many were marked, and the unread count",
                )
            },
            errors=(),
        ),
    },
    "/v1/webhooks": {
        "post": _op(
            "Register a webhook endpoint (the answer is the only time `secret` is shown)",
            [],
            {"201": _json(_ref("Webhook"), "the endpoint, with its signing `secret`")},
            body="PostWebhook",
            errors=(400,),
        ),
        "get": _op(
            "Webhook endpoints, with their pending deliveries",
            [],
            {
                "200": _json(
                    {
                        "type": "object",
                        "properties": {"webhooks": {"type": "array", "items": _ref("Webhook")}},
                    },
                    "every endpoint",
                )
            },
            errors=(),
        ),
    },
    "/v1/webhooks/{id}": {
        "delete": {
            "summary": "Remove a webhook endpoint",
            "parameters": [_path("id", "webhook id")],
            "responses": {"204": {"description": "removed"}, **_errors(404)},
        },
    },
}

_ANY: dict[str, Any] = {}
_COLLAB_SCHEMAS: dict[str, Any] = {
    "Actor": {"type": "object", "required": ["userId"], "properties": {"userId": _ref("Id")}},
    "NewThread": {
        "type": "object",
        "required": ["userId", "body"],
        "properties": {
            "userId": _ref("Id"),
            "body": {"type": "string", "minLength": 1, "maxLength": 10000},
            "anchor": {"description": "any JSON, at most 4 KiB"},
            "metadata": {"type": "object", "description": "at most 64 keys, 4 KiB"},
            "mentions": {"type": "array", "items": _ref("Id"), "maxItems": 50},
        },
    },
    "ThreadPatch": {
        "type": "object",
        "required": ["userId"],
        "properties": {"userId": _ref("Id"), "metadata": {"type": "object"}, "anchor": _ANY},
    },
    "NewComment": {
        "type": "object",
        "required": ["userId", "body"],
        "properties": {
            "userId": _ref("Id"),
            "body": {"type": "string", "minLength": 1, "maxLength": 10000},
            "parentId": _ref("Id"),
            "mentions": {"type": "array", "items": _ref("Id"), "maxItems": 50},
        },
    },
    "CommentPatch": {
        "type": "object",
        "required": ["userId", "body"],
        "properties": {
            "userId": _ref("Id"),
            "body": {"type": "string", "minLength": 1, "maxLength": 10000},
            "mentions": {"type": "array", "items": _ref("Id"), "maxItems": 50},
        },
    },
    "Reaction": {
        "type": "object",
        "required": ["userId", "emoji"],
        "properties": {
            "userId": _ref("Id"),
            "emoji": {"type": "string", "minLength": 1, "maxLength": 32},
        },
    },
    "Comment": {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "threadId": {"type": "string"},
            "sessionId": {"type": "string"},
            "parentId": {"type": ["string", "null"]},
            "depth": {"type": "integer", "minimum": 0, "maximum": 8},
            "position": {"type": "integer", "minimum": 1},
            "authorId": {"type": "string"},
            "body": {"type": "string"},
            "mentions": {"type": "array", "items": {"type": "string"}},
            "createdAt": {"type": "number"},
            "editedAt": {"type": ["number", "null"]},
            "deleted": {"type": "boolean"},
            "deletedAt": {"type": ["number", "null"]},
            "reactions": {
                "type": "object",
                "additionalProperties": {
                    "type": "object",
                    "properties": {
                        "count": {"type": "integer"},
                        "users": {"type": "array", "items": {"type": "string"}},
                    },
                },
            },
        },
    },
    "Thread": {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "sessionId": {"type": "string"},
            "authorId": {"type": "string"},
            "anchor": _ANY,
            "metadata": {"type": "object"},
            "resolved": {"type": "boolean"},
            "resolvedBy": {"type": ["string", "null"]},
            "resolvedAt": {"type": ["number", "null"]},
            "commentCount": {"type": "integer"},
            "createdAt": {"type": "number"},
            "updatedAt": {"type": "number"},
            "comments": {"type": "array", "items": _ref("Comment")},
        },
    },
    "ThreadChange": {
        "allOf": [
            _ref("Thread"),
            {"type": "object", "properties": {"seq": {"type": ["integer", "null"]}}},
        ]
    },
    "CommentChange": {
        "allOf": [
            _ref("Comment"),
            {"type": "object", "properties": {"seq": {"type": ["integer", "null"]}}},
        ]
    },
    "ThreadPage": {
        "type": "object",
        "properties": {
            "threads": {"type": "array", "items": _ref("Thread")},
            "next": {"type": ["string", "null"]},
        },
    },
    "PostNotification": {
        "type": "object",
        "required": ["kind"],
        "properties": {
            "kind": _ref("Id"),
            "data": {"type": "object"},
            "sessionId": _ref("Id"),
            "threadId": _ref("Id"),
            "actorId": _ref("Id"),
            "groupKey": _ref("Id"),
        },
    },
    "Notification": {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "kind": {"type": "string"},
            "userId": {"type": "string"},
            "sessionId": {"type": ["string", "null"]},
            "threadId": {"type": ["string", "null"]},
            "actorIds": {"type": "array", "items": {"type": "string"}, "maxItems": 10},
            "data": {"type": "object"},
            "count": {"type": "integer"},
            "read": {"type": "boolean"},
            "readAt": {"type": ["number", "null"]},
            "createdAt": {"type": "number"},
            "updatedAt": {"type": "number"},
            "cursor": {"type": "integer"},
        },
    },
    "NotificationPage": {
        "type": "object",
        "properties": {
            "notifications": {"type": "array", "items": _ref("Notification")},
            "next": {"type": ["integer", "null"]},
            "unread": {"type": "integer"},
        },
    },
    "PostWebhook": {
        "type": "object",
        "required": ["url"],
        "properties": {
            "url": {"type": "string", "format": "uri", "maxLength": 2048},
            "secret": {"type": "string", "minLength": 16, "maxLength": 256},
            "events": {
                "type": "array",
                "items": {"type": "string"},
                "description": "event names to send; empty: all",
            },
        },
    },
    "Webhook": {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "url": {"type": "string"},
            "events": {"type": "array", "items": {"type": "string"}},
            "createdAt": {"type": "number"},
            "failingSince": {"type": ["number", "null"]},
            "lastError": {"type": ["string", "null"]},
            "disabled": {"type": "boolean"},
            "disabledAt": {"type": ["number", "null"]},
            "disabledReason": {"type": ["string", "null"]},
            "secret": {"type": "string", "description": "only when created"},
            "pending": {"type": "integer", "description": "deliveries waiting (list only)"},
        },
    },
}

OPENAPI["paths"].update(_COLLAB_PATHS)
OPENAPI["components"]["schemas"].update(_COLLAB_SCHEMAS)
