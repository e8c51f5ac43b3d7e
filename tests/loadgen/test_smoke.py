"""Smoke test: a tiny fanout through the real generator against a real peer on loopback.

No timing assertions: only that every event arrived and the result files are well formed.
"""

from __future__ import annotations

import importlib
import json
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


def run_fanout(target: str, out: Path) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "loadgen",
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
def test_fanout_against_tandem(tmp_path: Path) -> None:
    try:
        importlib.import_module("runtime.cli")
    except ImportError as exc:
        pytest.skip(f"Tandem's server is not importable yet: {exc}")
    proc, doc = run_fanout("tandem", tmp_path)
    [result] = doc["results"]
    assert result["status"] in ("OK", "INVALID"), proc.stdout + proc.stderr
    [step] = result["steps"]
    assert step["delivered"] == step["expected"]
