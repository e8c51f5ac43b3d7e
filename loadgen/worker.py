"""A generator process: opens its share of connections, publishes on command, counts.

The parent (``runner``) talks to each worker over a multiprocessing pipe. Commands:
``connect``, ``run`` (publish for a window), ``report`` (histogram + counters), ``close``.
The worker pushes a ``progress`` message every 250 ms so the parent can draw a live table
and detect when every expected delivery has arrived.
"""

from __future__ import annotations

import asyncio
import base64
import gc
import os
import random
import resource
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import orjson
from hdrh.histogram import HdrHistogram

from loadgen import comments
from loadgen.wsclient import Stats, WsConnection, open_connection

HIST_MAX_US = 120_000_000  # two minutes
PROGRESS_INTERVAL = 0.25


@dataclass(frozen=True)
class ConnSpec:
    session_id: str
    source_ip: str
    publishes: bool
    port: int = 0  # 0: the config's port (cluster: each connection names its node's port)
    observes: bool = True  # counts and times what it receives (presence may sample)


@dataclass(frozen=True)
class WorkerConfig:
    index: int
    host: str
    port: int
    path: str
    socketio: bool
    conns: list[ConnSpec]
    ramp_per_second: float
    connect_timeout: float
    kind: str  # "event" | "presence" | "comment" | "none"
    pad: int
    durable: bool | None  # None: let the server choose (omit the field)
    compression: bool = False  # offer permessage-deflate in the upgrade, as browsers do
    # comments: connections authenticate as u<connection number> with an HS256 token signed
    # with this secret (the server's TANDEM_JWT_SECRET), so users can mention each other.
    token_secret: str | None = None
    mention_pool: tuple[str, ...] = ()  # every user id in the session


def random_pad(n: int, randbytes: Callable[[int], bytes] = os.urandom) -> str:
    """``n`` random base64 characters: data that compresses about as badly as it can, so
    permessage-deflate is not credited with squeezing a run of one repeated letter.
    ``randbytes``: a seeded ``random.Random(...).randbytes`` gives the same pad each run."""
    return base64.b64encode(randbytes(n * 3 // 4 + 3)).decode()[:n]


def conn_id(worker_index: int, local_index: int) -> int:
    """A connection's number, unique across generator processes."""
    return worker_index * 1_000_000 + local_index


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def encode_histogram(latency_us: Any) -> bytes:
    hist = HdrHistogram(1, HIST_MAX_US, 3)
    for value, count in Counter(latency_us).items():
        hist.record_value(min(max(int(value), 1), HIST_MAX_US), count)
    encoded: bytes = hist.encode()
    return encoded


class Worker:
    def __init__(self, cfg: WorkerConfig, pipe: Connection) -> None:
        self.cfg = cfg
        self.pipe = pipe
        self.stats = Stats()
        self.conns: list[WsConnection] = []
        self.publishers: list[tuple[WsConnection, str]] = []
        self.joined = 0
        self.failed = 0
        self.lost_after_join = 0
        self.errors: list[str] = []
        self.sent = 0
        self.start_late_s = 0.0  # how late the last run's start command arrived
        self.sent_per_session: Counter[str] = Counter()
        self.active_publishers = 0
        self.phase = "idle"
        self.done = asyncio.Event()
        self.settled = asyncio.Event()  # every connection has joined or failed
        self.loop = asyncio.get_running_loop()
        self.comments = comments.CommentState() if cfg.kind == "comment" else None
        self.rng = random.Random(cfg.index)

    # -- plumbing ---------------------------------------------------------------------------
    def send(self, msg: dict[str, Any]) -> None:
        self.pipe.send(msg)

    def _on_command(self) -> None:
        while self.pipe.poll():
            msg = self.pipe.recv()
            cmd = msg["cmd"]
            if cmd == "connect":
                self.phase = "connect"
                self.loop.create_task(self._connect_all())
            elif cmd == "run":
                self._start_run(msg["rate"], msg["start_at"], msg["duration"])
            elif cmd == "report":
                self.send(self._report())
            elif cmd == "close":
                self.done.set()

    def _counts(self) -> tuple[int, int]:
        """(deliveries, acks) so far, whatever the scenario."""
        s = self.stats
        if self.comments is not None:
            return s.events + self.comments.stats.deliveries, s.acks + self.comments.stats.acks
        return s.events, s.acks

    async def _progress_loop(self) -> None:
        while not self.done.is_set():
            s = self.stats
            events, acks = self._counts()
            self.send(
                {
                    "ev": "progress",
                    "phase": self.phase,
                    "joined": self.joined,
                    "failed": self.failed,
                    "lost": self.lost_after_join,
                    "sent": self.sent,
                    "events": events,
                    "acks": acks,
                    "presence": s.presence,
                }
            )
            await asyncio.sleep(PROGRESS_INTERVAL)

    async def main(self) -> None:
        self.loop.add_reader(self.pipe.fileno(), self._on_command)
        progress = self.loop.create_task(self._progress_loop())
        await self.done.wait()
        progress.cancel()
        for c in self.conns:
            c.close()
        await asyncio.sleep(0.2)

    # -- connecting -------------------------------------------------------------------------
    def _check_settled(self) -> None:
        if self.joined + self.failed >= len(self.cfg.conns):
            self.settled.set()

    def _on_joined(self, conn: WsConnection) -> None:
        self.joined += 1
        self._check_settled()

    def _on_lost(self, conn: WsConnection, reason: str) -> None:
        if self.done.is_set():
            return
        if conn.joined:
            self.lost_after_join += 1
        else:
            self.failed += 1
            self._check_settled()
        if len(self.errors) < 5:
            self.errors.append(reason)

    async def _open_one(self, conn_id: int, spec: ConnSpec) -> None:
        join = orjson.dumps({"type": "session:join", "sessionId": spec.session_id})
        cfg = self.cfg
        port = spec.port or cfg.port
        path = cfg.path
        if cfg.token_secret is not None:
            path += "?token=" + _token(cfg.token_secret, comments.user_id(conn_id))

        def factory() -> WsConnection:
            return WsConnection(
                cfg.host,
                port,
                path,
                cfg.socketio,
                join,
                self.stats,
                self._on_joined,
                self._on_lost,
                conn_id,
                self.comments,
                spec.observes,
                cfg.compression,
            )

        try:
            conn = await asyncio.wait_for(
                open_connection(self.loop, factory, cfg.host, port, spec.source_ip),
                cfg.connect_timeout,
            )
        except (OSError, TimeoutError) as exc:
            self.failed += 1
            self._check_settled()
            if len(self.errors) < 5:
                self.errors.append(f"connect: {exc!r}")
            return
        self.conns.append(conn)
        if spec.publishes:
            self.publishers.append((conn, spec.session_id))

    async def _connect_all(self) -> None:
        interval = 1.0 / self.cfg.ramp_per_second
        start = self.loop.time()
        tasks = []
        for i, spec in enumerate(self.cfg.conns):
            delay = start + i * interval - self.loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(self.loop.create_task(self._open_one(conn_id(self.cfg.index, i), spec)))
        await asyncio.gather(*tasks)
        self._check_settled()
        try:
            await asyncio.wait_for(self.settled.wait(), self.cfg.connect_timeout)
        except TimeoutError:
            pass  # reported below as failed joins
        self.phase = "connected"
        # The generator is the measuring instrument: a full collection here would pause
        # every receipt by tens of milliseconds and show up as the server's p99. What is
        # built by now lives as long as the run, so it leaves the collector's sight.
        gc.collect()
        gc.freeze()
        self.send(
            {
                "ev": "connected",
                "joined": self.joined,
                "failed": len(self.cfg.conns) - self.joined,
                "errors": self.errors,
            }
        )

    # -- publishing -------------------------------------------------------------------------
    def _start_run(self, rate: float, start_at: float, duration: float) -> None:
        self.stats.reset()
        if self.comments is not None:
            self.comments.reset()
        for c in self.conns:
            c.presence_seen.clear()
            c.last_presence_sent = 0
        self.sent = 0
        self.sent_per_session.clear()
        self.phase = "run"
        live = [(c, sid) for c, sid in self.publishers if not c.closed]
        if rate <= 0 or not live:
            self.phase = "published"
            self.send({"ev": "published", "per_session": {}})
            return
        self.active_publishers = len(live)
        late = time.time() - start_at
        # A start already past (the parent sampled the server after setting it) would
        # fire every publisher's catch-up sends at once: start now instead, so phases
        # stay spread over the first interval and the offered load is the rate asked.
        t0 = self.loop.time() - min(0.0, late)
        self.start_late_s = max(0.0, late)
        for conn, sid in live:
            self._schedule(conn, sid, rate, t0, t0 + duration)

    def _comment(self, conn: WsConnection, sid: str, k: int) -> bytes:
        state = self.comments
        assert state is not None
        ref = f"c{conn.conn_id}-{k}"
        mentions = comments.pick_mentions(conn.conn_id, k, list(self.cfg.mention_pool), self.rng)
        action = comments.choose_action(
            k, state.threads.get(sid, []), state.roots, self.rng, mentions
        )
        state.stats.mentions_sent += len(mentions)
        state.stats.kinds[action.kind] += 1
        now = time.time_ns() // 1000
        text = comments.body(now, conn.conn_id, k, self.cfg.pad)
        state.sent(ref, now)
        return orjson.dumps(comments.message(action, sid, text, ref))

    def _message(self, conn: WsConnection, sid: str, k: int) -> bytes:
        if self.comments is not None:
            return self._comment(conn, sid, k)
        pad = random_pad(self.cfg.pad)
        if self.cfg.kind == "presence":
            stamp = conn.last_presence_sent = time.time_ns() // 1000
            msg: dict[str, Any] = {
                "type": "presence:update",
                "sessionId": sid,
                "state": {"pt": stamp, "pc": conn.conn_id, "pad": pad},
            }
        else:
            msg = {
                "type": "event:publish",
                "sessionId": sid,
                "name": "bench",
                "data": {"t": time.time_ns() // 1000, "pad": pad},
                "ref": f"r{k}",
            }
            if self.cfg.durable is not None:
                msg["durable"] = self.cfg.durable
        return orjson.dumps(msg)

    def _schedule(self, conn: WsConnection, sid: str, rate: float, t0: float, end: float) -> None:
        interval = 1.0 / rate
        first = t0 + random.random() * interval
        sent = 0

        def fire() -> None:
            nonlocal sent
            now = self.loop.time()
            # Catch up if the loop was late, so the offered rate stays fixed.
            while first + sent * interval <= now and first + sent * interval < end:
                if conn.closed:
                    break
                conn.send_json(self._message(conn, sid, sent))
                sent += 1
                self.sent += 1
                self.sent_per_session[sid] += 1
            nxt = first + sent * interval
            if nxt < end and not conn.closed:
                self.loop.call_at(nxt, fire)
            else:
                self.active_publishers -= 1
                if self.active_publishers == 0:
                    self.phase = "published"
                    self.send({"ev": "published", "per_session": dict(self.sent_per_session)})

        self.loop.call_at(first, fire)

    def _report(self) -> dict[str, Any]:
        s = self.stats
        return {
            "ev": "report",
            "events": s.events,
            "acks": s.acks,
            "presence": s.presence,
            "self_echoes": s.self_echoes,
            "sent": self.sent,
            "lost": self.lost_after_join,
            "protocol_errors": s.protocol_errors,
            "errors": self.errors,
            "start_late_s": round(self.start_late_s, 4),
            "histogram": encode_histogram(s.latency_us),
            **(self._presence_state() if self.cfg.kind == "presence" else {}),
            **(self._comment_report() if self.comments is not None else {}),
        }

    def _comment_report(self) -> dict[str, Any]:
        assert self.comments is not None
        c = self.comments.stats
        return {
            "events": c.deliveries,
            "acks": c.acks,
            "self_echoes": c.self_echoes,
            "histogram": encode_histogram(c.latency_us),
            "ack_histogram": encode_histogram(c.ack_latency_us),
            "mention_histogram": encode_histogram(c.mention_latency_us),
            "mentions_sent": c.mentions_sent,
            "mention_notifications": c.mentions,
            "comment_errors": c.errors,
            "comment_error_samples": c.error_samples,
            "comment_kinds": dict(c.kinds),
            "first_sent_us": c.first_sent_us,
            "last_ack_us": c.last_ack_us,
        }

    def _presence_state(self) -> dict[str, Any]:
        """What each connection last sent and, per sender, the newest state it received."""
        return {
            "presence_last_sent": {c.conn_id: c.last_presence_sent for c in self.conns},
            "presence_seen": {
                c.conn_id: {int(k): v for k, v in c.presence_seen.items()}
                for c in self.conns
                if c.observes
            },
        }


def _token(secret: str, user: str) -> str:
    import jwt  # Tandem's own dependency (PyJWT); only the comments scenario signs tokens

    token: str = jwt.encode(
        {"sub": user, "name": user, "exp": int(time.time()) + 3600}, secret, "HS256"
    )
    return token


def worker_main(cfg: WorkerConfig, pipe: Connection) -> None:
    """Entry point of a spawned generator process."""
    raise_fd_limit()

    async def run() -> None:
        await Worker(cfg, pipe).main()

    asyncio.run(run())
