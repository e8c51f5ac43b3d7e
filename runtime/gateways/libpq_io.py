"""Statements sent from the Trio thread itself, over psycopg's libpq connection.

Why not a worker thread: a statement run on one waits for the GIL twice while the
event loop is busy, once for the thread to start and again to read the reply. At
~1,000 comments/s that was most of every database call (a fetch_one: 10.4 ms for
2.0 ms of work; docs/performance.md, change 26). Here the Trio task sends the
message, parks on the socket (``trio.lowlevel.wait_readable``) and parses the reply
itself: no thread, no handoff.

Only documented psycopg interfaces are used: ``Connection.pgconn`` (the
``psycopg.pq`` libpq wrapper, always non-blocking in psycopg 3),
``psycopg.adapt.Transformer`` to dump parameters and load rows the way a cursor
does, and ``ClientCursor.mogrify`` for client-side binding.

The caller owns the connection for the duration (one task at a time). A round
trip either completes (every result read, the connection ready for the next) or
raises out of a wait; after the latter, the connection is mid-protocol and must
not be reused (``DatabaseGateway`` throws it away).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import psycopg
import trio
from psycopg import pq
from psycopg.adapt import PyFormat, Transformer

Row = tuple[Any, ...]
Conn = psycopg.Connection[Any]

_PLACEHOLDER = re.compile(rb"%(.)", re.DOTALL)
_FORMATS = {b"s": PyFormat.AUTO, b"b": PyFormat.BINARY, b"t": PyFormat.TEXT}
_OK = frozenset({pq.ExecStatus.COMMAND_OK, pq.ExecStatus.TUPLES_OK, pq.ExecStatus.EMPTY_QUERY})


@functools.lru_cache(maxsize=1024)
def positional(query: bytes) -> tuple[bytes, tuple[PyFormat, ...]]:
    """psycopg's ``%s``/``%b``/``%t`` placeholders as ``$1``, ``$2``… and each one's format.

    ``%%`` stands for ``%``. Named placeholders are refused: every statement here
    passes a sequence. Cached: the gateway's statements are a few fixed texts.
    """
    formats: list[PyFormat] = []

    def number(m: re.Match[bytes]) -> bytes:
        char = m.group(1)
        if char == b"%":
            return b"%"
        fmt = _FORMATS.get(char)
        if fmt is None:
            raise psycopg.ProgrammingError(
                f"only %s, %b and %t placeholders are allowed here, got {m.group(0)!r}"
            )
        formats.append(fmt)
        return b"$%d" % len(formats)

    return _PLACEHOLDER.sub(number, query), tuple(formats)


def _encoded(conn: Conn, query: Any) -> bytes:
    if isinstance(query, str):
        return query.encode(conn.info.encoding)
    if isinstance(query, bytes):
        return query
    as_bytes: Callable[[Conn], bytes] = query.as_bytes  # psycopg.sql.Composable
    return as_bytes(conn)


def _send_statement(conn: Conn, query: Any, params: Sequence[Any] | None) -> None:
    """Send one statement as a cursor's ``execute`` would (server-side binding)."""
    pgconn = conn.pgconn
    text = _encoded(conn, query)
    if params is None:  # as psycopg: no parameters, no placeholder processing
        pgconn.send_query(text)
        return
    text, formats = positional(text)
    if len(formats) != len(params):
        raise psycopg.ProgrammingError(
            f"the query has {len(formats)} placeholders but {len(params)} parameters were passed"
        )
    if not params:
        pgconn.send_query(text)
        return
    tx = Transformer(conn)
    values = tx.dump_sequence(params, formats)
    pgconn.send_query_params(
        text, values, param_types=tx.types, param_formats=tx.formats, result_format=pq.Format.TEXT
    )


#: Told True once a message is sent and False once its whole answer is read: while
#: True, the connection must not be reused (its answer may still arrive).
Pending = Callable[[bool], None]


async def _round_trip(
    conn: Conn, send: Callable[[], None], pending: Pending | None
) -> list[pq.abc.PGresult]:
    """Send a message and read every result of it (libpq's asynchronous command processing)."""
    pgconn = conn.pgconn
    send()
    if pending is not None:
        pending(True)
    fd = pgconn.socket
    while pgconn.flush():  # 1: the kernel buffer is full, the rest is still ours
        await trio.lowlevel.wait_writable(fd)
        pgconn.consume_input()  # what the server sent meanwhile, so it never stalls
    results: list[pq.abc.PGresult] = []
    while True:
        while pgconn.is_busy():
            await trio.lowlevel.wait_readable(fd)
            pgconn.consume_input()
        result = pgconn.get_result()
        if result is None:
            if pending is not None:
                pending(False)
            return results
        results.append(result)


def _rows(conn: Conn, result: pq.abc.PGresult) -> list[Row]:
    if result.status != pq.ExecStatus.TUPLES_OK:
        return []
    tx = Transformer(conn)
    tx.set_pgresult(result)
    rows: list[Row] = tx.load_rows(0, result.ntuples, tuple)
    return rows


def _raise_failed(conn: Conn, results: Sequence[pq.abc.PGresult]) -> None:
    """Raise the first failed result's error, as psycopg's cursor would."""
    for result in results:
        if result.status == pq.ExecStatus.FATAL_ERROR:
            raise psycopg.errors.error_from_result(result, encoding=conn.info.encoding)
        if result.status not in _OK:
            raise psycopg.InterfaceError(
                f"unexpected result from the server: {pq.ExecStatus(result.status).name}"
            )


class Outcome(NamedTuple):
    """One statement's rows and row count (-1 when the server gave none)."""

    rows: list[Row]
    rowcount: int


def is_idle(conn: Conn) -> bool:
    """No transaction open: the connection can serve anyone."""
    return conn.pgconn.transaction_status == pq.TransactionStatus.IDLE


async def run_statement(
    conn: Conn,
    query: Any,
    params: Sequence[Any] | None,
    *,
    pending: Pending | None = None,
) -> Outcome:
    """One statement, its parameters bound server-side; its rows and row count. (Text
    without parameters may hold several statements, as with a cursor: the first one's
    rows and count are returned.)"""
    results = await _round_trip(conn, lambda: _send_statement(conn, query, params), pending)
    _raise_failed(conn, results)
    if not results:
        return Outcome([], -1)
    first = results[0]
    count = first.command_tuples
    return Outcome(_rows(conn, first), -1 if count is None else count)


async def run_exchange(
    conn: Conn,
    statements: Sequence[tuple[Any, Sequence[Any]]],
    *,
    pending: Pending | None = None,
) -> list[list[Row]]:
    """Several statements as one simple-protocol message: one round trip for all.

    The parameters are bound client-side (``ClientCursor.mogrify``, psycopg's literal
    quoting) because the extended protocol takes one statement per message. The
    server runs them in order and stops at the first that fails, which raises here.
    Without a BEGIN among them they form one implicit transaction.
    """
    cursor = psycopg.ClientCursor(conn)
    text = "; ".join(cursor.mogrify(q, list(ps)) for q, ps in statements)
    message = text.encode(conn.info.encoding)
    results = await _round_trip(conn, lambda: conn.pgconn.send_query(message), pending)
    _raise_failed(conn, results)
    return [_rows(conn, r) for r in results]
