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
