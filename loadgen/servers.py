"""Targets: how to start each server under test as a subprocess, and how to stop it."""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

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

    def command(self, port: int) -> list[str]:
        py = sys.executable
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
    """A target started in its own process group so its whole CPU time can be measured."""

    def __init__(self, target: Target, log_path: Path, startup_timeout: float = 30.0) -> None:
        self.target = target
        self.port = free_port()
        self.log_path = log_path
        env = dict(os.environ)
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
            target.command(self.port),
            cwd=NODE_DIR if target.name.startswith("node-") else source,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.pgid = self.proc.pid
        self._wait_listening(startup_timeout)

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
