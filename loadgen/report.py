"""Result files: results.json, results.md (absolute figures + ratios to peers), chart.svg."""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

BASELINE = "websockets"
SINGLE_NODE = "tandem-1node"  # the cluster scenario's same-run baseline


def _rows(results: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [(r, s) for r in results for s in r.get("steps", [])]


def add_ratios(results: list[dict[str, Any]]) -> None:
    """Efficiency (deliveries per server CPU-second) relative to `websockets` at the same rate,
    and, for connection runs, server memory per connection relative to `websockets`;
    cluster runs: relative to one standalone node in the same run."""
    single = next((r for r in results if r["target"] == SINGLE_NODE), None)
    if single is not None:
        one = {s["rate"]: s.get("deliveries_per_server_cpu_second") for s in single["steps"]}
        for _r, s in _rows(results):
            mine, theirs = s.get("deliveries_per_server_cpu_second"), one.get(s["rate"])
            s["efficiency_vs_single_node"] = round(mine / theirs, 3) if mine and theirs else None
    base = next((r for r in results if r["target"] == BASELINE), None)
    if base is None:
        return
    base_steps = {s["rate"]: s for s in base.get("steps", [])}
    # A peer step that is not OK (mostly INVALID: the generator, not the peer, was the
    # limit) is no clean baseline; its highest OK rate in the same run is (--baseline-rate).
    clean = [s for s in base.get("steps", []) if s["status"] == "OK"]
    fallback = max(clean, key=lambda s: s["rate"]) if clean else None
    for r, s in _rows(results):
        b = base_steps.get(s["rate"])
        if r is not base and (b is None or b["status"] != "OK") and fallback is not None:
            b = fallback
            s["websockets_baseline_rate"] = fallback["rate"]
        mine = s.get("deliveries_per_server_cpu_second")
        theirs = b.get("deliveries_per_server_cpu_second") if b else None
        s["efficiency_vs_websockets"] = round(mine / theirs, 3) if mine and theirs else None
    bc = base.get("connect", {}).get("server_rss_per_connection_bytes")
    for r in results:
        c = r.get("connect", {})
        mine = c.get("server_rss_per_connection_bytes")
        c["rss_per_connection_vs_websockets"] = round(mine / bc, 3) if mine and bc else None


def _ratio_cell(step: dict[str, Any]) -> str:
    cell = _fmt(step.get("efficiency_vs_websockets"))
    at = step.get("websockets_baseline_rate")
    return f"{cell} (vs websockets @{_fmt(at)})" if at is not None else cell


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.3f}".rstrip("0").rstrip(".") if abs(v) < 100 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def markdown(meta: dict[str, Any], results: list[dict[str, Any]]) -> str:
    lines = [f"# {meta['scenario']} — {meta['started']}", ""]
    lines += [f"- {k}: `{v}`" for k, v in meta.items() if k not in ("scenario", "started")]
    lines.append("")
    skipped = [r for r in results if r.get("status") in ("UNAVAILABLE", "ERROR")]
    if meta["scenario"] == "connections":
        lines += [
            "| target | status | joined | ramp s | server RSS/conn B | TCP mem/conn B | "
            "idle server CPU % | RSS/conn x websockets |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in results:
            c = r.get("connect")
            if not c or r in skipped:
                continue
            lines.append(
                f"| {r['target']} | {r['status']} | {c['joined']}/{c['connections']} | "
                f"{_fmt(c['ramp_seconds'])} | {_fmt(c['server_rss_per_connection_bytes'])} | "
                f"{_fmt(c['tcp_mem_per_connection_bytes'])} | "
                f"{_fmt(c.get('idle_server_cpu_percent'))} | "
                f"{_fmt(c.get('rss_per_connection_vs_websockets'))} |"
            )
    else:
        lines += [
            f"Rate is {meta.get('rate_unit', 'events/s')}. Latency is publish → delivery, "
            "end to end, over every member.",
            "",
            "| target | rate | status | delivered / expected | p50 ms | p95 ms | p99 ms | max ms"
            " | server CPU % | deliveries per server CPU-s | x websockets | generator CPU % "
            "| other CPU % |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r, s in _rows(results):
            lines.append(
                f"| {r['target']} | {_fmt(s['rate'])} | {s['status']} | "
                f"{_fmt(s['delivered'])} / {_fmt(s['expected'])} | {_fmt(s['p50_ms'])} | "
                f"{_fmt(s['p95_ms'])} | {_fmt(s['p99_ms'])} | {_fmt(s['max_ms'])} | "
                f"{_fmt(s['server_cpu_percent'])} | "
                f"{_fmt(s['deliveries_per_server_cpu_second'])} | "
                f"{_ratio_cell(s)} | "
                f"{', '.join(_fmt(g) for g in s['generator_cpu_percent'])} | "
                f"{_fmt(s.get('other_cpu_percent'))} |"
            )
    lines += _comment_table(meta, results) + _cluster_table(meta, results)
    problems = [
        (r["target"], p) for r in results for s in r.get("steps", []) for p in s["problems"]
    ]
    problems += [(r["target"], r["reason"]) for r in results if r.get("reason")]
    problems += [
        (r["target"], f"@{s['rate']:g}: {w}")
        for r, s in _rows(results)
        for w in s.get("warnings", [])
    ]
    if problems:
        lines += ["", "## Problems", ""] + [f"- **{t}**: {p}" for t, p in problems]
    lines += [
        "",
        "Status: OK = every expected delivery and ack arrived; FAILED = any loss; "
        "INVALID = a generator process used > 90% of a core (generator-bound, not "
        "the server's figure); UNAVAILABLE = target cannot run here yet.",
        "",
    ]
    return "\n".join(lines)


def _comment_table(meta: dict[str, Any], results: list[dict[str, Any]]) -> list[str]:
    rows = [(r, s) for r, s in _rows(results) if "ack_p50_ms" in s]
    if meta["scenario"] != "comments":
        return []
    lines = [
        "",
        f"## Comments ({meta.get('tandem_only', 'Tandem-only')})",
        "",
        "Delivery latency is the creator's send → each *other* member's receipt of the "
        "`thread:created` / `comment:created` event (the creator's own copy is not counted); "
        "ack latency is send → the creator's `…:create:ok`. Comments are written to "
        "PostgreSQL before they are acknowledged.",
        "",
        "| target | comments | threads / comments / replies | offered comments/s | "
        "acked/s (first send → last ack) | ack p50 ms | "
        "ack p95 ms | ack p99 ms | ack max ms | mentions sent | mention notifications | "
        "mention p50 / p99 ms | refused |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r, s in rows:
        k = s["comment_kinds"]
        lines.append(
            f"| {r['target']} | {_fmt(s['published'])} | {_fmt(k.get('thread', 0))} / "
            f"{_fmt(k.get('comment', 0))} / {_fmt(k.get('reply', 0))} | "
            f"{_fmt(s['comments_per_second'])} | {_fmt(s.get('acked_per_second'))} | "
            f"{_fmt(s['ack_p50_ms'])} | "
            f"{_fmt(s['ack_p95_ms'])} | {_fmt(s['ack_p99_ms'])} | {_fmt(s['ack_max_ms'])} | "
            f"{_fmt(s['mentions_sent'])} | {_fmt(s['mention_notifications'])} | "
            f"{_fmt(s['mention_p50_ms'])} / {_fmt(s['mention_p99_ms'])} | "
            f"{_fmt(s['comment_errors'])} |"
        )
    lines += [
        "",
        "Mention notifications are informational (Tandem groups a thread's notifications; "
        "not a loss check).",
    ]
    return lines


def _cluster_table(meta: dict[str, Any], results: list[dict[str, Any]]) -> list[str]:
    if meta["scenario"] != "cluster":
        return []
    lines = [
        "",
        f"## Cluster ({meta.get('tandem_only', 'Tandem-only')})",
        "",
        "Server CPU is summed over every node's process group; per-node CPU is % of one core "
        "over publish + drain. Redis and PostgreSQL are not counted (they are in 'other CPU').",
        "",
        "| target | nodes | members per node | publishers per node | delivered / expected | "
        "p50 / p99 ms | deliveries per server CPU-s | x 1 node | per-node CPU % |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r, s in _rows(results):
        lines.append(
            f"| {r['target']} | {s.get('nodes', '-')} | "
            f"{', '.join(map(str, s.get('members_per_node', [])))} | "
            f"{', '.join(map(str, s.get('publishers_per_node', [])))} | "
            f"{_fmt(s['delivered'])} / {_fmt(s['expected'])} | {_fmt(s['p50_ms'])} / "
            f"{_fmt(s['p99_ms'])} | {_fmt(s['deliveries_per_server_cpu_second'])} | "
            f"{_fmt(s.get('efficiency_vs_single_node'))} | "
            f"{', '.join(_fmt(c) for c in s.get('node_cpu_percent', []))} |"
        )
    return lines


def _bars(
    title: str, items: list[tuple[str, float, str]], y0: int, width: int, log: bool = False
) -> tuple[str, int]:
    """One horizontal bar panel; returns SVG text and the height used."""
    label_w, bar_h, gap = 230, 18, 6
    top = y0 + 26
    maxv = max((v for _, v, _ in items), default=1.0) or 1.0
    out = [
        f'<text x="10" y="{y0 + 16}" font-size="14" font-weight="bold">{html.escape(title)}</text>'
    ]
    for i, (label, value, color) in enumerate(items):
        y = top + i * (bar_h + gap)
        share = math.log10(1 + value) / math.log10(1 + maxv) if log else value / maxv
        w = (width - label_w - 90) * share
        out.append(
            f'<text x="{label_w - 6}" y="{y + 13}" font-size="12" text-anchor="end">'
            f"{html.escape(label)}</text>"
        )
        out.append(f'<rect x="{label_w}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{color}"/>')
        out.append(
            f'<text x="{label_w + w + 4:.1f}" y="{y + 13}" font-size="12">{value:,.1f}</text>'
        )
    return "\n".join(out), 26 + len(items) * (bar_h + gap) + 14


COLORS = {"OK": "#3b7dd8", "INVALID": "#d8a23b", "FAILED": "#d83b3b"}


def svg(meta: dict[str, Any], results: list[dict[str, Any]]) -> str:
    width = 760
    panels: list[tuple[str, list[tuple[str, float, str]], bool]] = []
    if meta["scenario"] == "connections":
        items = [
            (
                r["target"],
                float(r["connect"]["server_rss_per_connection_bytes"]),
                COLORS.get(r["status"], "#888"),
            )
            for r in results
            if r.get("connect")
        ]
        panels.append(("server RSS per connection (bytes)", items, False))
    else:
        rows = _rows(results)
        eff = [
            (
                f"{r['target']} @{s['rate']:g}",
                float(s["deliveries_per_server_cpu_second"] or 0),
                COLORS.get(s["status"], "#888"),
            )
            for r, s in rows
        ]
        p99 = [
            (
                f"{r['target']} @{s['rate']:g}",
                float(s["p99_ms"] or 0),
                COLORS.get(s["status"], "#888"),
            )
            for r, s in rows
        ]
        panels.append(("deliveries per server CPU-second (higher is better)", eff, False))
        panels.append(("p99 delivery latency, ms (lower is better; log scale)", p99, True))
    body: list[str] = []
    y = 30
    for title, items, log in panels:
        text, used = _bars(title, items, y, width, log)
        body.append(text)
        y += used
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{y + 10}" '
        f'font-family="sans-serif">\n<rect width="100%" height="100%" fill="white"/>\n'
        f'<text x="10" y="20" font-size="16">Tandem loadgen: {html.escape(meta["scenario"])}'
        f" ({html.escape(meta['started'])}) — blue OK, amber INVALID, red FAILED</text>"
    )
    return head + "\n" + "\n".join(body) + "\n</svg>\n"


def write_all(out_dir: Path, meta: dict[str, Any], results: list[dict[str, Any]]) -> None:
    add_ratios(results)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(
        json.dumps({"meta": meta, "results": results}, indent=2, default=str) + "\n"
    )
    (out_dir / "results.md").write_text(markdown(meta, results))
    (out_dir / "chart.svg").write_text(svg(meta, results))
