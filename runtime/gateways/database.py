"""DatabaseGateway: PostgreSQL access for Trio actors.

The gateway owns a ``psycopg_pool.ConnectionPool`` and reaches the server two ways:

* **From the Trio thread** (the lane): single statements (``execute``,
  ``fetch_one``, ``fetch_all``, ``write_returning``), ``exchange`` and
  ``connection()`` send their messages from the calling task and wait on the
  socket (:mod:`runtime.gateways.libpq_io`). Pool connections lent to the lane
  stay on the Trio side between calls (up to ``LANE_IDLE``); at most ``max_size``
  calls use it at once. Every hot path is here: no worker thread, so no wait for
  the GIL while the event loop is busy.
* **On a worker thread** (``trio.to_thread.run_sync``, behind a
  ``trio.CapacityLimiter`` as large as the pool): ``run_in_transaction`` and
  ``run_on_connection`` for code written against psycopg's blocking API, and
  ``executemany`` and ``copy_rows``. Such a call is handed an idle lane
  connection first, and the lane gives connections back to the pool whenever
  one is waiting there: connections the lane merely keeps never make it wait.

Cancellation: a cancelled call returns at once and the query running for it is
cancelled server-side (``cancel_safe()`` on a thread of its own), so its
transaction is rolled back; a lane connection cancelled mid-message is closed
rather than reused. Whether a cancelled write committed is unknown to the caller.
PostgreSQL's ``statement_timeout`` bounds every statement in any case.

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

from runtime import metrics
from runtime.gateways.libpq_io import Outcome, is_idle, run_exchange, run_statement

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")
Row = tuple[Any, ...]
Params = Sequence[Any] | None
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
    already handed back to the pool (and so to another request), and decides who
    returns a connection the lane handed over (``given_taken``: the thread did).
    """

    __slots__ = ("cancelled", "conn", "given_taken", "lock")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.conn: psycopg.Connection[Any] | None = None
        self.cancelled = False
        self.given_taken = False

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


# How _call runs its function on its thread: in a transaction of its own, or
# managing the connection itself.
_TRANSACTION, _SESSION = "transaction", "session"

#: Lane connections kept on the Trio side between calls; more go back to the pool,
#: where threaded work can have them.
LANE_IDLE = 4

Statement = tuple[LiteralString, Sequence[Any]]


def _quiet(conn: psycopg.Connection[Any]) -> bool:
    """Whether an idle lane connection is fit to reuse: open, and nothing unasked for
    to read (a terminated backend's FATAL message). One poll(), no round trip."""
    if conn.closed:
        return False
    poller = select.poll()
    poller.register(conn.fileno(), select.POLLIN)
    return not poller.poll(0)


class _Lane:
    """Pool connections lent to the Trio thread (see the module docstring)."""

    def __init__(self, pool: psycopg_pool.ConnectionPool[Any], *, max_size: int) -> None:
        self._pool = pool
        self._max_size = max_size
        self._idle: list[psycopg.Connection[Any]] = []

    @property
    def idle(self) -> int:
        return len(self._idle)

    async def take(self) -> psycopg.Connection[Any]:
        conn = self.pop_idle()
        return conn if conn is not None else await self._borrow()

    def pop_idle(self) -> psycopg.Connection[Any] | None:
        """An idle lane connection fit to reuse, if the lane keeps one (the stale ones
        met on the way are discarded). Threaded work is handed one too (and returns it
        to the pool), so connections the lane is merely keeping never make it wait."""
        while self._idle:
            conn = self._idle.pop()
            if _quiet(conn):
                return conn
            self.discard(conn, interrupted=False)
        return None

    async def _borrow(self) -> psycopg.Connection[Any]:
        """A live connection from the pool (the wait for one happens on a thread)."""
        handshake = _Running()  # its lock, conn and cancelled: who owns the connection

        def get() -> psycopg.Connection[Any]:
            for _ in range(self._max_size + 1):
                conn: psycopg.Connection[Any] = self._pool.getconn()
                if _alive(conn):
                    break
                self._pool.putconn(conn)  # closed by _alive: the pool drops it
            else:
                raise psycopg.OperationalError("no live connection in the pool")
            with handshake.lock:
                if handshake.cancelled:  # the caller left while we waited
                    self._pool.putconn(conn)
                    raise _Abandoned
                handshake.conn = conn
            return conn

        try:
            return await trio.to_thread.run_sync(get, abandon_on_cancel=True)
        except trio.Cancelled:
            with handshake.lock:
                handshake.cancelled = True
                got = handshake.conn
            if got is not None:  # got one just as we were cancelled: nobody will use it
                self._pool.putconn(got)
            raise

    async def give_back(self, conn: psycopg.Connection[Any], *, clean: bool) -> None:
        """Keep or return a connection after use. ``clean``: every message it was sent
        was answered in full (the caller was not interrupted mid-message)."""
        if clean and not conn.closed and not is_idle(conn):
            # A transaction left open by an error: end it before anyone else uses it.
            clean = False
            with trio.CancelScope(shield=True), trio.move_on_after(2):
                try:
                    await run_statement(conn, "ROLLBACK", None)
                    clean = is_idle(conn)
                except psycopg.Error:
                    pass
        if not clean or conn.closed:
            self.discard(conn, interrupted=not conn.closed)
        elif len(self._idle) < LANE_IDLE and not self._pool_has_waiters():
            self._idle.append(conn)
        else:
            self._pool.putconn(conn)

    def _pool_has_waiters(self) -> bool:
        # Threaded work waiting for a connection gets this one: otherwise, with the
        # lane's connections all in use when it asked, it would wait for the pool's
        # timeout while the lane kept them.
        return bool(self._pool.get_stats().get("requests_waiting", 0))

    def discard(self, conn: psycopg.Connection[Any], *, interrupted: bool) -> None:
        """Close a connection and hand it back to the pool, which replaces it. One
        interrupted mid-message first has its query cancelled server-side, on a
        thread of its own so the Trio loop never blocks on it (fire and forget:
        ``statement_timeout`` bounds it if the cancel fails)."""
        if not conn.closed:
            trio.lowlevel.notify_closing(conn.fileno())
        if not interrupted:
            conn.close()
            self._pool.putconn(conn)
            return

        def cancel_and_close() -> None:
            try:
                conn.cancel_safe(timeout=2.0)
            except Exception as exc:  # best effort, as above
                log.debug("could not cancel query: %s", exc)
            conn.close()
            self._pool.putconn(conn)

        trio.lowlevel.start_thread_soon(cancel_and_close, lambda _outcome: None)

    def close(self) -> None:
        """Return the idle connections (the pool is closing)."""
        while self._idle:
            self._pool.putconn(self._idle.pop())


class LentConnection:
    """One pool connection for a task's statements, sent from the Trio thread; in
    autocommit (a transaction is a BEGIN and a COMMIT inside ``exchange`` messages;
    one left open when the block ends is rolled back). Get it from
    :meth:`DatabaseGateway.connection`."""

    __slots__ = ("conn", "interrupted")

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn
        # A message left unanswered (its caller cancelled, or the connection failed
        # mid-way): its answer may still arrive, so the connection is never reused.
        self.interrupted = False

    async def exchange(self, statements: Sequence[Statement]) -> list[list[Row]]:
        """See :meth:`DatabaseGateway.exchange`."""
        return await run_exchange(self.conn, statements, pending=self._pending)

    async def statement(self, sql: Query, params: Params = None) -> Outcome:
        """One statement with its parameters bound server-side: its rows and row count."""
        return await run_statement(self.conn, sql, params, pending=self._pending)

    def _pending(self, pending: bool) -> None:
        self.interrupted = pending


class DatabaseGateway:
    """Async access to one PostgreSQL database. Build it with ``open_database_gateway``."""

    def __init__(self, pool: psycopg_pool.ConnectionPool[Any], *, max_size: int) -> None:
        self._pool = pool
        self._max_size = max_size
        self._limiter = trio.CapacityLimiter(max_size)
        self._lane = _Lane(pool, max_size=max_size)
        self._lane_slots = trio.Semaphore(max_size)
        self._last_error: str | None = None
        self._last_error_at: float | None = None
        self._ok = True
        metrics.DATABASE_POOLS.add(self)  # pool gauges on /metrics

    # -- public API -----------------------------------------------------------------

    # One statement is a transaction by itself: the calls that run one send it alone
    # (autocommit), one round trip instead of three with BEGIN and COMMIT, and from
    # the Trio thread (the lane).

    async def execute(self, sql: Query, params: Params = None) -> int:
        """Run one statement, committed on its own; returns the row count."""
        return (await self._statement(sql, params, idempotent=False)).rowcount

    async def write_returning(self, sql: Query, params: Params = None) -> list[Row]:
        """The rows a write statement returns, committed on its own. Not retried: it
        may have committed before a connection broke."""
        return (await self._statement(sql, params, idempotent=False)).rows

    async def fetch_all(self, sql: Query, params: Params = None) -> list[Row]:
        """Rows of a read-only query (retried once on a fresh connection if one broke)."""
        return (await self._statement(sql, params, idempotent=True)).rows

    async def fetch_one(self, sql: Query, params: Params = None) -> Row | None:
        """First row of a read-only query, or None."""
        rows = (await self._statement(sql, params, idempotent=True)).rows
        return rows[0] if rows else None

    async def exchange(self, statements: Sequence[Statement]) -> list[list[Row]]:
        """Send ``statements`` as one message and return each one's rows ([] if it has
        none): one round trip however many there are. Not retried.

        The parameters are bound client-side (psycopg's literal quoting, the same as
        ``psycopg.sql.Literal``) because the extended protocol takes one statement per
        message. The server runs them in order and stops at the first that fails,
        which raises here. Without a BEGIN among them they form one implicit
        transaction; with one, the COMMIT belongs in the same message (an open
        transaction is rolled back when the call ends).
        """
        async with self.connection() as conn:
            return await conn.exchange(statements)

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[LentConnection]:
        """A pool connection of the calling task's own, for several messages in one
        transaction (see :class:`LentConnection`). Not retried."""
        started = trio.current_time()
        try:
            async with self._lent() as conn:
                yield conn
        except _Broken as broken:
            self._note_error(broken.cause)
            raise DatabaseUnavailable(str(broken.cause)) from broken.cause
        finally:
            metrics.DATABASE.observe(trio.current_time() - started)
        self._ok = True

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

    def release(self) -> None:
        """Give the lane's idle connections back to the pool (it is about to close)."""
        self._lane.close()

    def health(self) -> DatabaseHealth:
        stats = self._pool.get_stats()
        size = stats.get("pool_size", 0)
        return DatabaseHealth(
            ok=self._ok,
            pool_size=size,
            in_use=size - stats.get("pool_available", 0) - self._lane.idle,
            waiting=stats.get("requests_waiting", 0),
            max_size=self._max_size,
            last_error=self._last_error,
            last_error_age_s=(
                None if self._last_error_at is None else time.monotonic() - self._last_error_at
            ),
        )

    # -- machinery ------------------------------------------------------------------

    async def _statement(self, sql: Query, params: Params, *, idempotent: bool) -> Outcome:
        async def attempt() -> Outcome:
            async with self._lent() as conn:
                return await conn.statement(sql, params)

        return await self._attempts(attempt, idempotent=idempotent)

    async def _attempts(self, attempt: Callable[[], Awaitable[T]], *, idempotent: bool) -> T:
        """``attempt()``, timed; once more on a fresh connection if it was idempotent and
        its connection broke. A broken connection raises ``DatabaseUnavailable``."""
        attempts = 2 if idempotent else 1
        for n in range(1, attempts + 1):
            started = trio.current_time()
            try:
                result = await attempt()
            except _Broken as broken:
                self._note_error(broken.cause)
                # After a pool timeout no fresh connection is to be had: do not wait twice.
                if n < attempts and not isinstance(broken.cause, psycopg_pool.PoolTimeout):
                    log.info("database connection broke (%s); retrying once", broken.cause)
                    continue
                raise DatabaseUnavailable(str(broken.cause)) from broken.cause
            finally:
                metrics.DATABASE.observe(trio.current_time() - started)
            self._ok = True
            return result
        raise AssertionError("unreachable")

    @asynccontextmanager
    async def _lent(self) -> AsyncIterator[LentConnection]:
        """A lane connection for the block, its errors sorted as ``_work_in_thread``
        sorts them (``_Broken`` for a connection that failed)."""
        async with self._lane_slots:
            lent: LentConnection | None = None
            try:
                lent = LentConnection(await self._lane.take())
                yield lent
            except psycopg.Error as exc:
                broken = lent is None or _is_broken(lent.conn, exc)
                if isinstance(exc, psycopg.errors.QueryCanceled) and not broken:
                    raise StatementTimeout(str(exc)) from exc
                if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError) and broken:
                    await self._purge_idle_soon()
                    raise _Broken(exc) from exc
                raise
            finally:
                if lent is not None:
                    await self._lane.give_back(lent.conn, clean=not lent.interrupted)

    async def _purge_idle_soon(self) -> None:
        with trio.CancelScope(shield=True), trio.move_on_after(5):
            await trio.to_thread.run_sync(self._purge_idle, abandon_on_cancel=True)

    async def _call(
        self,
        fn: Callable[[psycopg.Connection[Any]], T],
        *,
        idempotent: bool,
        wrap: str = _TRANSACTION,
    ) -> T:
        async def attempt() -> T:
            given = self._lane.pop_idle()
            running = _Running()
            try:
                result: T = await trio.to_thread.run_sync(
                    self._work_in_thread,
                    fn,
                    running,
                    wrap,
                    given,
                    limiter=self._limiter,
                    abandon_on_cancel=True,
                )
            except trio.Cancelled:
                with running.lock:
                    running.cancelled = True
                    taken = running.given_taken
                if given is not None and not taken:  # the thread never started with it
                    self._pool.putconn(given)
                # The thread keeps running; stop its query so it returns its
                # connection soon. Fire and forget: never block the Trio loop.
                trio.lowlevel.start_thread_soon(running.cancel, lambda _outcome: None)
                raise
            return result

        return await self._attempts(attempt, idempotent=idempotent)

    def _work_in_thread(
        self,
        fn: Callable[[psycopg.Connection[Any]], T],
        running: _Running,
        wrap: str,
        given: psycopg.Connection[Any] | None,
    ) -> T:
        if given is not None:
            with running.lock:
                if running.cancelled:  # the caller left before we started: it returned it
                    raise _Abandoned
                running.given_taken = True
        conn: psycopg.Connection[Any] | None = None
        try:
            # Skip connections that died while idle (each try drops one), so a
            # request after a restart does not fail on a stale connection.
            for _ in range(self._max_size + 1):
                with self._checked_out(given) as conn:
                    given = None  # the lane's, if any, is only the first try
                    if not _alive(conn):
                        continue
                    with running.lock:
                        if running.cancelled:  # the caller left while we waited
                            raise _Abandoned
                        running.conn = conn
                    try:
                        if wrap == _SESSION:
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

    @contextmanager
    def _checked_out(
        self, given: psycopg.Connection[Any] | None
    ) -> Iterator[psycopg.Connection[Any]]:
        """``given`` (a connection the lane handed over) or one from the pool, used and
        returned as the pool's own ``connection()`` does: commit, or roll back on an
        exception, then back to the pool."""
        if given is None:
            with self._pool.connection() as conn:
                yield conn
            return
        try:
            with given:  # a pool connection: the block commits or rolls back, never closes
                yield given
        finally:
            self._pool.putconn(given)

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
    gateway = DatabaseGateway(pool, max_size=max_size)
    try:
        yield gateway
    finally:
        gateway.release()
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
