"""Alerts: thresholds checked once per window; a warning line and a gauge while unhealthy.

Each evaluation looks at what happened since the previous one (one
``alert_interval`` window): the p99 of each operation's latency from the
histogram buckets observed in the window, the deepest mailbox now, and how
many restarts the supervisors made in the window. An alert is raised (one
``WARNING`` log line, ``tandem_alert_active{alert=...} 1``) when its check
fails and cleared (one ``INFO`` line, gauge 0) at the first healthy window.
A window with no observation of an operation is healthy for that operation.

Defaults come from the SLA table (:data:`runtime.metrics.SLA`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import attrs

from runtime import metrics
from runtime.metrics import Histogram

logger = logging.getLogger("tandem.alerts")


@attrs.frozen
class AlertThresholds:
    publish_p99: float = metrics.SLA["publish"][1]
    session_p99: float = metrics.SLA["join"][1]
    presence_p99: float = metrics.SLA["presence"][1]
    comment_p99: float = metrics.SLA["comment_create"][1]
    database_p99: float = metrics.SLA["database"][1]
    redis_p99: float = metrics.SLA["redis"][1]
    mailbox_depth: int = 512  # deepest single mailbox, messages
    restarts: int = 10  # supervisor restarts within one window


@attrs.frozen
class AlertChange:
    alert: str
    active: bool
    detail: str


class _LatencyCheck:
    def __init__(self, name: str, histograms: Sequence[Histogram], threshold: float) -> None:
        self.name = name
        self.histograms = tuple(histograms)
        self.threshold = threshold
        self.last = self._counts()

    def _counts(self) -> list[int]:
        total = [0] * (len(metrics.LATENCY_BUCKETS) + 1)
        for histogram in self.histograms:
            for i, n in enumerate(histogram.counts):
                total[i] += n
        return total

    def window(self) -> tuple[float | None, int]:
        """p99 and sample count since the previous call."""
        now = self._counts()
        delta = [a - b for a, b in zip(now, self.last, strict=True)]
        self.last = now
        return metrics.quantile(0.99, metrics.LATENCY_BUCKETS, delta), sum(delta)


class AlertEvaluator:
    """Decides which alerts are active; the caller supplies the node-level readings."""

    def __init__(self, thresholds: AlertThresholds, restarts_total: int = 0) -> None:
        self.thresholds = thresholds
        self._latency = [
            _LatencyCheck("publish_p99", [metrics.PUBLISH], thresholds.publish_p99),
            _LatencyCheck("session_p99", [metrics.JOIN, metrics.LEAVE], thresholds.session_p99),
            _LatencyCheck("presence_p99", [metrics.PRESENCE], thresholds.presence_p99),
            _LatencyCheck("comment_p99", [metrics.COMMENT_CREATE], thresholds.comment_p99),
            _LatencyCheck("database_p99", [metrics.DATABASE], thresholds.database_p99),
            _LatencyCheck("redis_p99", [metrics.REDIS], thresholds.redis_p99),
        ]
        self._restarts_last = restarts_total
        self.active: dict[str, str] = {}  # alert -> why, while active

    @property
    def names(self) -> list[str]:
        return [check.name for check in self._latency] + ["mailbox_depth", "restart_intensity"]

    def evaluate(self, *, mailbox_depth: int, restarts_total: int) -> list[AlertChange]:
        """One window's verdicts; logs and returns the alerts that changed state."""
        failing: dict[str, str] = {}
        for check in self._latency:
            p99, samples = check.window()
            if p99 is not None and p99 > check.threshold:
                failing[check.name] = (
                    f"p99 {p99 * 1000:.1f} ms > {check.threshold * 1000:g} ms ({samples} samples)"
                )
        if mailbox_depth > self.thresholds.mailbox_depth:
            failing["mailbox_depth"] = (
                f"a mailbox holds {mailbox_depth} messages > {self.thresholds.mailbox_depth}"
            )
        restarts = restarts_total - self._restarts_last
        self._restarts_last = restarts_total
        if restarts > self.thresholds.restarts:
            failing["restart_intensity"] = (
                f"{restarts} restarts in the window > {self.thresholds.restarts}"
            )
        changes = []
        for name in self.names:
            if name in failing and name not in self.active:
                changes.append(AlertChange(name, True, failing[name]))
                logger.warning("alert %s raised: %s", name, failing[name], extra={"alert": name})
            elif name in self.active and name not in failing:
                changes.append(AlertChange(name, False, self.active[name]))
                logger.info("alert %s cleared", name, extra={"alert": name})
        self.active = failing
        return changes
