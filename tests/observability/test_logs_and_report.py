"""Structured log lines, the report's percentiles, and the terminal views."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import orjson
import trio
import trio.testing
from rich.console import Console

from runtime import metrics
from runtime.observability import report, status_view
from runtime.observability.logs import (
    ContextFilter,
    JsonFormatter,
    TextFormatter,
    bind_actor,
    bind_connection,
)
from runtime.testing import open_test_server


def _record(message: str, *args: object) -> logging.LogRecord:
    record = logging.LogRecord("tandem.test", logging.WARNING, __file__, 1, message, args, None)
    ContextFilter().filter(record)
    return record


async def test_json_lines_carry_context_and_no_secrets() -> None:
    bind_connection("n1-7", "alice")
    line = JsonFormatter().format(_record("auth with %s", "Bearer eyJhbGciOi.eyJzdWIiOi.sig"))
    event = orjson.loads(line)
    assert event["conn"] == "n1-7" and event["user"] == "alice" and "session" not in event
    assert event["level"] == "warning" and event["logger"] == "tandem.test"
    assert "eyJ" not in event["msg"]

    async def actor() -> None:
        bind_actor("doc-1")
        event = orjson.loads(JsonFormatter().format(_record("write failed")))
        assert event["session"] == "doc-1" and "conn" not in event

    async with trio.open_nursery() as nursery:
        nursery.start_soon(actor)


async def test_text_lines_are_readable() -> None:
    bind_connection("n1-8", "bob")
    line = TextFormatter().format(_record("slow consumer"))
    assert "WARNING" in line and line.endswith("slow consumer  [conn=n1-8 user=bob]")


def _metrics_text(observations: list[float]) -> str:
    histogram = metrics.Histogram(metrics.LATENCY_BUCKETS)
    for seconds in observations:
        histogram.observe(seconds)
    names = [repr(b) for b in metrics.LATENCY_BUCKETS] + ["+Inf"]
    lines = ["# TYPE tandem_operation_seconds histogram"]
    for le, n in zip(names, histogram.cumulative(), strict=True):
        lines.append(f'tandem_operation_seconds_bucket{{operation="publish",le="{le}"}} {n}')
    lines.append(f'tandem_operation_seconds_count{{operation="publish"}} {histogram.count}')
    lines.append(f'tandem_operation_seconds_sum{{operation="publish"}} {histogram.sum}')
    return "\n".join(lines) + "\n"


def test_report_percentiles_between_two_scrapes(tmp_path: Path) -> None:
    before = _metrics_text([0.5] * 10)  # before the interval: not counted
    after = _metrics_text([0.5] * 10 + [0.004] * 98 + [0.15] * 2)
    texts = iter([before, after])
    out = io.StringIO()
    rows = report.run_report(
        "http://node:8080",
        5.0,
        console=Console(file=out, width=140),
        markdown_path=str(tmp_path / "r.md"),
        get=lambda url: next(texts),
        sleep=lambda s: None,
    )
    publish = next(r for r in rows if r.operation == "publish")
    assert publish.samples == 100
    assert publish.p50 is not None and 0.0025 < publish.p50 <= 0.005
    assert publish.p99 is not None and 0.1 < publish.p99 <= 0.15
    assert publish.verdict == "OVER"
    assert next(r for r in rows if r.operation == "join").verdict == "no traffic"
    assert "publish" in out.getvalue() and "OVER" in out.getvalue()
    markdown = (tmp_path / "r.md").read_text()
    assert "| publish (WebSocket delivery) | 100 |" in markdown


def test_durations() -> None:
    assert [report.parse_duration(t) for t in ("5s", "10m", "1h", "250ms", "3")] == [
        5.0,
        600.0,
        3600.0,
        0.25,
        3.0,
    ]


async def test_status_view_shows_the_tree(autojump_clock: trio.testing.MockClock) -> None:
    async with open_test_server() as server:
        status, body = await server.http("GET", "/status")
    assert status == 200
    out = io.StringIO()
    status_view.render_status(body, Console(file=out, width=140))
    text = out.getvalue()
    assert "supervision tree" in text and "sessions" in text and "presence" in text
    assert "no active alerts" in text
