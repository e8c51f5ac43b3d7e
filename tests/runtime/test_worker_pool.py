"""The --workers parent's supervision, with tiny stand-in processes (real clock, real processes).

The full process tree on Redis and PostgreSQL is in tests/cluster/test_workers.py.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from runtime.config import ConfigError, Settings, load_settings, settings_env
from runtime.workers import (
    WORKER_ENV,
    WorkerPool,
    current_worker,
    reserve_port,
    worker_settings,
)


async def until(condition: Callable[[], object], poll: float = 0.01) -> None:
    """Poll a condition nothing signals (a process's state, a file); bound it with fail_after."""
    while True:
        if condition():
            return
        await trio.sleep(poll)


def gone(pid: int) -> bool:
    return not os.path.exists(f"/proc/{pid}")


def python(code: str, *args: str) -> list[str]:
    return [sys.executable, "-c", code, *args]


async def test_a_worker_that_keeps_exiting_makes_the_pool_give_up() -> None:
    pool = WorkerPool(
        2,
        lambda i: dict(os.environ),
        command=python("raise SystemExit(3)"),
        max_restarts=2,
        backoff_initial=0.01,
    )
    with trio.fail_after(15):
        assert await pool.run() == 1
    assert pool.gave_up
    assert 3 <= pool.starts <= 6  # one worker's third exit stops both


async def test_an_exited_worker_is_restarted_then_stopped_on_request(tmp_path: Path) -> None:
    # Each run leaves a file; the first exits at once, the second stays.
    code = (
        "import os, sys, time\n"
        "n = len(os.listdir(sys.argv[1]))\n"
        "open(os.path.join(sys.argv[1], str(n)), 'w').close()\n"
        "time.sleep(60 if n else 0)\n"
    )
    pool = WorkerPool(
        1, lambda i: dict(os.environ), command=python(code, str(tmp_path)), backoff_initial=0.01
    )
    with trio.fail_after(15):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pool.run)
            await until(lambda: len(os.listdir(tmp_path)) >= 2)
            pid = pool.pids[0]
            pool.stop()
    assert pool.starts == 2 and not pool.gave_up
    assert gone(pid)


async def test_a_worker_ignoring_sigterm_is_killed_after_the_stop_timeout(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    code = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "open(sys.argv[1], 'w').close()\n"
        "time.sleep(60)\n"
    )
    pool = WorkerPool(
        1, lambda i: dict(os.environ), command=python(code, str(ready)), stop_timeout=0.3
    )
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pool.run)
            await until(ready.exists)
            pid = pool.pids[0]
            stopped_at = trio.current_time()
            pool.stop()
    assert 0.3 <= trio.current_time() - stopped_at < 5
    assert gone(pid)


def test_the_reserved_port_is_concrete_and_shared_by_listeners() -> None:
    with reserve_port("127.0.0.1", 0) as holder:
        port = holder.getsockname()[1]
        assert port > 0
        with socket.socket() as worker:  # what a worker does with reuse_port
            worker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            worker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            worker.bind(("127.0.0.1", port))
            worker.listen()


def test_worker_settings_one_port_one_database_own_internal_port() -> None:
    parent = Settings(workers=4, redis_url="redis://r", internal_port=9100, port=0)
    child = worker_settings(parent, 2, 8123, "postgresql://db")
    assert (child.workers, child.port, child.reuse_port) == (1, 8123, True)
    assert (child.database_url, child.internal_port) == ("postgresql://db", 9102)
    assert worker_settings(Settings(internal_port=0), 3, 1, "u").internal_port == 0
    assert worker_settings(Settings(), 3, 1, "u").internal_port is None


def test_settings_travel_through_the_environment_unchanged() -> None:
    settings = Settings(
        jwt_secret="k" * 40, redis_url="redis://r", workers=3, reuse_port=True, batch_delay=0.25
    )
    assert load_settings([], settings_env(settings)) == settings
    assert load_settings([], settings_env(Settings())) == Settings()


def test_worker_identity_comes_from_the_environment() -> None:
    assert current_worker({}) is None
    worker = current_worker({WORKER_ENV: "3:1234"})
    assert worker is not None and (worker.index, worker.parent_pid) == (3, 1234)
    assert worker.status()["pid"] == os.getpid()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"TANDEM_WORKERS": "2"}, "--workers 2 needs TANDEM_REDIS_URL"),
        ({"TANDEM_WORKERS": "0"}, "workers must be >= 1"),
        (
            {"TANDEM_WORKERS": "2", "TANDEM_REDIS_URL": "redis://r", "TANDEM_PORT": "-1"},
            "needs a public port",
        ),
        (
            {
                "TANDEM_WORKERS": "3",
                "TANDEM_REDIS_URL": "redis://r",
                "TANDEM_INTERNAL_PORT": "8078",
            },
            "internal ports 8078-8080",
        ),
    ],
)
def test_workers_refusals(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings([], env)
