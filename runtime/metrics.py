"""Process-wide metrics: what the hot path calls, and how /metrics exposes it.

The hot path (a publish, a fan-out to 1,000 members, every socket write) must
not pay for observability. ``prometheus_client``'s own counters take a lock on
every ``inc`` (about 0.4-0.7 us) and a histogram ``observe`` costs about
1.2 us; a node is one Trio thread, so the values here are plain attributes
(``inc`` about 0.08 us, ``observe`` about 0.25 us) and ``prometheus_client``
is used only at scrape time, to write the text format (see :class:`_Exporter`).

Rules for callers:

* Labelled children are bound once, at import or when a route is registered —
  never per call — and every label set is bounded (operation names, route
  patterns, close codes, actor kinds; never a session or a user).
* Durations are measured with ``trio.current_time()`` (so a ``MockClock`` test
  sees virtual time) and observed in seconds.
* Call from the Trio thread only: nothing here is locked.

Node-level values (open connections, mailbox depth, supervisor restarts,
alerts) are read from the node when scraped, by
``runtime.observability.observer.NodeCollector``.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence
from typing import Any
from weakref import WeakSet

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from runtime.protocol.errors import CloseCode

# -- primitives ----------------------------------------------------------------------


class Counter:
    """A monotonically increasing number (no lock: Trio thread only).

    The per-member send path adds to ``value`` directly: there, the call to ``inc``
    was a measurable share of the whole fan-out (change 32 in docs/performance.md).
    """

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount


class Histogram:
    """Cumulative-at-export histogram: ``counts[i]`` holds observations in bucket ``i`` only."""

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[int]:
        out, running = [], 0
        for n in self.counts:
            running += n
            out.append(running)
        return out

    def snapshot(self) -> tuple[int, ...]:
        """Per-bucket counts (not cumulative), for deltas between two moments."""
        return tuple(self.counts)


class _Family:
    def __init__(self, name: str, help: str, labels: Sequence[str]) -> None:
        self.name = name
        self.help = help
        self.labels = tuple(labels)
        _FAMILIES.append(self)

    def collect(self) -> Metric:
        raise NotImplementedError


class CounterFamily(_Family):
    def __init__(self, name: str, help: str, labels: Sequence[str] = ()) -> None:
        super().__init__(name, help, labels)
        self.children: dict[tuple[str, ...], Counter] = {}
        if not self.labels:
            self.children[()] = Counter()

    def bind(self, *values: str) -> Counter:
        """The child for ``values``; call at import or registration time, not per event."""
        child = self.children.get(values)
        if child is None:
            child = self.children[values] = Counter()
        return child

    def collect(self) -> Metric:
        family = CounterMetricFamily(self.name, self.help, labels=self.labels)
        for values, child in self.children.items():
            family.add_metric(list(values), child.value)
        return family


class HistogramFamily(_Family):
    def __init__(
        self, name: str, help: str, buckets: Sequence[float], labels: Sequence[str] = ()
    ) -> None:
        super().__init__(name, help, labels)
        self.buckets = tuple(buckets)
        self.children: dict[tuple[str, ...], Histogram] = {}
        if not self.labels:
            self.children[()] = Histogram(self.buckets)

    def bind(self, *values: str) -> Histogram:
        child = self.children.get(values)
        if child is None:
            child = self.children[values] = Histogram(self.buckets)
        return child

    def collect(self) -> Metric:
        family = HistogramMetricFamily(self.name, self.help, labels=self.labels)
        names = [_le(b) for b in self.buckets] + ["+Inf"]
        for values, child in self.children.items():
            family.add_metric(
                list(values), list(zip(names, child.cumulative(), strict=True)), child.sum
            )
        return family


def _le(bound: float) -> str:
    return repr(float(bound))


_FAMILIES: list[_Family] = []

# -- buckets ---------------------------------------------------------------------------

#: Latency buckets (seconds). Every SLA threshold is a bucket bound, so "over the
#: SLA" is exact, not interpolated.
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    10.0,
)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

# -- the metrics -----------------------------------------------------------------------

#: Protocol operations. ``publish`` is publish-to-delivery (enqueued until the batch
#: frame was handed to every member's outbox); ``join``/``leave`` are enqueued until
#: answered; ``presence`` is posted until applied (coalescing and rate limit included).
OPERATIONS = ("join", "leave", "publish", "presence", "comment_create", "notification")

operation_seconds = HistogramFamily(
    "tandem_operation_seconds",
    "Latency of protocol operations, from the client request reaching the node",
    LATENCY_BUCKETS,
    ["operation"],
)
JOIN = operation_seconds.bind("join")
LEAVE = operation_seconds.bind("leave")
PUBLISH = operation_seconds.bind("publish")
PRESENCE = operation_seconds.bind("presence")
COMMENT_CREATE = operation_seconds.bind("comment_create")
NOTIFICATION = operation_seconds.bind("notification")

http_request_seconds = HistogramFamily(
    "tandem_http_request_seconds",
    "HTTP request handling time by method and route pattern",
    LATENCY_BUCKETS,
    ["route"],
)


def http_route(pattern: str) -> Histogram:
    """The latency histogram of one route pattern; bind it when the route is added."""
    return http_request_seconds.bind(pattern)


connections_opened = CounterFamily(
    "tandem_connections_opened_total", "WebSocket connections accepted"
)
CONNECTIONS_OPENED = connections_opened.bind()
connections_closed = CounterFamily(
    "tandem_connections_closed_total", "WebSocket connections ended, by close code", ["code"]
)
_CLOSED: dict[int, Counter] = {
    int(code): connections_closed.bind(str(int(code)))
    for code in (1000, 1001, 1005, 1006, 1008, 1009, 1011, *CloseCode)
}
_CLOSED_OTHER = connections_closed.bind("other")


def connection_closed(code: int | None) -> None:
    """Count a closed connection; no close code (the socket just died) counts as 1006."""
    _CLOSED.get(1006 if code is None else code, _CLOSED_OTHER).inc()


MESSAGES_IN = CounterFamily(
    "tandem_messages_in_total", "WebSocket messages received from clients"
).bind()
BYTES_IN = CounterFamily("tandem_bytes_in_total", "bytes read from client sockets").bind()
MESSAGES_OUT = CounterFamily(
    "tandem_messages_out_total", "WebSocket frames queued to clients (a frame may hold a batch)"
).bind()
BYTES_OUT = CounterFamily("tandem_bytes_out_total", "bytes handed to client sockets").bind()

FRAMES_FLUSHED = CounterFamily(
    "tandem_frames_flushed_total", "batch frames built by session actors"
).bind()
EVENTS_PER_FRAME = HistogramFamily(
    "tandem_frame_messages", "messages (events and presence) per flushed batch frame", SIZE_BUCKETS
).bind()
FANOUT = CounterFamily(
    "tandem_fanout_deliveries_total", "batch frames handed to member outboxes"
).bind()

actor_failures = CounterFamily(
    "tandem_actor_failures_total", "supervised children that crashed, by kind", ["kind"]
)
for _kind in ("session", "presence", "supervisor"):
    actor_failures.bind(_kind)

PRESENCE_UNREACHABLE = CounterFamily(
    "tandem_presence_unreachable_total",
    "times a session actor lost its presence actor (could not spawn or post to it); "
    "the session goes on and re-syncs presence when it can",
).bind()

SCHEDULER_LAG = HistogramFamily(
    "tandem_scheduler_lag_seconds",
    "how late a periodic task woke up (Trio scheduler lag)",
    (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
).bind()

DATABASE = HistogramFamily(
    "tandem_database_call_seconds", "DatabaseGateway call latency", LATENCY_BUCKETS
).bind()
REDIS = HistogramFamily("tandem_redis_call_seconds", "Redis call latency", LATENCY_BUCKETS).bind()

#: Live database gateways, for pool gauges at scrape time (``DatabaseGateway.health()``).
DATABASE_POOLS: WeakSet[Any] = WeakSet()

# -- the SLA table -----------------------------------------------------------------------

#: p99 targets in seconds: (metric, label value) -> (what, target).
SLA: dict[str, tuple[str, float]] = {
    "publish": ("WebSocket delivery", 0.100),
    "join": ("session operations", 0.200),
    "leave": ("session operations", 0.200),
    "comment_create": ("comment creation", 0.300),
    "presence": ("presence updates", 0.050),
    "database": ("database queries", 0.100),
    "redis": ("Redis operations", 0.010),
}


def quantile(q: float, bounds: Sequence[float], counts: Sequence[float]) -> float | None:
    """Estimate quantile ``q`` from per-bucket (non-cumulative) ``counts``, like PromQL's
    ``histogram_quantile``: linear within the bucket; the +Inf bucket answers its lower bound.
    None when there is no observation."""
    total = sum(counts)
    if total <= 0:
        return None
    rank = q * total
    running = 0.0
    for i, n in enumerate(counts):
        if n and running + n >= rank:
            if i >= len(bounds):
                return float(bounds[-1]) if bounds else None
            lower = 0.0 if i == 0 else float(bounds[i - 1])
            return lower + (float(bounds[i]) - lower) * ((rank - running) / n)
        running += n
    return float(bounds[-1]) if bounds else None


# -- export ------------------------------------------------------------------------------


class _Exporter(Collector):
    """Hands the plain-attribute metrics to ``prometheus_client`` at scrape time."""

    def collect(self) -> Iterator[Metric]:
        for family in _FAMILIES:
            yield family.collect()
        yield from _database_pools()

    def describe(self) -> Iterable[Metric]:
        return []  # collected on demand; names never clash within a node's registry


def _database_pools() -> Iterator[Metric]:
    gauges = GaugeMetricFamily(
        "tandem_database_pool_connections",
        "database pool connections by state (summed over gateways)",
        labels=["state"],
    )
    waiting = GaugeMetricFamily(
        "tandem_database_pool_waiting", "requests waiting for a database connection"
    )
    in_use = idle = size = wait = 0
    for gateway in list(DATABASE_POOLS):
        health = gateway.health()
        in_use += health.in_use
        idle += health.pool_size - health.in_use
        size += health.max_size
        wait += health.waiting
    gauges.add_metric(["in_use"], in_use)
    gauges.add_metric(["idle"], idle)
    gauges.add_metric(["max"], size)
    waiting.add_metric([], wait)
    yield gauges
    yield waiting


EXPORTER = _Exporter()
