"""Sensitive event payloads are stored encrypted; rotation re-encrypts them online.

PostgreSQL tests use the real clock and ``trio.fail_after``; the in-memory ones
run under the MockClock.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pytest
import trio
import trio.testing
import trio_websocket

from runtime.admin_cli import rotate_keys
from runtime.cli import main
from runtime.config import ConfigError, Settings, load_settings
from runtime.gateways.encryption import (
    DecryptionError,
    EncryptionUnavailable,
    Sealer,
    keyring_from_settings,
    row_aad,
)
from runtime.gateways.memory import MemoryEventStore, MemoryState, event_aad
from runtime.gateways.store import StoredEvent
from runtime.security.crypto import Keyring, key_id_of, new_key_b64, parse_keys
from runtime.testing import open_test_server

K1 = new_key_b64()
K2 = new_key_b64()
SECRET = "correct horse battery staple"


async def _request(
    ws: trio_websocket.WebSocketConnection, message: dict[str, Any]
) -> dict[str, Any]:
    await ws.send_message(json.dumps(message))
    while True:
        frame = json.loads(await ws.get_message())
        for m in frame if isinstance(frame, list) else [frame]:
            if m.get("ref") == message.get("ref"):
                return m  # type: ignore[no-any-return]


async def _publish_sensitive(server: Any, session_id: str, n: int) -> list[int]:
    seqs = []
    async with server.websocket() as ws:
        await ws.get_message()
        await _request(ws, {"type": "session:join", "sessionId": session_id, "ref": "j"})
        for i in range(n):
            ack = await _request(
                ws,
                {
                    "type": "event:publish",
                    "sessionId": session_id,
                    "name": "note",
                    "data": {"text": SECRET, "i": i},
                    "sensitive": True,
                    "ref": i,
                },
            )
            assert ack["type"] == "event:ack", ack
            seqs.append(ack["seq"])
        plain = await _request(
            ws,
            {
                "type": "event:publish",
                "sessionId": session_id,
                "name": "plain",
                "data": {"text": "public"},
                "ref": "p",
            },
        )
        assert plain["type"] == "event:ack"
    return seqs


async def _replay(server: Any, session_id: str, count: int) -> list[dict[str, Any]]:
    async with server.websocket() as ws:
        await ws.get_message()
        await ws.send_message(
            json.dumps({"type": "session:join", "sessionId": session_id, "since": 0})
        )
        events: list[dict[str, Any]] = []
        while len(events) < count:
            frame = json.loads(await ws.get_message())
            events.extend(
                m for m in (frame if isinstance(frame, list) else [frame]) if m["type"] == "event"
            )
        return events


# -- PostgreSQL, through the server --------------------------------------------------


@pytest.mark.integration
async def test_sensitive_payload_is_ciphertext_in_the_database_and_plaintext_on_resume(
    schema_url: str, raw_sql: psycopg.Connection[Any]
) -> None:
    with trio.fail_after(30):
        async with open_test_server(
            database_url=schema_url, encryption_keys=f"k1:{K1}", memory_retention=1
        ) as server:
            assert await _publish_sensitive(server, "doc", 3) == [1, 2, 3]
        rows = raw_sql.execute(
            "SELECT seq, data::text, data_enc, key_id FROM session_events"
            " WHERE session_id = 'doc' ORDER BY seq"
        ).fetchall()
        assert [r[0] for r in rows] == [1, 2, 3, 4]
        for _, data, sealed, key_id in rows[:3]:
            assert data is None and key_id == "k1"
            assert SECRET.encode() not in bytes(sealed)
            assert key_id_of(bytes(sealed)) == "k1"
        assert rows[3][1] is not None and rows[3][2] is None  # not sensitive: plain jsonb
        dump = raw_sql.execute("SELECT string_agg(t::text, '') FROM session_events t").fetchone()
        assert dump is not None and SECRET not in dump[0]

        # A fresh server (nothing in memory) resumes from the database: plaintext again.
        async with open_test_server(database_url=schema_url, encryption_keys=f"k1:{K1}") as server:
            events = await _replay(server, "doc", 4)
            assert [e["data"] for e in events[:3]] == [{"text": SECRET, "i": i} for i in range(3)]
            status, page = await server.http("GET", "/v1/sessions/doc/events")
            assert status == 200 and page["events"][0]["data"]["text"] == SECRET


@pytest.mark.integration
async def test_rotation_reencrypts_old_rows_under_the_new_key(
    schema_url: str, raw_sql: psycopg.Connection[Any], tmp_path: Path
) -> None:
    with trio.fail_after(60):
        async with open_test_server(database_url=schema_url, encryption_keys=f"k1:{K1}") as server:
            await _publish_sensitive(server, "a", 4)
            await _publish_sensitive(server, "b", 3)
        both = f"k1:{K1},k2:{K2}"
        # New writes use the current key while old rows are still under k1.
        async with open_test_server(
            database_url=schema_url, encryption_keys=both, encryption_key_current="k2"
        ) as server:
            await _publish_sensitive(server, "c", 1)
        counts = dict(
            raw_sql.execute(
                "SELECT key_id, count(*) FROM session_events WHERE key_id IS NOT NULL"
                " GROUP BY key_id"
            ).fetchall()
        )
        assert counts == {"k1": 7, "k2": 1}

        settings = Settings(
            database_url=schema_url,
            encryption_keys=both,
            encryption_key_current="k2",
            data_dir=str(tmp_path),
        )
        assert await rotate_keys(settings, batch_size=3) == 0

        keyring = Keyring(parse_keys(both), "k2")
        rows = raw_sql.execute(
            "SELECT session_id, seq, data_enc, key_id FROM session_events"
            " WHERE data_enc IS NOT NULL"
        ).fetchall()
        assert len(rows) == 8
        for session_id, seq, sealed, key_id in rows:
            assert key_id == "k2" and not keyring.needs_rotation(bytes(sealed))
            text = keyring.decrypt(bytes(sealed), event_aad(session_id, seq))
            assert SECRET.encode() in text
        # k1 can go now: everything reads with k2 alone.
        async with open_test_server(database_url=schema_url, encryption_keys=f"k2:{K2}") as server:
            events = await _replay(server, "a", 5)
            assert [e["data"] for e in events[:4]] == [{"text": SECRET, "i": i} for i in range(4)]
            status, page = await server.http("GET", "/v1/audit?action=keys.rotated")
            assert status == 200
            [record] = page["records"]
            assert record["details"] == {"key_id": "k2", "rotated": 7, "left": 0}
        # Rotating again has nothing to do.
        assert await rotate_keys(settings, batch_size=3) == 0


@pytest.mark.integration
async def test_keys_rotate_command_reports_counts(
    schema_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with trio.fail_after(60):
        async with open_test_server(database_url=schema_url, encryption_keys=f"k1:{K1}") as server:
            await _publish_sensitive(server, "a", 5)
    env = {
        "TANDEM_DATABASE_URL": schema_url,
        "TANDEM_ENCRYPTION_KEYS": f"k1:{K1},k2:{K2}",
        "TANDEM_ENCRYPTION_KEY_CURRENT": "k2",
        "TANDEM_DATA_DIR": str(tmp_path),
    }
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, value)
        # main() runs its own trio loop: call it from a worker thread.
        rc = await trio.to_thread.run_sync(main, ["keys", "rotate", "--batch-size", "2"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "5 rows re-encrypted under 'k2' in 3 batches; 0 rows left" in out


# -- refusals and configuration ----------------------------------------------------


async def test_sensitive_publish_without_keys_is_refused(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_test_server() as server, server.websocket() as ws:
        await ws.get_message()
        await _request(ws, {"type": "session:join", "sessionId": "s", "ref": "j"})
        reply = await _request(
            ws,
            {
                "type": "event:publish",
                "sessionId": "s",
                "name": "n",
                "data": {"text": SECRET},
                "sensitive": True,
                "ref": "x",
            },
        )
        assert reply["type"] == "error"
        assert reply["code"] == "invalid_message"
        assert reply["path"] == "$.sensitive"
        assert "no encryption keys configured" in reply["message"]
        assert await server.node.store.read_since("s", 0, 10) == []


async def test_in_memory_server_seals_sensitive_events(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_test_server(encryption_keys=f"k1:{K1}") as server:
        await _publish_sensitive(server, "m", 2)
        store = server.node.store
        assert isinstance(store, MemoryEventStore)
        raw = store.state.sessions["m"].events
        assert isinstance(raw[1][1], bytes) and SECRET.encode() not in raw[1][1]
        assert isinstance(raw[3][1], str)  # the plain event
        read = await store.read_since("m", 0, 10)
        assert [e.sensitive for e in read] == [True, True, False]
        assert read[0].data == {"text": SECRET, "i": 0}


def test_key_settings_are_validated() -> None:
    assert keyring_from_settings(Settings()) is None
    one = keyring_from_settings(Settings(encryption_keys=f"k1:{K1}"))
    assert one is not None and one.current == "k1"
    for bad in (
        {"encryption_keys": "k1:not-base64!"},
        {"encryption_keys": f"k1:{K1},k2:{K2}"},  # which one is current?
        {"encryption_keys": f"k1:{K1}", "encryption_key_current": "k2"},
        {"encryption_key_current": "k1"},
    ):
        with pytest.raises(ConfigError):
            load_settings([], env={f"TANDEM_{k.upper()}": v for k, v in bad.items()})
    settings = load_settings(
        [],
        env={"TANDEM_ENCRYPTION_KEYS": f"k1:{K1},k2:{K2}", "TANDEM_ENCRYPTION_KEY_CURRENT": "k2"},
    )
    assert settings.encryption_key_current == "k2"


def test_keys_generate_prints_a_usable_key(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "generate", "--id", "k7"]) == 0
    line = capsys.readouterr().out.strip()
    keys = parse_keys(line)
    assert list(keys) == ["k7"] and len(keys["k7"]) == 32


# -- the sealing helper and the memory store ----------------------------------------


def test_ciphertexts_cannot_be_swapped_between_rows() -> None:
    sealer = Sealer(Keyring(parse_keys(f"k1:{K1}"), "k1"))
    a = sealer.seal('{"x":1}', row_aad("session_events", "doc", 1))
    assert sealer.open(a, row_aad("session_events", "doc", 1)) == '{"x":1}'
    for other in (
        row_aad("session_events", "doc", 2),
        row_aad("session_events", "doc2", 1),
        row_aad("comments", "doc", 1),
    ):
        with pytest.raises(DecryptionError):
            sealer.open(a, other)
    assert row_aad("t", "a:b", 1) != row_aad("t", "a", ":b1")


async def test_memory_store_rotation_and_refusal() -> None:
    state = MemoryState()
    old = MemoryEventStore(state, sealer=Sealer(Keyring(parse_keys(f"k1:{K1}"), "k1")))
    events = [StoredEvent("s", i, "n", {"i": i}, "u", 1.0, sensitive=True) for i in (1, 2, 3)]
    await old.append(events)
    with pytest.raises(EncryptionUnavailable):
        await MemoryEventStore(state).append([StoredEvent("s", 4, "n", 1, "u", 1.0, True)])
    new = MemoryEventStore(state, sealer=Sealer(Keyring(parse_keys(f"k1:{K1},k2:{K2}"), "k2")))
    assert await new.count_needing_rotation() == 3
    report = await new.rotate_keys(batch_size=2)
    assert (report.rotated, report.batches, report.key_id) == (3, 2, "k2")
    assert await new.count_needing_rotation() == 0
    assert [e.data for e in await new.read_since("s", 0, 10)] == [{"i": 1}, {"i": 2}, {"i": 3}]
    with pytest.raises(DecryptionError):  # k1 alone cannot read rows now under k2
        await old.read_since("s", 0, 10)
