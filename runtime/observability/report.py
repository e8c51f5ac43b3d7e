"""``tandem report``: latency percentiles over an interval, against the SLA table.

Reads ``/metrics`` twice, ``interval`` seconds apart, and computes p50/p95/p99
of every latency histogram from the bucket counts observed in between (the
same estimate as PromQL's ``histogram_quantile``: linear within a bucket;
the SLA thresholds are bucket bounds, so "within SLA" is exact).
"""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Callable, Iterable

import attrs
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.table import Table

from runtime import metrics

#: The histograms reported, and how their label names an operation.
HISTOGRAMS = {
    "tandem_operation_seconds": "operation",
    "tandem_database_call_seconds": None,  # -> "database"
    "tandem_redis_call_seconds": None,  # -> "redis"
    "tandem_http_request_seconds": "route",
}

Buckets = dict[str, dict[float, float]]  # operation -> {le: cumulative count}


@attrs.frozen
class Row:
    operation: str
    samples: int
    p50: float | None
    p95: float | None
    p99: float | None
    target: float | None  # SLA p99 target, seconds
    what: str

    @property
    def verdict(self) -> str:
        if self.target is None:
            return "-"
        if self.p99 is None:
            return "no traffic"
        return "ok" if self.p99 <= self.target else "OVER"


def parse_duration(text: str) -> float:
    """``500ms``, ``5s``, ``10m``, ``1h`` or plain seconds."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(ms|s|m|h)?\s*", text)
    if match is None:
        raise ValueError(f"not a duration: {text!r} (use e.g. 5s, 10m, 1h)")
    value = float(match.group(1))
    return value * {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[match.group(2) or "s"]


def histograms(text: str) -> Buckets:
    """Cumulative bucket counts of the reported histograms in a /metrics text."""
    out: Buckets = {}
    for family in text_string_to_metric_families(text):
        if family.name not in HISTOGRAMS:
            continue
        label = HISTOGRAMS[family.name]
        default = family.name.removeprefix("tandem_").split("_")[0]
        for sample in family.samples:
            if not sample.name.endswith("_bucket"):
                continue
            op = sample.labels.get(label, default) if label else default
            if label == "route":
                op = "http " + op
            out.setdefault(op, {})[float(sample.labels["le"])] = sample.value
    return out


def rows(before: Buckets, after: Buckets) -> list[Row]:
    """Percentiles of what was observed between two scrapes, SLA operations first."""
    ops = list(metrics.SLA) + sorted(op for op in after if op not in metrics.SLA)
    out = []
    for op in ops:
        now = after.get(op, {})
        then = before.get(op, {})
        les = sorted(now)
        cumulative = [now[le] - then.get(le, 0.0) for le in les]
        counts = [c - (cumulative[i - 1] if i else 0.0) for i, c in enumerate(cumulative)]
        bounds = [le for le in les if le != float("inf")]
        q = {p: metrics.quantile(p, bounds, counts) for p in (0.5, 0.95, 0.99)}
        what, target = metrics.SLA.get(op, ("", None))
        out.append(Row(op, int(sum(counts)), q[0.5], q[0.95], q[0.99], target, what))
    return out


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.1f}"


def table(report: Iterable[Row], title: str) -> Table:
    t = Table(title=title)
    for name in ("operation", "samples", "p50 ms", "p95 ms", "p99 ms", "SLA p99 ms", "verdict"):
        t.add_column(name, justify="left" if name == "operation" else "right")
    for row in report:
        style = "red" if row.verdict == "OVER" else None
        target = "-" if row.target is None else f"{row.target * 1000:g}"
        t.add_row(
            row.operation + (f" ({row.what})" if row.what else ""),
            str(row.samples),
            _ms(row.p50),
            _ms(row.p95),
            _ms(row.p99),
            target,
            row.verdict,
            style=style,
        )
    return t


def markdown(report: Iterable[Row], title: str) -> str:
    lines = [
        f"# {title}",
        "",
        "| operation | samples | p50 ms | p95 ms | p99 ms | SLA p99 ms | verdict |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for row in report:
        target = "-" if row.target is None else f"{row.target * 1000:g}"
        name = row.operation + (f" ({row.what})" if row.what else "")
        lines.append(
            f"| {name} | {row.samples} | {_ms(row.p50)} | {_ms(row.p95)} | {_ms(row.p99)} "
            f"| {target} | {row.verdict} |"
        )
    return "\n".join(lines) + "\n"


def fetch(url: str, timeout: float = 10.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        body: bytes = response.read()
    return body.decode()


def run_report(
    base_url: str,
    interval: float,
    *,
    console: Console,
    markdown_path: str | None = None,
    get: Callable[[str], str] = fetch,
    sleep: Callable[[float], None] | None = None,
) -> list[Row]:
    """Scrape, wait ``interval``, scrape again; print the table (and write Markdown)."""
    import time

    url = base_url.rstrip("/") + "/metrics"
    before = histograms(get(url))
    (sleep or time.sleep)(interval)
    report = rows(before, histograms(get(url)))
    title = f"Tandem latency over {interval:g} s at {base_url}"
    console.print(table(report, title))
    if markdown_path:
        with open(markdown_path, "w") as f:
            f.write(markdown(report, title))
    return report
