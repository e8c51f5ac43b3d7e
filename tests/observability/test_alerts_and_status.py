"""Alerts raise and clear on a MockClock; /status after an injected crash."""

from __future__ import annotations

import logging

import pytest
import trio
import trio.testing

from runtime import metrics
from runtime.supervisor import describe_failure
from runtime.testing import open_test_server
from tests.e2e.conftest import Inbox
from tests.observability.helpers import delta, scrape, value


async def test_publish_p99_alert_raises_and_clears(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tandem.alerts")
    async with open_test_server(alert_interval=5.0) as server:
        await trio.sleep(0.1)  # the observer took its baseline
        for _ in range(20):  # a slow window: 20 publish deliveries at 250 ms
            metrics.PUBLISH.observe(0.25)
        await trio.sleep(5.5)  # windows end at 5 s, 10 s, ... after the start
        assert "publish_p99" in server.node.observer.alerts.active
        assert value(await scrape(server), "tandem_alert_active", alert="publish_p99") == 1
        raised = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert [r.getMessage().split(":")[0] for r in raised] == ["alert publish_p99 raised"]
        # Interpolated within the (200 ms, 300 ms] bucket, like histogram_quantile.
        assert "p99 299.0 ms > 100 ms (20 samples)" in raised[0].getMessage()

        for _ in range(20):  # a healthy window
            metrics.PUBLISH.observe(0.002)
        await trio.sleep(5.0)
        assert server.node.observer.alerts.active == {}
        assert value(await scrape(server), "tandem_alert_active", alert="publish_p99") == 0
        assert any(r.getMessage() == "alert publish_p99 cleared" for r in caplog.records)
        status, body = await server.http("GET", "/status")
        assert status == 200 and body["alerts"] == {}


async def test_restart_intensity_alert_follows_a_crash(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_test_server(alert_interval=5.0, alert_restarts=0) as server:
        async with server.websocket() as ws:
            await Inbox(ws).request(type="session:join", sessionId="x")
            assert await server.node.inject_failure("session:x")
            await trio.sleep(5.5)  # windows end at 5 s, 10 s, ... after the start
            assert "restart_intensity" in server.node.observer.alerts.active
            await trio.sleep(5.0)  # no restart in this window
            assert "restart_intensity" not in server.node.observer.alerts.active


async def test_status_after_an_injected_crash(autojump_clock: trio.testing.MockClock) -> None:
    async with open_test_server() as server, server.websocket() as ws:
        inbox = Inbox(ws)
        await inbox.request(type="session:join", sessionId="x")
        before = await scrape(server)
        assert await server.node.inject_failure("session:x", "boom")
        left = await inbox.next_of("session:left")
        assert left["reason"] == "restart"
        await trio.sleep(1.0)  # past the restart backoff
        status, body = await server.http("GET", "/status")
        after = await scrape(server)

    assert status == 200
    root = body["actors"]
    assert root["name"] == "root"
    sessions = next(c["supervisor"] for c in root["children"] if c["name"] == "sessions")
    assert sessions["restarts"] == 1
    child = next(c for c in sessions["children"] if c["name"] == "session:x")
    assert child["restarts"] == 1
    assert child["state"] == "running"
    assert child["lastFailure"] == "InjectedFailure: boom"
    assert sessions["recentFailures"][-1]["failure"] == "InjectedFailure: boom"
    assert body["alerts"] == {}
    assert body["schedulerLag"]["max"] == 0.0  # a MockClock never runs late
    assert delta(before, after, "tandem_actor_failures_total", kind="session") == 1
    assert delta(before, after, "tandem_supervisor_restarts_total", supervisor="sessions") == 1


def test_failures_on_status_carry_no_credentials() -> None:
    exc = OSError("connect to postgresql://tandem:hunter2@db:5432/t failed, token=abc.def")
    text = describe_failure(exc)
    assert text.startswith("OSError: connect to postgresql://***@db:5432/t failed")
    assert "hunter2" not in text and "abc.def" not in text
