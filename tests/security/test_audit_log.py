"""The audit log: one unbroken hash chain, tamper detection by seq, the admin endpoint."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, LiteralString

import psycopg
import pytest
import trio
import trio.testing

from runtime.admin_cli import verify_audit
from runtime.config import Settings
from runtime.gateways.audit_log import MemoryAuditLog, PostgresAuditLog
from runtime.gateways.database import DatabaseGateway, open_database_gateway
from runtime.testing import open_test_server


async def _fill(log: PostgresAuditLog | MemoryAuditLog, n: int) -> None:
    for i in range(1, n + 1):
        await log.record(
            action="test.action", actor=f"user-{i % 2}", target=f"t{i}", details={"i": i, "f": 0.5}
        )


def _tamper(raw_sql: psycopg.Connection[Any], sql: LiteralString) -> None:
    """What someone with the table owner's rights could do behind Tandem's back."""
    raw_sql.execute("ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only")
    raw_sql.execute(sql)


# -- PostgreSQL ---------------------------------------------------------------------


@pytest.mark.integration
async def test_chain_verifies_and_the_table_refuses_changes(
    db: DatabaseGateway, raw_sql: psycopg.Connection[Any]
) -> None:
    log = PostgresAuditLog(db)
    with trio.fail_after(20):
        empty = await log.verify()
        assert empty.ok and empty.checked == 0
        await _fill(log, 5)
        result = await log.verify()
        assert result.ok and result.checked == 5
        head = raw_sql.execute("SELECT seq, hash FROM audit_head").fetchone()
        assert head == (5, result.head_hash)
        with pytest.raises(psycopg.errors.RaiseException):
            raw_sql.execute("UPDATE audit_log SET actor = 'x' WHERE seq = 1")
        with pytest.raises(psycopg.errors.RaiseException):
            raw_sql.execute("DELETE FROM audit_log WHERE seq = 5")


@pytest.mark.integration
async def test_edited_record_is_named_by_seq(
    db: DatabaseGateway, raw_sql: psycopg.Connection[Any]
) -> None:
    log = PostgresAuditLog(db)
    with trio.fail_after(20):
        await _fill(log, 6)
        _tamper(raw_sql, "UPDATE audit_log SET details = '{\"i\": 99}' WHERE seq = 3")
        result = await log.verify()
        assert not result.ok and result.first_bad_seq == 3 and result.checked == 2
        assert "hash" in (result.reason or "")


@pytest.mark.integration
async def test_removed_newest_record_is_detected_by_the_head(
    db: DatabaseGateway, raw_sql: psycopg.Connection[Any]
) -> None:
    log = PostgresAuditLog(db)
    with trio.fail_after(20):
        await _fill(log, 6)
        _tamper(raw_sql, "DELETE FROM audit_log WHERE seq = 6")
        result = await log.verify()
        assert not result.ok and result.first_bad_seq == 6 and result.checked == 5
        assert "expected head" in (result.reason or "")


@pytest.mark.integration
async def test_removed_middle_record_is_detected(
    db: DatabaseGateway, raw_sql: psycopg.Connection[Any]
) -> None:
    log = PostgresAuditLog(db)
    with trio.fail_after(20):
        await _fill(log, 6)
        _tamper(raw_sql, "DELETE FROM audit_log WHERE seq = 3")
        result = await log.verify()
        assert not result.ok and result.first_bad_seq == 4 and result.checked == 2
        assert "missing" in (result.reason or "")


@pytest.mark.integration
async def test_long_chain_is_verified_window_by_window(
    db: DatabaseGateway, raw_sql: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("runtime.gateways.audit_log.VERIFY_WINDOW", 4)
    log = PostgresAuditLog(db)
    with trio.fail_after(20):
        await _fill(log, 11)
        assert (await log.verify()).checked == 11
        _tamper(raw_sql, "UPDATE audit_log SET target = 'elsewhere' WHERE seq = 10")
        result = await log.verify()
        assert (result.ok, result.first_bad_seq, result.checked) == (False, 10, 9)


@pytest.mark.integration
async def test_concurrent_appends_keep_one_unbroken_chain(
    db: DatabaseGateway,
    raw_sql: psycopg.Connection[Any],
    database_url: str,
    pg_options: str,
) -> None:
    async def append(log: PostgresAuditLog, i: int) -> None:
        await log.record(action="race", actor=f"w{i}", target="t", details={"i": i})

    with trio.fail_after(60):
        # A second pool stands for a second node writing to the same database.
        async with open_database_gateway(
            database_url, min_size=1, max_size=4, statement_timeout_s=10, options=pg_options
        ) as other:
            logs = [PostgresAuditLog(db), PostgresAuditLog(other)]
            async with trio.open_nursery() as nursery:
                for i in range(50):
                    nursery.start_soon(append, logs[i % 2], i)
        result = await logs[0].verify()
        assert result.ok and result.checked == 50
    seqs = [r[0] for r in raw_sql.execute("SELECT seq FROM audit_log ORDER BY seq").fetchall()]
    assert seqs == list(range(1, 51))
    actors = {r[0] for r in raw_sql.execute("SELECT actor FROM audit_log").fetchall()}
    assert len(actors) == 50


@pytest.mark.integration
async def test_audit_verify_command_exit_codes(
    db: DatabaseGateway,
    raw_sql: psycopg.Connection[Any],
    schema_url: str,
    tmp_path: Path,
) -> None:
    settings = Settings(database_url=schema_url, data_dir=str(tmp_path))
    with trio.fail_after(60):
        await _fill(PostgresAuditLog(db), 4)
        assert await verify_audit(settings) == 0
        _tamper(raw_sql, "UPDATE audit_log SET actor = 'mallory' WHERE seq = 2")
        assert await verify_audit(settings) == 1
        env = {**os.environ, "TANDEM_DATABASE_URL": schema_url, "TANDEM_DATA_DIR": str(tmp_path)}
        proc = await trio.run_process(
            [sys.executable, "-m", "runtime.cli", "audit", "verify"],
            env=env,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert proc.returncode == 1
    assert b"BROKEN at seq 2" in proc.stderr


@pytest.mark.integration
async def test_server_records_to_the_database_log(schema_url: str) -> None:
    with trio.fail_after(30):
        async with open_test_server(database_url=schema_url) as server:
            assert isinstance(server.node.audit_log, PostgresAuditLog)
            status, _ = await server.http("POST", "/v1/sessions", {"id": "doc"})
            assert status == 201
            status, _ = await server.http("PUT", "/v1/sessions/doc/members/ann", {"role": "viewer"})
            assert status == 200
            records = await server.node.audit_log.list(action="member.added")
            assert [(r.target, dict(r.details)) for r in records] == [
                ("doc/ann", {"role": "viewer"})
            ]
            assert (await server.node.audit_log.verify()).ok


# -- in memory: the endpoint and what gets recorded ----------------------------------


async def test_memory_log_detects_tampering() -> None:
    log = MemoryAuditLog()
    await _fill(log, 4)
    assert (await log.verify()).ok
    log.records.pop()
    result = await log.verify()
    assert (result.ok, result.first_bad_seq) == (False, 4)


async def test_admin_endpoint_lists_and_filters(autojump_clock: trio.testing.MockClock) -> None:
    key = {"authorization": "Bearer test-api-key"}
    async with open_test_server(api_key="test-api-key") as server:
        assert (await server.http("POST", "/v1/sessions", {"id": "doc"}, key))[0] == 201
        for user, role in [("ann", "viewer"), ("bob", "editor"), ("ann", "editor")]:
            status, _ = await server.http(
                "PUT", f"/v1/sessions/doc/members/{user}", {"role": role}, key
            )
            assert status == 200
        assert (await server.http("DELETE", "/v1/sessions/doc/members/bob", None, key))[0] == 204
        # A denied request is recorded too.
        assert (await server.http("GET", "/v1/audit"))[0] == 401

        status, page = await server.http("GET", "/v1/audit?action=member.added", headers=key)
        assert status == 200
        assert [(r["target"], r["details"]) for r in page["records"]] == [
            ("doc/ann", {"role": "viewer"}),
            ("doc/bob", {"role": "editor"}),
        ]
        _, page = await server.http("GET", "/v1/audit?action=member.role_changed", headers=key)
        assert [r["details"] for r in page["records"]] == [
            {"role": "editor", "previous_role": "viewer"}
        ]
        _, page = await server.http("GET", "/v1/audit?action=member.removed", headers=key)
        assert [(r["target"], r["details"]) for r in page["records"]] == [
            ("doc/bob", {"role": "editor"})
        ]
        _, page = await server.http("GET", "/v1/audit?action=api.denied", headers=key)
        assert [r["target"] for r in page["records"]] == ["/v1/audit"]

        # Pagination by seq cursor over everything, and the actor filter.
        _, everything = await server.http("GET", "/v1/audit?limit=500", headers=key)
        all_seqs = [r["seq"] for r in everything["records"]]
        assert all_seqs == list(range(1, len(all_seqs) + 1))
        seen: list[int] = []
        after = "0"
        while True:
            _, page = await server.http("GET", f"/v1/audit?limit=3&after={after}", headers=key)
            seen.extend(r["seq"] for r in page["records"])
            if "next" not in page:
                break
            after = page["next"]
        assert seen == all_seqs
        _, page = await server.http("GET", "/v1/audit?actor=api", headers=key)
        assert page["records"] and all(r["actor"] == "api" for r in page["records"])
        assert len(page["records"]) < len(all_seqs)
        status, _ = await server.http("GET", "/v1/audit?limit=x", headers=key)
        assert status == 400
        _, future = await server.http("GET", "/v1/audit?since=99999999999", headers=key)
        assert future["records"] == []
        assert (await server.node.audit_log.verify()).ok  # type: ignore[union-attr]


async def test_failed_auth_is_recorded(autojump_clock: trio.testing.MockClock) -> None:
    async with open_test_server() as server:
        async with server.websocket() as ws:
            await ws.get_message()
            await ws.send_message('{"type":"auth","token":"not-a-token","ref":1}')
            await ws.get_message()
        log = server.node.audit_log
        assert isinstance(log, MemoryAuditLog)
        assert [r.action for r in log.records] == ["auth.failed"]
