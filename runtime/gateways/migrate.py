"""Schema migrations: numbered plain-SQL files applied in order, once.

Each ``NNNN_name.sql`` file in ``runtime/gateways/migrations`` runs in its own
transaction together with its row in ``schema_migrations``, so a file is either
fully applied and recorded or not at all. A session-level advisory lock (keyed
on the current schema) serialises processes that start at the same time: the
second one waits, then finds nothing left to do.

Cancellation: ``migrate`` returns at once when cancelled; the migration running
then is cancelled server-side and rolled back, the lock is released with it.
"""

from __future__ import annotations

import importlib.resources
import logging
import re
from typing import Any

import attrs
import psycopg

from runtime.gateways.database import DatabaseGateway

log = logging.getLogger(__name__)

_FILE_RE = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
_LOCK_KEY_SQL = "SELECT hashtextextended('tandem.migrate:' || current_schema(), 0)"


@attrs.frozen(slots=True)
class Migration:
    version: str  # file name without ".sql", e.g. "0001_core"
    sql: str


def load_migrations() -> list[Migration]:
    """The shipped migrations, in order. Raises ValueError on a duplicate number."""
    folder = importlib.resources.files("runtime.gateways.migrations")
    found: dict[str, Migration] = {}
    for entry in folder.iterdir():
        match = _FILE_RE.match(entry.name)
        if match is None:
            continue
        number = match.group(1)
        if number in found:
            raise ValueError(f"two migrations numbered {number}")
        found[number] = Migration(entry.name.removesuffix(".sql"), entry.read_text("utf-8"))
    return [found[n] for n in sorted(found)]


def _apply(conn: psycopg.Connection[Any], migrations: list[Migration]) -> list[str]:
    applied_now: list[str] = []
    conn.autocommit = True  # each migration gets its own explicit transaction below
    try:
        row = conn.execute(_LOCK_KEY_SQL).fetchone()
        assert row is not None
        key = int(row[0])
        conn.execute("SELECT pg_advisory_lock(%s)", (key,))
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version text PRIMARY KEY,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {r[0] for r in conn.execute("SELECT version FROM schema_migrations")}
            for migration in migrations:
                if migration.version in done:
                    continue
                log.info("applying migration %s", migration.version)
                with conn.transaction():
                    # Plain SQL from our own package files, not user input.
                    conn.execute(migration.sql)  # type: ignore[arg-type,unused-ignore]
                    conn.execute(
                        "INSERT INTO schema_migrations (version) VALUES (%s)",
                        (migration.version,),
                    )
                applied_now.append(migration.version)
        finally:
            if not conn.broken:
                conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
    finally:
        if not conn.closed:
            conn.autocommit = False
    return applied_now


async def migrate(db: DatabaseGateway) -> list[str]:
    """Apply the migrations not yet applied; return their versions (empty if none)."""
    migrations = load_migrations()
    applied = await db.run_on_connection(lambda conn: _apply(conn, migrations))
    if applied:
        log.info("applied migrations: %s", ", ".join(applied))
    return applied
