"""Operators' view of a node: metrics exposition, alerts, structured logs, reports.

* :mod:`runtime.metrics` — the counters and histograms the hot path updates.
* :mod:`.observer` — per node: scrape-time gauges, scheduler lag, alert evaluation.
* :mod:`.alerts` — thresholds against the SLA table, raised and cleared with hysteresis-free
  windows.
* :mod:`.logs` — JSON or human-readable log lines with connection/session/user context.
* :mod:`.report` and :mod:`.status_view` — ``tandem report`` and ``tandem status``.
"""
