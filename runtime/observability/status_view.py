"""``tandem status``: the /status JSON as terminal tables (supervision tree first)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table
from rich.tree import Tree


def _supervisor_tree(tree: Tree, supervisor: dict[str, Any]) -> None:
    states = ", ".join(f"{n} {s}" for s, n in sorted(supervisor.get("childStates", {}).items()))
    node = tree.add(
        f"[bold]{supervisor['name']}[/] {supervisor.get('strategy', '')} "
        f"max {supervisor.get('maxRestarts')}/{supervisor.get('period')}s  "
        f"restarts {supervisor.get('restarts', 0)}  children {supervisor.get('childCount', 0)}"
        + (f" ({states})" if states else "")
    )
    for failure in supervisor.get("recentFailures", [])[-5:]:
        node.add(f"[red]failed[/] {failure['name']}: {failure['failure']}")
    for child in supervisor.get("children", []):
        if "supervisor" in child:
            _supervisor_tree(node, child["supervisor"])
        elif child.get("restarts") or child.get("mailbox") or child.get("lastFailure"):
            extra = f"  last failure: {child['lastFailure']}" if child.get("lastFailure") else ""
            node.add(
                f"{child['name']} {child['state']} restarts {child['restarts']} "
                f"mailbox {child.get('mailbox', '-')}{extra}"
            )


def render_status(status: dict[str, Any], console: Console) -> None:
    overview = Table(title=f"Tandem node {status.get('node', '?')}", show_header=False)
    conns = status.get("connections", {})
    for key, value in (
        ("uptime", f"{status.get('uptime', 0)} s"),
        ("accepting", status.get("accepting")),
        ("connections open", conns.get("open")),
        ("connections opened", conns.get("opened")),
        ("live sessions", status.get("sessions")),
        ("scheduler lag (last / max)", _lag(status.get("schedulerLag"))),
    ):
        overview.add_row(key, str(value))
    console.print(overview)
    alerts = status.get("alerts") or {}
    if alerts:
        table = Table(title="Active alerts", title_style="bold red")
        table.add_column("alert")
        table.add_column("why")
        for name, why in alerts.items():
            table.add_row(name, why, style="red")
        console.print(table)
    else:
        console.print("[green]no active alerts[/]")
    tree = Tree("supervision tree")
    if "actors" in status:
        _supervisor_tree(tree, status["actors"])
    console.print(tree)
    mailboxes = status.get("mailboxes") or []
    if mailboxes:
        table = Table(title="Slowest mailboxes")
        for name in ("actor", "kind", "depth"):
            table.add_column(name, justify="right" if name == "depth" else "left")
        for m in mailboxes:
            table.add_row(m["actor"], m["kind"], str(m["depth"]))
        console.print(table)
    slowest = conns.get("slowest") or []
    if slowest:
        table = Table(title="Slowest connections (queued bytes)")
        for name in ("id", "userId", "peer", "sessions", "queuedBytes"):
            table.add_column(name)
        for c in slowest:
            table.add_row(
                *(str(c.get(k, "")) for k in ("id", "userId", "peer", "sessions", "queuedBytes"))
            )
        console.print(table)


def _lag(lag: dict[str, float] | None) -> str:
    if not lag:
        return "-"
    return f"{lag['last'] * 1000:.1f} ms / {lag['max'] * 1000:.1f} ms"
