"""Targets: how to start each server under test as a subprocess, and how to stop it."""

from __future__ import annotations

import importlib.util
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

REPO_ROOT = Path(__file__).resolve().parent.parent
NODE_DIR = Path(__file__).resolve().parent / "peers" / "node"
ENGINE_IO_PATH = "/socket.io/?EIO=4&transport=websocket"


@dataclass(frozen=True)
class Target:
    name: str
    socketio: bool
    description: str

    @property
    def path(self) -> str:
        return ENGINE_IO_PATH if self.socketio else "/"

    def unavailable_reason(self) -> str | None:
        if self.name == "tandem":
            try:
                found = importlib.util.find_spec("runtime.cli") is not None
            except ImportError:
                found = False
            return None if found else "runtime.cli does not exist yet (Tandem server not built)"
        if self.name.startswith("node-"):
            if shutil.which("node") is None:
                return "node is not installed"
            module = "ws" if self.name == "node-ws" else "socket.io"
            if not (NODE_DIR / "node_modules" / module).is_dir():
                return f"run `npm ci` in {NODE_DIR.relative_to(REPO_ROOT)}"
        return None

    def command(self, port: int, module: bool = False) -> list[str]:
        py = sys.executable
        if self.name == "tandem" and module:  # cluster nodes: `python -m runtime.cli serve`
            return [py, "-m", "runtime.cli", "serve", "--port", str(port)]
        if self.name == "tandem":
            exe = Path(py).parent / "tandem"
            if exe.exists() and "TANDEM_SRC" not in os.environ:
                return [str(exe), "serve", "--port", str(port)]
            return [py, "-c", "from runtime.cli import main; main()", "serve", "--port", str(port)]
        modules = {
            "websockets": "loadgen.peers.websockets_peer",
            "socketio": "loadgen.peers.socketio_peer",
            "trio-naive": "loadgen.peers.trio_naive_peer",
        }
        if self.name in modules:
            return [py, "-m", modules[self.name], "--port", str(port)]
        script = "ws_peer.js" if self.name == "node-ws" else "socketio_peer.js"
        return ["node", str(NODE_DIR / script), "--port", str(port)]


TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target("tandem", False, "Tandem (`tandem serve`, dev profile)"),
        Target("websockets", False, "Python websockets + broadcast()"),
        Target("socketio", True, "python-socketio on uvicorn, rooms + emit"),
        Target("trio-naive", False, "trio-websocket, send_message to each member in turn"),
        Target("node-ws", False, "Node ws, send() to each member"),
        Target("node-socketio", True, "Node socket.io, rooms + io.to().emit()"),
    )
}
PEERS = [name for name in TARGETS if name != "tandem"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class RunningServer:
    """A target started in its own process group so its whole CPU time can be measured.

    ``extra_env`` is set over the environment (the scenario's database, Redis, secret);
    ``module`` starts Tandem as ``python -m runtime.cli serve``."""

    def __init__(
        self,
        target: Target,
        log_path: Path,
        startup_timeout: float = 30.0,
        *,
        extra_env: dict[str, str] | None = None,
        module: bool = False,
        label: str | None = None,
        wait: bool = True,
    ) -> None:
        self.target = target
        self.label = label or target.name
        self.port = free_port()
        self.log_path = log_path
        env = dict(os.environ)
        env.update(extra_env or {})
        self._data_dir: str | None = None
        # TANDEM_SRC=<dir> runs Tandem from another checkout (e.g. a `git archive` of HEAD).
        source = Path(env.get("TANDEM_SRC", REPO_ROOT)) if target.name == "tandem" else REPO_ROOT
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(source), env.get("PYTHONPATH")]))
        if target.name == "tandem":
            env.setdefault("TANDEM_PROFILE", "dev")
            # The generator offers more than the default per-connection limits (20 events/s):
            # measure the fan-out, not the rate limiter. An explicit setting wins.
            env.setdefault("TANDEM_RATE_LIMITS", "off")
            # Its own data dir (embedded PostgreSQL) so runs never share or lock one.
            if "TANDEM_DATA_DIR" not in env:
                self._data_dir = tempfile.mkdtemp(prefix="tandem-bench-")
                env["TANDEM_DATA_DIR"] = self._data_dir
        self._log = open(log_path, "wb")  # closed in stop()
        self.proc = subprocess.Popen(
            target.command(self.port, module),
            cwd=NODE_DIR if target.name.startswith("node-") else source,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.pgid = self.proc.pid
        if wait:
            self._wait_listening(startup_timeout)

    @property
    def ports(self) -> list[int]:
        return [self.port]

    @property
    def pgids(self) -> list[int]:
        return [self.pgid]

    def _wait_listening(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.target.name} exited with {self.proc.returncode}: {self.log_tail()}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.target.name} did not listen on {self.port} in {timeout}s")

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.pgid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.pgid, signal.SIGKILL)
                self.proc.wait(5)
        self._log.close()
        if self._data_dir is not None:
            shutil.rmtree(self._data_dir, ignore_errors=True)


class RunningCluster:
    """N ``tandem serve`` nodes over one Redis (a fresh key prefix) and one database.

    Quacks like ``RunningServer`` for the runner: ``ports`` (node i's port), ``pgids`` (one
    process group per node, CPU summed over all of them), ``alive()``, ``stop()``."""

    def __init__(
        self,
        target: Target,
        out_dir: Path,
        nodes: int,
        extra_env: dict[str, str],
        label: str,
        startup_timeout: float = 60.0,
    ) -> None:
        self.target = target
        self.label = label
        self.nodes: list[RunningServer] = []
        try:
            for i in range(nodes):  # start them all, then wait: migrations serialise themselves
                self.nodes.append(
                    RunningServer(
                        target,
                        out_dir / f"server-{label}-node{i}.log",
                        extra_env=extra_env,
                        module=True,
                        label=f"{label}/n{i}",
                        wait=False,
                    )
                )
            for node in self.nodes:
                node._wait_listening(startup_timeout)
        except BaseException:
            self.stop()
            raise
        self.port = self.nodes[0].port

    @property
    def ports(self) -> list[int]:
        return [n.port for n in self.nodes]

    @property
    def pgids(self) -> list[int]:
        return [n.pgid for n in self.nodes]

    def alive(self) -> bool:
        return all(n.alive() for n in self.nodes)

    def log_tail(self, chars: int = 2000) -> str:
        return "\n".join(f"[{n.label}] {n.log_tail(chars)}" for n in self.nodes if not n.alive())

    def stop(self) -> None:
        for n in self.nodes:
            n.stop()


# -- per-run PostgreSQL schema and Redis prefix -------------------------------------------------

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379"


def schema_url(url: str, schema: str) -> str:
    """``url`` with ``options=-c search_path=<schema>`` (every Tandem connection lands in the
    run's own schema; the URL's other query parameters are kept)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "options"]
    query.append(("options", f"-c search_path={schema} -c application_name={schema}"))
    return urlunsplit(parts._replace(query=urlencode(query, quote_via=quote)))


def run_name(prefix: str, started: str, label: str) -> str:
    """A schema / key-prefix name unique to this run and target: lower case, [a-z0-9_]."""
    safe = re.sub(r"[^a-z0-9]+", "_", f"{started}_{label}".lower()).strip("_")
    return f"{prefix}_{safe}_{secrets.token_hex(3)}"


class FreshSchema:
    """``CREATE SCHEMA`` on enter, ``DROP SCHEMA … CASCADE`` on exit (unless ``keep``)."""

    def __init__(self, url: str, name: str, keep: bool = False) -> None:
        self.base_url, self.name, self.keep = url, name, keep
        self.url = schema_url(url, name)

    def __enter__(self) -> FreshSchema:
        import psycopg  # Tandem's own dependency

        with psycopg.connect(self.base_url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(
                psycopg.sql.SQL("CREATE SCHEMA {}").format(psycopg.sql.Identifier(self.name))
            )
        return self

    def __exit__(self, *exc: object) -> None:
        if self.keep:
            return
        import psycopg

        with psycopg.connect(self.base_url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(
                psycopg.sql.SQL("DROP SCHEMA {} CASCADE").format(psycopg.sql.Identifier(self.name))
            )


def delete_redis_prefix(url: str, prefix: str) -> int:
    """Delete every key under the run's prefix (channels leave nothing behind)."""
    import redis  # Tandem's own dependency

    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        for i in range(0, len(keys), 500):
            client.delete(*keys[i : i + 500])
        return len(keys)
    finally:
        client.close()
