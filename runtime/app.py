"""Assembling a node from settings: its store, its token verifier, its secret.

Used by ``tandem serve`` and by the test kit, so both run the same wiring.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from runtime.config import Settings
from runtime.gateways.memory import MemoryEventStore
from runtime.gateways.store import EventStore
from runtime.node import TandemNode
from runtime.security.tokens import TokenVerifier

DEV_SECRET_FILE = "dev-jwt-secret"


def dev_secret(data_dir: str) -> str:
    """The dev profile's token secret: made once per data dir, readable only by its owner.

    ``tandem token`` reads the same file, so dev tokens work without configuration.
    """
    path = Path(data_dir) / DEV_SECRET_FILE
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        secret = secrets.token_urlsafe(48)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secret)
        return secret


def jwt_secret(settings: Settings) -> str:
    return settings.jwt_secret or dev_secret(settings.data_dir)


@asynccontextmanager
async def open_node(
    settings: Settings, *, store: EventStore | None = None
) -> AsyncIterator[TandemNode]:
    """Run a node (in a nursery of its own) for the duration of the block, then shut it down."""
    verifier = TokenVerifier(hs256_secret=jwt_secret(settings))
    node = TandemNode(settings, store=store or MemoryEventStore(), verifier=verifier)
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        try:
            yield node
        finally:
            node.shutdown()
