"""One node's observability: /metrics, scheduler lag, alert evaluation, /status extras.

:class:`Observer` is made by the node and runs one task in the node's nursery.
Every ``lag_tick`` seconds it sleeps and records how late it woke (Trio
scheduler lag: a blocked event loop shows here first); every
``alert_interval`` seconds it evaluates the alerts.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import trio
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from runtime import metrics
from runtime.http import HttpRequest, HttpResponse
from runtime.observability.alerts import AlertEvaluator, AlertThresholds
from runtime.supervisor import Supervisor

if TYPE_CHECKING:
    from runtime.node import TandemNode

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Observer:
    def __init__(self, node: TandemNode, *, lag_tick: float = 0.5) -> None:
        settings = node.settings
        self.node = node
        self.lag_tick = lag_tick
        self.alert_interval = settings.alert_interval
        self.alerts = AlertEvaluator(
            AlertThresholds(
                publish_p99=settings.alert_publish_p99,
                session_p99=settings.alert_session_p99,
                presence_p99=settings.alert_presence_p99,
                database_p99=settings.alert_database_p99,
                redis_p99=settings.alert_redis_p99,
                mailbox_depth=settings.alert_mailbox_depth,
                restarts=settings.alert_restarts,
            )
        )
        self.last_lag = 0.0
        self.max_lag = 0.0
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(metrics.EXPORTER)
        self.registry.register(ProcessCollector(registry=None))
        self.registry.register(NodeCollector(self))

    # -- the periodic task ---------------------------------------------------------

    async def run(self) -> None:
        """Measure scheduler lag each tick and evaluate alerts each interval, until cancelled."""
        self.alerts = AlertEvaluator(self.alerts.thresholds, self.restarts_total())
        next_alerts = trio.current_time() + self.alert_interval
        while True:
            asked = trio.current_time() + self.lag_tick
            await trio.sleep_until(asked)
            now = trio.current_time()
            lag = max(0.0, now - asked)
            metrics.SCHEDULER_LAG.observe(lag)
            self.last_lag = lag
            self.max_lag = max(self.max_lag, lag)
            if now >= next_alerts:
                self.evaluate_alerts()
                next_alerts = now + self.alert_interval

    def evaluate_alerts(self) -> None:
        deepest = max((depth for _, _, depth in self.mailboxes()), default=0)
        self.alerts.evaluate(mailbox_depth=deepest, restarts_total=self.restarts_total())

    # -- readings --------------------------------------------------------------------

    def supervisors(self) -> Iterator[Supervisor]:
        stack = [self.node.root]
        while stack:
            supervisor = stack.pop()
            yield supervisor
            stack.extend(c.supervisor for c in supervisor.children() if c.supervisor is not None)

    def restarts_total(self) -> int:
        return sum(s.total_restarts for s in self.supervisors())

    def mailboxes(self) -> Iterator[tuple[str, str, int]]:
        """(actor key, kind, mailbox depth) of every live actor."""
        for supervisor in self.supervisors():
            for child in supervisor.children():
                if child.depth is not None:
                    yield child.name, child.kind, child.depth()

    def slowest_mailboxes(self, limit: int = 10) -> list[dict[str, Any]]:
        deepest = sorted(self.mailboxes(), key=lambda m: m[2], reverse=True)[:limit]
        return [
            {"actor": key, "kind": kind, "depth": depth} for key, kind, depth in deepest if depth
        ]

    def status(self) -> dict[str, Any]:
        """The observability part of /status."""
        return {
            "alerts": dict(self.alerts.active),
            "mailboxes": self.slowest_mailboxes(),
            "schedulerLag": {"last": round(self.last_lag, 6), "max": round(self.max_lag, 6)},
        }

    # -- HTTP --------------------------------------------------------------------------

    def render(self) -> bytes:
        return generate_latest(self.registry)

    async def metrics_endpoint(self, request: HttpRequest) -> HttpResponse:
        return HttpResponse(200, self.render(), content_type=PROMETHEUS_CONTENT_TYPE)


class NodeCollector(Collector):
    """Values read from the node at scrape time: gauges and per-supervisor counters."""

    def __init__(self, observer: Observer) -> None:
        self._observer = observer

    def collect(self) -> Iterator[Metric]:
        observer = self._observer
        node = observer.node
        yield GaugeMetricFamily(
            "tandem_connections_open", "WebSocket connections open now", value=len(node.connections)
        )
        yield GaugeMetricFamily(
            "tandem_uptime_seconds",
            "seconds since the node started",
            value=max(0.0, trio.current_time() - node.started_at) if node.started_at else 0.0,
        )
        actors = GaugeMetricFamily("tandem_actors", "live actors by kind", labels=["kind"])
        depth = GaugeMetricFamily(
            "tandem_mailbox_depth", "messages queued in mailboxes, summed by kind", labels=["kind"]
        )
        deepest = GaugeMetricFamily(
            "tandem_mailbox_depth_max", "deepest single mailbox by kind", labels=["kind"]
        )
        by_kind: dict[str, list[int]] = {"session": [], "presence": []}
        for _, kind, n in observer.mailboxes():
            by_kind.setdefault(kind, []).append(n)
        for kind, depths in by_kind.items():
            actors.add_metric([kind], len(depths))
            depth.add_metric([kind], sum(depths))
            deepest.add_metric([kind], max(depths, default=0))
        yield actors
        yield depth
        yield deepest
        restarts = CounterMetricFamily(
            "tandem_supervisor_restarts", "restarts made by each supervisor", labels=["supervisor"]
        )
        for supervisor in observer.supervisors():
            restarts.add_metric([supervisor.name], supervisor.total_restarts)
        yield restarts
        alerts = GaugeMetricFamily(
            "tandem_alert_active", "1 while an alert's threshold is crossed", labels=["alert"]
        )
        for name in observer.alerts.names:
            alerts.add_metric([name], 1.0 if name in observer.alerts.active else 0.0)
        yield alerts
        yield GaugeMetricFamily(
            "tandem_scheduler_lag_max_seconds",
            "largest scheduler lag seen since the node started",
            value=observer.max_lag,
        )
