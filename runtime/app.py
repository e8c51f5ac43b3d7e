"""Assembling a node from settings: its stores, its token verifier, its secret.

Used by ``tandem serve`` and by the test kit, so both run the same wiring.
With ``TANDEM_REDIS_URL`` the node joins a cluster through Redis (``runtime/cluster/``).
With ``TANDEM_DATABASE_URL`` the stores are PostgreSQL through the pooled
gateway; without it an embedded PostgreSQL runs in ``TANDEM_DATA_DIR`` — one
SQL dialect and one code path everywhere. Migrations run at start.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import attrs
import orjson
import trio

from runtime.cluster.cluster import open_cluster
from runtime.comments.feature import CollabStores, postgres_collab_stores
from runtime.config import Settings
from runtime.gateways.audit_log import AuditLog, MemoryAuditLog, PostgresAuditLog
from runtime.gateways.database import DatabaseGateway, open_database_gateway
from runtime.gateways.encryption import sealer_from_settings
from runtime.gateways.memory import MemoryEventStore, MemorySessionRepository, MemoryState
from runtime.gateways.migrate import migrate
from runtime.gateways.postgres import PostgresEventStore, PostgresSessionRepository
from runtime.gateways.redis import open_redis_gateway
from runtime.gateways.sessions import CachedSessionRepository, SessionRepository
from runtime.gateways.store import EventStore
from runtime.node import TandemNode
from runtime.security.tokens import TokenVerifier

logger = logging.getLogger(__name__)

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


def token_verifier(settings: Settings) -> TokenVerifier:
    """HS256 with the shared secret, plus RS256/EdDSA keys from PEM files or a JWKS file.

    With public keys configured and no ``TANDEM_JWT_SECRET``, only the public keys
    are trusted (the dev secret is not made up behind the operator's back).
    """
    pems = [Path(p).read_text() for p in settings.jwt_public_keys.split(",") if p.strip()]
    jwks = orjson.loads(Path(settings.jwks_file).read_bytes()) if settings.jwks_file else None
    secret = settings.jwt_secret or (None if (pems or jwks) else dev_secret(settings.data_dir))
    return TokenVerifier(
        hs256_secret=secret,
        public_keys_pem=pems,
        jwks=jwks,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        leeway_s=settings.jwt_leeway,
    )


@attrs.frozen
class Stores:
    events: EventStore
    sessions: SessionRepository
    database: DatabaseGateway | None = None
    audit: AuditLog | None = None  # becomes the node's audit_log
    collab: CollabStores | None = None  # comments, notifications, webhooks (None: in memory)


def memory_stores(settings: Settings | None = None) -> Stores:
    """In-memory stores; with ``settings``, sensitive events are sealed with its keys."""
    state = MemoryState()
    sealer = None if settings is None else sealer_from_settings(settings)
    return Stores(
        MemoryEventStore(state, sealer=sealer),
        MemorySessionRepository(state),
        audit=MemoryAuditLog(),
    )


@asynccontextmanager
async def open_database_url(settings: Settings) -> AsyncIterator[str]:
    """``database_url``, or the URL of an embedded server in ``data_dir`` run for the block.

    ``--workers`` calls this once in the parent, so its workers share one server.
    """
    if settings.database_url:
        yield settings.database_url
        return
    from runtime.gateways.embedded_postgres import open_embedded_postgres

    pgdata = Path(settings.data_dir) / "postgres"
    logger.info("no TANDEM_DATABASE_URL: starting embedded PostgreSQL in %s", pgdata)
    async with open_embedded_postgres(pgdata) as url:
        yield url


@asynccontextmanager
async def open_stores(settings: Settings) -> AsyncIterator[Stores]:
    """PostgreSQL stores at ``database_url``, or on an embedded server in ``data_dir``."""
    async with AsyncExitStack() as stack:
        url = await stack.enter_async_context(open_database_url(settings))
        db = await stack.enter_async_context(
            open_database_gateway(
                url,
                min_size=settings.db_pool_min,
                max_size=settings.db_pool_max,
                statement_timeout_s=settings.db_statement_timeout,
            )
        )
        applied = await migrate(db)
        if applied:
            logger.info("applied migrations %s", ", ".join(applied))
        yield Stores(
            PostgresEventStore(db, sealer=sealer_from_settings(settings)),
            PostgresSessionRepository(db),
            db,
            audit=PostgresAuditLog(db),
            collab=postgres_collab_stores(db, sealer_from_settings(settings)),
        )


@asynccontextmanager
async def open_node(
    settings: Settings, *, stores: Stores | None = None
) -> AsyncIterator[TandemNode]:
    """Run a node (in a nursery of its own) for the duration of the block, then shut it down."""
    async with AsyncExitStack() as stack:
        if stores is None:
            stores = await stack.enter_async_context(open_stores(settings))
        verifier = token_verifier(settings)
        node = TandemNode(
            settings,
            store=stores.events,
            sessions=CachedSessionRepository(
                stores.sessions,
                session_ttl=settings.cache_session_ttl,
                member_ttl=settings.cache_member_ttl,
            ),
            database=stores.database,
            verifier=verifier,
            collab=stores.collab,
        )
        node.audit_log = stores.audit
        if settings.redis_url:
            redis = await stack.enter_async_context(
                open_redis_gateway(settings.redis_url, pool_size=settings.redis_pool)
            )
            node.status_hooks["redis"] = lambda: attrs.asdict(redis.health())
            await stack.enter_async_context(open_cluster(node, redis))
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run)
            try:
                yield node
            finally:
                node.shutdown()
