"""DatabaseGateway: PostgreSQL access for Trio actors.

psycopg 3 has no Trio support, so the gateway owns a ``psycopg_pool.ConnectionPool``
and runs every blocking call on a worker thread (``trio.to_thread.run_sync``)
behind a ``trio.CapacityLimiter`` as large as the pool: at most ``max_size``
threads ever wait on the database.

Cancellation: a cancelled call returns at once (the worker thread is abandoned)
and the query running for it is cancelled server-side (``conn.cancel_safe()``),
so its thread finishes quickly and its transaction is rolled back. Whether a
cancelled write committed is unknown to the caller. PostgreSQL's
``statement_timeout`` bounds every statement in any case.

Outages: when a connection is found broken (server restart, terminated backend)
the call fails with ``DatabaseUnavailable`` and the pool's idle connections are
checked so later calls get fresh ones; idempotent calls (reads) are retried
once first. While the server is down, calls fail after ``acquire_timeout_s``.
"""

from __future__ import annotations

import logging
import select
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any, LiteralString, TypeVar

import attrs
import psycopg
import psycopg_pool
import trio
from psycopg.pq import TransactionStatus

from runtime import metrics

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")
Row = tuple[Any, ...]
Params = Sequence[Any] | Mapping[str, Any] | None
Query = LiteralString | psycopg.sql.Composed | psycopg.sql.SQL


class DatabaseError(Exception):
    """Base class of the gateway's own errors."""


class DatabaseUnavailable(DatabaseError):
    """The server could not be reached or the connection broke mid-request.

    A write that fails this way may or may not have been committed.
    """


class StatementTimeout(DatabaseError):
    """The statement ran longer than ``statement_timeout`` and was cancelled."""


@attrs.frozen(slots=True)
class DatabaseHealth:
    """A snapshot for /status."""

    ok: bool
    pool_size: int  # connections open or being opened
    in_use: int  # of those, not idle in the pool
    waiting: int  # requests waiting for a connection
    max_size: int
    last_error: str | None
    last_error_age_s: float | None


class _Running:
    """Shares the connection of one in-flight call with the code that may cancel it.

    The lock makes sure a server-side cancel never hits a connection that was
    already handed back to the pool (and so to another request).
    """

    __slots__ = ("cancelled", "conn", "lock")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.conn: psycopg.Connection[Any] | None = None
        self.cancelled = False

    def cancel(self) -> None:
        with self.lock:
            self.cancelled = True
            if self.conn is not None:
                try:
                    self.conn.cancel_safe(timeout=2.0)
                except Exception as exc:  # best effort: statement_timeout still bounds it
                    log.debug("could not cancel query: %s", exc)


def _is_broken(conn: psycopg.Connection[Any] | None, exc: BaseException) -> bool:
    """True if ``exc`` means "no usable connection", not a problem with the query."""
    if isinstance(
        exc, psycopg_pool.PoolTimeout | psycopg_pool.PoolClosed | psycopg_pool.TooManyRequests
    ):
        return True
    return conn is None or conn.closed or conn.broken


def _alive(conn: psycopg.Connection[Any]) -> bool:
    """Whether a connection just taken from the pool is usable; closes it if not.

    An idle connection's socket has nothing to read unless the server spoke: a
    terminated backend or a restarting server sends a FATAL error and closes it.
    One poll() finds those with no round trip in the common case; only a readable
    socket gets a real check. (Not the pool's ``check`` hook: after a failed
    check the pool backs off for a second or more.)
    """
    poller = select.poll()
    poller.register(conn.fileno(), select.POLLIN)
    if not poller.poll(0):
        return True
    try:
        psycopg_pool.ConnectionPool.check_connection(conn)
        return True
    except psycopg.Error:
        conn.close()  # the pool discards closed connections when they come back
        return False


# How _call runs its function: in a transaction of its own; alone (autocommit: a
# single statement, or BEGIN and COMMIT sent inside ``exchange`` messages); or
# managing the connection itself.
_TRANSACTION, _ALONE, _SESSION = "transaction", "alone", "session"

Statement = tuple[LiteralString, Sequence[Any]]


@contextmanager
def explicit_transactions(conn: psycopg.Connection[Any]) -> Iterator[None]:
    """Autocommit for the block: each statement commits alone, or the block sends its
    own BEGIN and COMMIT (inside :func:`exchange` messages, so they cost no round trip
    of their own). A transaction the block leaves open, because something raised, is
    rolled back; the connection goes back to the pool as it came (autocommit off)."""
    conn.autocommit = True
    try:
        yield
    finally:
        try:
            if not conn.closed and conn.info.transaction_status != TransactionStatus.IDLE:
                conn.execute("ROLLBACK")
        finally:
            if not conn.closed:
                try:
                    conn.autocommit = False
                except psycopg.Error:  # still in a transaction: the ROLLBACK failed
                    conn.close()  # the pool discards it rather than lend it half reset


def exchange(conn: psycopg.Connection[Any], statements: Sequence[Statement]) -> list[list[Row]]:
    """Send ``statements`` as one message and return each one's rows ([] if it has
    none): one round trip however many there are.

    The parameters are bound client-side (psycopg's literal quoting, the same as
    ``psycopg.sql.Literal``) because the extended protocol takes one statement per
    message. The server runs them in order and stops at the first that fails, which
    raises here. Without a BEGIN among them they form one implicit transaction.
    """
    cursor = psycopg.ClientCursor(conn)
    cursor.execute("; ".join(q for q, _ in statements), [p for _, ps in statements for p in ps])
    results: list[list[Row]] = []
    while True:
        results.append(cursor.fetchall() if cursor.description is not None else [])
        if not cursor.nextset():
            return results


class DatabaseGateway:
    """Async access to one PostgreSQL database. Build it with ``open_database_gateway``."""

    def __init__(self, pool: psycopg_pool.ConnectionPool[Any], *, max_size: int) -> None:
        self._pool = pool
        self._max_size = max_size
        self._limiter = trio.CapacityLimiter(max_size)
        self._last_error: str | None = None
        self._last_error_at: float | None = None
        self._ok = True
        metrics.DATABASE_POOLS.add(self)  # pool gauges on /metrics

    # -- public API -----------------------------------------------------------------

    # One statement is a transaction by itself: the calls that run one send it alone
    # (autocommit), one round trip instead of three with BEGIN and COMMIT.

    async def execute(self, sql: Query, params: Params = None) -> int:
        """Run one statement, committed on its own; returns the row count."""

        def work(conn: psycopg.Connection[Any]) -> int:
            return conn.execute(sql, params).rowcount

        return await self._call(work, idempotent=False, wrap=_ALONE)

    async def write_returning(self, sql: Query, params: Params = None) -> list[Row]:
        """The rows a write statement returns, committed on its own. Not retried: it
        may have committed before a connection broke."""

        def work(conn: psycopg.Connection[Any]) -> list[Row]:
            return conn.execute(sql, params).fetchall()

        return await self._call(work, idempotent=False, wrap=_ALONE)

    async def fetch_all(self, sql: Query, params: Params = None) -> list[Row]:
        """Rows of a read-only query (retried once on a fresh connection if one broke)."""

        def work(conn: psycopg.Connection[Any]) -> list[Row]:
            return conn.execute(sql, params).fetchall()

        return await self._call(work, idempotent=True, wrap=_ALONE)

    async def fetch_one(self, sql: Query, params: Params = None) -> Row | None:
        """First row of a read-only query, or None."""

        def work(conn: psycopg.Connection[Any]) -> Row | None:
            row: Row | None = conn.execute(sql, params).fetchone()
            return row

        return await self._call(work, idempotent=True, wrap=_ALONE)

    async def executemany(
        self, sql: Query, params_seq: Sequence[Sequence[Any] | Mapping[str, Any]]
    ) -> None:
        """Run ``sql`` once per parameter set, all in one transaction."""

        def work(conn: psycopg.Connection[Any]) -> None:
            with conn.cursor() as cur:
                cur.executemany(sql, params_seq)

        await self._call(work, idempotent=False)

    async def copy_rows(self, table: str, columns: Sequence[str], rows: Sequence[Row]) -> None:
        """Bulk-load ``rows`` with COPY in one transaction (all or nothing)."""
        stmt = psycopg.sql.SQL("COPY {} ({}) FROM STDIN").format(
            psycopg.sql.Identifier(table),
            psycopg.sql.SQL(", ").join(psycopg.sql.Identifier(c) for c in columns),
        )

        def work(conn: psycopg.Connection[Any]) -> None:
            with conn.cursor() as cur, cur.copy(stmt) as copy:
                for row in rows:
                    copy.write_row(row)

        await self._call(work, idempotent=False)

    async def run_in_transaction(
        self, fn: Callable[[psycopg.Connection[Any]], T], *, idempotent: bool = False
    ) -> T:
        """Call ``fn(conn)`` on a worker thread inside one transaction.

        Commits when ``fn`` returns, rolls back when it raises. ``fn`` must not touch
        Trio. Pass ``idempotent=True`` only if running ``fn`` twice is harmless: it is
        then retried once on a fresh connection after a connection failure.
        """
        return await self._call(fn, idempotent=idempotent)

    async def run_on_connection(
        self, fn: Callable[[psycopg.Connection[Any]], T], *, idempotent: bool = False
    ) -> T:
        """Like ``run_in_transaction`` but ``fn`` manages transactions itself.

        For session-level work (advisory locks, autocommit DDL). ``fn`` must leave
        the connection as it found it (autocommit off, no open transaction);
        a leftover transaction is rolled back by the pool.
        """
        return await self._call(fn, idempotent=idempotent, wrap=_SESSION)

    def health(self) -> DatabaseHealth:
        stats = self._pool.get_stats()
        size = stats.get("pool_size", 0)
        return DatabaseHealth(
            ok=self._ok,
            pool_size=size,
            in_use=size - stats.get("pool_available", 0),
            waiting=stats.get("requests_waiting", 0),
            max_size=self._max_size,
            last_error=self._last_error,
            last_error_age_s=(
                None if self._last_error_at is None else time.monotonic() - self._last_error_at
            ),
        )

    # -- machinery ------------------------------------------------------------------

    async def _call(
        self,
        fn: Callable[[psycopg.Connection[Any]], T],
        *,
        idempotent: bool,
        wrap: str = _TRANSACTION,
    ) -> T:
        attempts = 2 if idempotent else 1
        for attempt in range(1, attempts + 1):
            running = _Running()
            started = trio.current_time()
            try:
                result = await trio.to_thread.run_sync(
                    self._work_in_thread,
                    fn,
                    running,
                    wrap,
                    limiter=self._limiter,
                    abandon_on_cancel=True,
                )
            except trio.Cancelled:
                # The thread keeps running; stop its query so it returns its
                # connection soon. Fire and forget: never block the Trio loop.
                trio.lowlevel.start_thread_soon(running.cancel, lambda _outcome: None)
                raise
            except _Broken as broken:
                self._note_error(broken.cause)
                # After a pool timeout no fresh connection is to be had: do not wait twice.
                if attempt < attempts and not isinstance(broken.cause, psycopg_pool.PoolTimeout):
                    log.info("database connection broke (%s); retrying once", broken.cause)
                    continue
                raise DatabaseUnavailable(str(broken.cause)) from broken.cause
            finally:
                metrics.DATABASE.observe(trio.current_time() - started)
            self._ok = True
            return result
        raise AssertionError("unreachable")

    def _work_in_thread(
        self, fn: Callable[[psycopg.Connection[Any]], T], running: _Running, wrap: str
    ) -> T:
        conn: psycopg.Connection[Any] | None = None
        try:
            # Skip connections that died while idle (each try drops one), so a
            # request after a restart does not fail on a stale connection.
            for _ in range(self._max_size + 1):
                with self._pool.connection() as conn:
                    if not _alive(conn):
                        continue
                    with running.lock:
                        if running.cancelled:  # the caller left while we waited
                            raise _Abandoned
                        running.conn = conn
                    try:
                        if wrap == _SESSION:
                            return fn(conn)
                        if wrap == _ALONE:
                            with explicit_transactions(conn):
                                return fn(conn)
                        with conn.transaction():
                            return fn(conn)
                    finally:
                        with running.lock:
                            running.conn = None
            raise psycopg.OperationalError("no live connection in the pool")
        except psycopg.errors.QueryCanceled as exc:
            if not _is_broken(conn, exc):
                raise StatementTimeout(str(exc)) from exc
            self._purge_idle()
            raise _Broken(exc) from exc
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:  # incl. pool errors
            if not _is_broken(conn, exc):
                raise
            self._purge_idle()
            raise _Broken(exc) from exc

    def _purge_idle(self) -> None:
        """Drop idle connections that died with the one we just saw break."""
        try:
            self._pool.check()
        except Exception as exc:
            log.debug("pool check failed: %s", exc)

    def _note_error(self, exc: BaseException) -> None:
        self._ok = False
        self._last_error = f"{type(exc).__name__}: {exc}".strip()
        self._last_error_at = time.monotonic()
        log.warning("database unavailable: %s", self._last_error)


class _Abandoned(Exception):
    """Internal: the caller was cancelled before the work started; nobody reads this."""


class _Broken(Exception):
    """Internal: the connection (or the pool) failed; carries the original error."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


@asynccontextmanager
async def open_database_gateway(
    url: str,
    *,
    min_size: int = 2,
    max_size: int = 20,
    statement_timeout_s: float = 30.0,
    acquire_timeout_s: float = 10.0,
    connect_timeout_s: float = 5.0,
    options: str | None = None,
) -> AsyncIterator[DatabaseGateway]:
    """Open a pool to ``url``, wait until ``min_size`` connections are up, yield a gateway.

    ``options`` is passed to the server as extra ``-c`` settings (e.g. a search_path).
    Raises ``DatabaseUnavailable`` if the server cannot be reached within
    ``connect_timeout_s``. Cancellation: opening is shielded up to its timeout;
    on exit (also when cancelled) the pool is closed under a shielded, bounded scope.
    """
    settings = f"-c statement_timeout={int(statement_timeout_s * 1000)}"
    settings += f" -c idle_in_transaction_session_timeout={int(statement_timeout_s * 2000)}"
    # Keep the URL's own `options` (a search_path, say): the keyword would replace them.
    url_options = psycopg.conninfo.conninfo_to_dict(url).get("options")
    for extra in (url_options, options):
        if extra:
            settings += f" {extra}"
    pool: psycopg_pool.ConnectionPool[Any] = psycopg_pool.ConnectionPool(
        url,
        min_size=min_size,
        max_size=max_size,
        open=False,
        timeout=acquire_timeout_s,
        reconnect_timeout=300,  # keep refilling min_size in the background while it is down
        kwargs={"options": settings, "connect_timeout": max(1, int(connect_timeout_s))},
        name="tandem",
    )

    def open_pool() -> None:
        try:
            pool.open(wait=True, timeout=connect_timeout_s)
        except psycopg_pool.PoolTimeout as exc:
            pool.close(timeout=1.0)
            raise DatabaseUnavailable(f"cannot connect to PostgreSQL: {exc}") from exc

    with trio.CancelScope(shield=True):
        await trio.to_thread.run_sync(open_pool)
    try:
        yield DatabaseGateway(pool, max_size=max_size)
    finally:
        with trio.move_on_after(10) as scope:
            scope.shield = True
            await trio.to_thread.run_sync(lambda: pool.close(timeout=5.0), abandon_on_cancel=True)


async def each_alone_if_refused(
    write: Callable[[list[T]], Awaitable[Sequence[R | Exception]]], items: list[T], what: str
) -> list[R | Exception]:
    """``write(items)`` (one statement or transaction for all), one result per item; never raises.

    If the write was refused (one row broke the statement: nothing was written), the
    items are written one at a time, so the one that broke it fails alone and its
    batch-mates are not refused for it. A database that is unavailable or timed out
    (``DatabaseError``) fails them all alike. ``what`` names the items in the log.
    """
    if not items:
        return []
    try:
        return list(await write(items))
    except DatabaseError as exc:
        return [exc] * len(items)
    except Exception as exc:
        if len(items) == 1:
            return [exc]
        log.warning("%s: a batch of %d refused (%s); writing singly", what, len(items), exc)
        out: list[R | Exception] = []
        for item in items:
            out.extend(await each_alone_if_refused(write, [item], what))
        return out
