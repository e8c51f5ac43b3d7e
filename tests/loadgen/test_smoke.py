"""Smoke test: a tiny fanout through the real generator against a real peer on loopback.

No timing assertions: only that every event arrived and the result files are well formed.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

# The generator's own dependencies (not Tandem's): hdrhistogram for latency histograms.
pytest.importorskip("hdrh", reason="loadgen needs `pip install hdrhistogram`")

REPO = Path(__file__).resolve().parents[2]
STEP_FIELDS = {
    "rate",
    "published",
    "expected",
    "delivered",
    "acks",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "max_ms",
    "server_cpu_seconds",
    "deliveries_per_server_cpu_second",
    "generator_cpu_percent",
    "other_cpu_percent",
    "warnings",
    "status",
    "problems",
}


def run_fanout(
    target: str, out: Path, command: tuple[str, ...] = ("-m", "loadgen")
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    proc = subprocess.run(
        [
            sys.executable,
            *command,
            "fanout",
            "--target",
            target,
            "--members",
            "5",
            "--rate",
            "10",
            "--duration",
            "2",
            "--procs",
            "1",
            "--out",
            str(out),
            "--quiet",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    runs = list(out.glob("*-fanout/results.json"))
    assert len(runs) == 1, proc.stdout + proc.stderr
    return proc, json.loads(runs[0].read_text())


@pytest.mark.integration
def test_fanout_against_trio_naive_peer_delivers_everything(tmp_path: Path) -> None:
    proc, doc = run_fanout("trio-naive", tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert doc["meta"]["scenario"] == "fanout"
    [result] = doc["results"]
    assert result["target"] == "trio-naive"
    assert result["connect"]["joined"] == 5
    [step] = result["steps"]
    assert STEP_FIELDS <= step.keys()
    assert step["published"] >= 19  # 10 ev/s for 2 s, give or take the schedule's phase
    assert step["delivered"] == step["expected"] == step["published"] * 5
    assert step["acks"] == step["published"]
    assert step["status"] in ("OK", "INVALID")  # INVALID only if this machine is starved
    run_dir = next(tmp_path.glob("*-fanout"))
    assert (run_dir / "results.md").read_text().count("| trio-naive |") == 1
    assert (run_dir / "chart.svg").read_text().startswith("<svg")


@pytest.mark.integration
def test_fanout_against_tandem_through_tandem_bench(tmp_path: Path) -> None:
    try:
        importlib.import_module("runtime.cli")
    except ImportError as exc:
        pytest.skip(f"Tandem's server is not importable yet: {exc}")
    # Through `tandem bench`, which hands its arguments to the generator unchanged.
    proc, doc = run_fanout("tandem", tmp_path, ("-m", "runtime.cli", "bench"))
    assert doc["meta"]["argv"].startswith("fanout --target tandem ")
    [result] = doc["results"]
    assert result["status"] in ("OK", "INVALID"), proc.stdout + proc.stderr
    [step] = result["steps"]
    assert step["delivered"] == step["expected"]


DATABASE_URL = os.environ.get(
    "TANDEM_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
REDIS_URL = "redis://127.0.0.1:6379"


def _need_tandem_and(*services: str) -> None:
    try:
        importlib.import_module("runtime.cli")
    except ImportError as exc:
        pytest.skip(f"Tandem's server is not importable yet: {exc}")
    if "postgres" in services:
        psycopg = pytest.importorskip("psycopg")
        try:
            psycopg.connect(DATABASE_URL, connect_timeout=2).close()
        except psycopg.Error as exc:
            pytest.skip(f"no PostgreSQL at {DATABASE_URL}: {exc}")
    if "redis" in services:
        redis = pytest.importorskip("redis")
        try:
            redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
        except redis.RedisError as exc:
            pytest.skip(f"no Redis at {REDIS_URL}: {exc}")


def run_loadgen(scenario: str, out: Path, *args: str) -> tuple[str, dict[str, Any]]:
    proc = subprocess.run(
        [sys.executable, "-m", "loadgen", scenario, *args, "--procs", "1", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    runs = list(out.glob(f"*-{scenario}/results.json"))
    assert len(runs) == 1, proc.stdout + proc.stderr
    return proc.stdout + proc.stderr, json.loads(runs[0].read_text())


@pytest.mark.integration
def test_comments_against_tandem_on_postgres(tmp_path: Path) -> None:
    _need_tandem_and("postgres")
    out, doc = run_loadgen(
        "comments", tmp_path, "--members", "4", "--comments", "3", "--rate", "3", "--drain", "10"
    )
    assert "Tandem-only" in out
    [result] = doc["results"]
    assert result["status"] in ("OK", "INVALID"), out
    [step] = result["steps"]
    assert step["published"] == 12 == step["acks"]
    assert step["delivered"] == step["expected"] == 12 * 3
    assert step["self_echoes_ignored"] == 12
    assert step["comment_kinds"]["thread"] == 4 and step["comment_errors"] == 0
    assert step["ack_p99_ms"] is not None
    # Timed from the first create to the last ack: 12 comments at 3/s per user take ~1 s.
    assert 0 < step["acked_per_second"] <= 12 / (2 / 3)
    assert result["database_schema"].endswith("(dropped)")


@pytest.mark.integration
def test_cluster_of_two_nodes_delivers_across_nodes(tmp_path: Path) -> None:
    _need_tandem_and("postgres", "redis")
    out, doc = run_loadgen(
        "cluster",
        tmp_path,
        "--nodes", "2", "--members", "6", "--rate", "10", "--duration", "2",
        "--baseline", "none", "--quiet",
    )  # fmt: skip
    [result] = doc["results"]
    assert result["target"] == "tandem-2nodes"
    assert result["status"] in ("OK", "INVALID"), out
    [step] = result["steps"]
    assert step["members_per_node"] == [3, 3] and step["publishers_per_node"] == [1, 1]
    assert step["delivered"] == step["expected"] == step["published"] * 6
    assert len(step["node_cpu_seconds"]) == 2


def test_tandem_bench_without_the_generator_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from runtime.cli import main

    monkeypatch.setitem(sys.modules, "loadgen.cli", None)  # as if loadgen were not installed
    assert main(["bench", "fanout", "--target", "tandem"]) == 2
    assert "pip install 'tandem[bench]'" in capsys.readouterr().err
