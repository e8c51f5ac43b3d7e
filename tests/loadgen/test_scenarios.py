"""Pure parts of the comments and cluster scenarios: plans, expected counts, comment choice,
receipt counting, per-run schema URLs."""

from __future__ import annotations

import random
from typing import Any

import orjson
import psycopg
import pytest

from loadgen import comments
from loadgen.cli import _runs, parse_args, plan_from_args
from loadgen.report import add_ratios, markdown
from loadgen.runner import acked_per_second, progress_bar
from loadgen.scenarios import build_plan, cluster_plan, members_per_node, publishers_per_node
from loadgen.servers import run_name, schema_url


def plan(scenario: str, **kw: object) -> object:
    args: dict[str, object] = {
        "members": None,
        "sessions": None,
        "conns": None,
        "rate": None,
        "step_start": 10.0,
        "step_max": 20.0,
    }
    args.update(kw)
    return build_plan(scenario, **args)  # type: ignore[arg-type]


def test_comments_plan_every_user_comments_and_expects_the_others() -> None:
    p = build_plan(
        "comments", members=100, sessions=None, conns=None, rate=None, step_start=1, step_max=1
    )
    assert p.kind == "comment"
    assert p.connections == 100 and all(publishes for _sid, publishes in p.conns)
    assert p.per_user == 10 and p.rates == [1.0]
    assert p.publish_seconds(1.0) == 10.0 and p.publish_seconds(2.0) == 5.0
    # 100 x 10 comments, each delivered to the 99 other members (not back to its creator).
    assert p.expected_deliveries({"s0": 1000}) == 1000 * 99


def test_comments_plan_refuses_a_session_of_one() -> None:
    with pytest.raises(ValueError):
        build_plan(
            "comments", members=1, sessions=None, conns=None, rate=None, step_start=1, step_max=1
        )


@pytest.mark.parametrize("nodes", [1, 2, 3])
def test_cluster_plan_round_robin_with_publishers_on_every_node(nodes: int) -> None:
    p = cluster_plan(301, nodes, 2, 60.0)
    assert p.nodes == nodes and p.sessions == {"s0": 301}
    assert [p.node_of(i) for i in range(6)] == [i % nodes for i in range(6)]
    assert publishers_per_node(p) == [2] * nodes
    per_node = members_per_node(p)
    assert sum(per_node) == 301 and max(per_node) - min(per_node) <= 1
    # The rate is into the session, spread over every publisher of every node.
    assert p.per_publisher_rate(60.0) == pytest.approx(60.0 / (2 * nodes))
    # Every member (on every node, the publisher too) receives every event.
    assert p.expected_deliveries({"s0": 1000}) == 301_000


def test_cluster_plan_needs_room_for_its_publishers() -> None:
    with pytest.raises(ValueError):
        cluster_plan(3, 2, 2, 10.0)


def test_single_node_baseline_has_the_same_load() -> None:
    two = cluster_plan(300, 2, 1, 100.0)
    one = cluster_plan(300, 1, 2, 100.0)
    assert one.conns == two.conns  # same members, same publishers, all on node 0
    assert publishers_per_node(one) == [2]
    assert one.per_publisher_rate(100.0) == two.per_publisher_rate(100.0)


def test_build_plan_cluster_defaults() -> None:
    p = build_plan(
        "cluster",
        members=None,
        sessions=None,
        conns=None,
        rate=None,
        step_start=1,
        step_max=1,
        nodes=3,
    )
    assert (p.connections, p.nodes, p.rates) == (300, 3, [20.0])


def test_mentions_every_third_comment_never_self() -> None:
    pool = [comments.user_id(i) for i in range(10)]
    rng = random.Random(1)
    picked = [comments.pick_mentions(4, k, pool, rng) for k in range(9)]
    assert [bool(m) for m in picked] == [(4 + k) % 3 == 0 for k in range(9)]
    for k, m in enumerate(picked):
        assert "u4" not in m
        assert len(m) == (1 + k % 2 if m else 0)
        assert len(set(m)) == len(m)


def test_first_comment_opens_a_thread_then_comments_and_replies() -> None:
    rng = random.Random(0)
    assert comments.choose_action(0, ["th1"], {"th1": ["cm1"]}, rng).kind == "thread"
    assert comments.choose_action(3, [], {}, rng).kind == "thread"  # nothing known yet
    reply = comments.choose_action(1, ["th1"], {"th1": ["cm1"]}, rng, ("u2",))
    assert reply == comments.Action("reply", "th1", "cm1", ("u2",))
    assert comments.choose_action(1, ["th1"], {}, rng).kind == "comment"  # no root known
    assert comments.choose_action(2, ["th1"], {"th1": ["cm1"]}, rng).kind == "comment"
    msg = comments.message(reply, "s0", "hello", "c1-1")
    assert msg == {
        "type": "comment:create",
        "sessionId": "s0",
        "threadId": "th1",
        "parentId": "cm1",
        "body": "hello",
        "ref": "c1-1",
        "mentions": ["u2"],
    }
    first = comments.message(comments.Action("thread"), "s0", "hi", "c1-0")
    assert first == {"type": "thread:create", "sessionId": "s0", "body": "hi", "ref": "c1-0"}


def test_body_stamp_round_trip() -> None:
    text = comments.body(1_700_000_000_000_000, 42, 3, 5)
    assert comments.parse_stamp(text) == (1_700_000_000_000_000, 42)
    assert comments.parse_stamp("no stamp here") is None


def thread_event(thread: str, comment: str, creator: int, stamp: int) -> dict[str, object]:
    return {
        "type": "event",
        "sessionId": "s0",
        "seq": 1,
        "name": "thread:created",
        "data": {
            "id": thread,
            "sessionId": "s0",
            "comments": [
                {
                    "id": comment,
                    "threadId": thread,
                    "depth": 0,
                    "body": comments.body(stamp, creator, 0, 0),
                }
            ],
        },
    }


def test_receipt_counts_others_deliveries_acks_mentions_and_errors() -> None:
    state = comments.CommentState()
    state.sent("c7-0", 1000)
    batch = [
        thread_event("th1", "cm1", creator=5, stamp=1000),  # another member's: a delivery
        thread_event("th2", "cm2", creator=7, stamp=1000),  # my own: a self echo
        {
            "type": "comment:created",  # not an event: ignored
            "ref": "x",
        },
    ]
    state.on_payload(orjson.dumps(batch), 1500, own_conn=7)
    reply = {
        "type": "event",
        "name": "comment:created",
        "data": {"id": "cm3", "threadId": "th1", "depth": 1, "body": comments.body(1200, 5, 1, 0)},
    }
    state.on_payload(orjson.dumps(reply), 1500, own_conn=7)
    ack = {"type": "thread:create:ok", "ref": "c7-0", "result": {"id": "th2", "sessionId": "s0"}}
    state.on_payload(orjson.dumps(ack), 1800, own_conn=7)
    state.on_payload(orjson.dumps(ack), 1900, own_conn=7)  # a ref answered twice counts once
    note = {
        "type": "notification",
        "notification": {"kind": "mention", "data": {"excerpt": comments.body(1000, 5, 0, 0)}},
    }
    state.on_payload(orjson.dumps(note), 1100, own_conn=7)
    state.on_payload(b'{"type":"error","code":"not_found","message":"no","ref":"c7-1"}', 0, 7)
    st = state.stats
    assert (st.deliveries, st.self_echoes, st.acks, st.mentions, st.errors) == (2, 1, 1, 1, 1)
    assert list(st.latency_us) == [500, 300]
    assert list(st.ack_latency_us) == [800]
    assert (st.first_sent_us, st.last_ack_us) == (1000, 1800)  # the span throughput is timed over
    assert list(st.mention_latency_us) == [100]
    assert st.error_samples == ["not_found: no None"]
    # Threads and top-level comments are learnt for later replies; depth-1 ones are not roots.
    assert state.threads == {"s0": ["th1", "th2"]}
    assert state.roots == {"th1": ["cm1"], "th2": ["cm2"]}


def test_one_frame_received_by_many_members_counts_for_each_of_them() -> None:
    # A session's frame reaches every member with the same bytes; the generator decodes
    # it once but still counts each receipt, with that member's own receipt time.
    state = comments.CommentState()
    frame = orjson.dumps(
        [
            thread_event("th1", "cm1", creator=5, stamp=1000),
            {"type": "event", "name": "cursor", "data": {}},  # not a comment: not counted
            thread_event("th2", "cm2", creator=7, stamp=1100),
        ]
    )
    state.on_payload(frame, 1500, own_conn=7)  # creator of th2: one delivery, one echo
    state.on_payload(frame, 1600, own_conn=8)  # neither: two deliveries
    state.on_payload(frame, 1700, own_conn=5)  # creator of th1
    st = state.stats
    assert (st.deliveries, st.self_echoes) == (4, 2)
    assert list(st.latency_us) == [500, 600, 500, 600]
    assert state.threads == {"s0": ["th1", "th2"]}  # learnt from the cached frame too
    # Once FRAME_CACHE other frames came after it, the frame is decoded again: same counts.
    for n in range(comments.FRAME_CACHE):
        state.on_payload(orjson.dumps([thread_event(f"x{n}", f"c{n}", 9, 0)]), 10, own_conn=1)
    state.on_payload(frame, 1800, own_conn=8)
    assert (st.deliveries, st.self_echoes) == (4 + comments.FRAME_CACHE + 2, 2)
    assert list(st.latency_us)[-2:] == [800, 700]


def test_acked_per_second_spans_first_send_to_last_ack_over_every_process() -> None:
    reports: list[dict[str, Any]] = [
        {"first_sent_us": 2_000_000, "last_ack_us": 2_900_000},
        {"first_sent_us": 1_000_000, "last_ack_us": 2_250_000},
        {"first_sent_us": None, "last_ack_us": None},  # a process that sent nothing
    ]
    assert acked_per_second(1900, reports) == 1000.0  # 1,900 acks over 1.9 s
    assert acked_per_second(0, reports) is None
    assert acked_per_second(5, [{"first_sent_us": None, "last_ack_us": None}]) is None


def test_schema_url_puts_connections_in_the_runs_schema() -> None:
    url = schema_url("postgresql://postgres@127.0.0.1:5432/test?sslmode=disable", "lg_x")
    info = psycopg.conninfo.conninfo_to_dict(url)
    assert info["options"] == "-c search_path=lg_x -c application_name=lg_x"
    assert info["sslmode"] == "disable" and info["dbname"] == "test"


def test_run_name_is_a_safe_fresh_identifier() -> None:
    a = run_name("loadgen", "20261127-120000", "tandem-2nodes")
    b = run_name("loadgen", "20261127-120000", "tandem-2nodes")
    assert a != b
    assert a.startswith("loadgen_20261127_120000_tandem_2nodes_")
    assert all(c.isalnum() or c == "_" for c in a)


def step(rate: float, per_cpu: float) -> dict[str, object]:
    return {
        "rate": rate,
        "status": "OK",
        "delivered": 10,
        "expected": 10,
        "p50_ms": 1.0,
        "p95_ms": 1.0,
        "p99_ms": 1.0,
        "max_ms": 1.0,
        "server_cpu_percent": 1.0,
        "deliveries_per_server_cpu_second": per_cpu,
        "generator_cpu_percent": [1.0],
        "problems": [],
        "nodes": 2,
        "members_per_node": [5, 5],
        "publishers_per_node": [1, 1],
        "node_cpu_percent": [1.0, 2.0],
    }


def test_cluster_ratio_to_the_single_node_in_the_same_run() -> None:
    results = [
        {"target": "tandem-1node", "status": "OK", "steps": [step(50, 1000.0)]},
        {"target": "tandem-2nodes", "status": "OK", "steps": [step(50, 400.0)]},
    ]
    add_ratios(results)
    assert results[1]["steps"][0]["efficiency_vs_single_node"] == 0.4  # type: ignore[index]
    md = markdown({"scenario": "cluster", "started": "x", "tandem_only": "Tandem-only"}, results)
    assert "| tandem-2nodes | 2 | 5, 5 | 1, 1 | 10 / 10 | 1 / 1 | 400 | 0.4 | 1, 2 |" in md


def test_presence_observers_sample_members_of_every_session() -> None:
    p = plan("presence", members=500, sessions=2, observers=10)
    assert p.connections == 1000
    observing = [i for i in range(p.connections) if p.observes(i)]
    # Member k of every session joins before member k+1 of any: the first 10 of each.
    assert len(observing) == 20 and observing == list(range(20))
    assert {p.conns[i][0] for i in observing} == {"s0", "s1"}
    # 500 updates in s0: each of 10 observers expects those of the 499 others.
    assert p.expected_deliveries({"s0": 500}) == round(500 * 10 * 499 / 500)
    everyone = plan("presence", members=500, sessions=2)
    assert all(everyone.observes(i) for i in range(everyone.connections))
    assert everyone.expected_deliveries({"s0": 500}) == 500 * 499


def test_websockets_ratio_falls_back_to_its_highest_clean_rate() -> None:
    invalid = {**step(150, 100.0), "status": "INVALID"}
    results = [
        {"target": "tandem", "status": "OK", "steps": [step(150, 600.0)]},
        {
            "target": "websockets",
            "status": "INVALID",
            "steps": [step(25, 140.0), step(50, 150.0), invalid],
        },
    ]
    add_ratios(results)
    tandem = results[0]["steps"][0]  # type: ignore[index]
    assert tandem["efficiency_vs_websockets"] == 4.0  # against the OK step at 50, not 150
    assert tandem["websockets_baseline_rate"] == 50
    # The peer's own rows compare with themselves at the same rate.
    assert results[1]["steps"][2]["efficiency_vs_websockets"] == 1.0  # type: ignore[index]
    md = markdown({"scenario": "fanout", "started": "x"}, results)
    assert "| 4 (vs websockets @50) |" in md


def test_same_rate_ratio_when_the_peer_is_clean() -> None:
    results = [
        {"target": "tandem", "status": "OK", "steps": [step(150, 600.0)]},
        {"target": "websockets", "status": "OK", "steps": [step(50, 150.0), step(150, 200.0)]},
    ]
    add_ratios(results)
    tandem = results[0]["steps"][0]  # type: ignore[index]
    assert tandem["efficiency_vs_websockets"] == 3.0
    assert "websockets_baseline_rate" not in tandem


def test_baseline_rate_runs_the_peer_at_both_rates_without_the_p99_stop() -> None:
    args = parse_args(
        ["fanout", "--target", "tandem,websockets", "--rate", "150", "--baseline-rate", "50"]
    )
    runs = {r.label: r.plan for r in _runs(args, plan_from_args(args))}
    assert runs["tandem"].rates == [150.0]
    assert runs["websockets"].rates == [50.0, 150.0]
    assert runs["websockets"].fixed_rates and not runs["tandem"].fixed_rates


def test_progress_bar_fills_with_the_share_done_and_stays_within_its_width() -> None:
    assert progress_bar(0, 10_000) == "[--------------------]   0%"
    assert progress_bar(3_500, 10_000) == "[#######-------------]  35%"
    assert progress_bar(10_000, 10_000) == "[####################] 100%"
    # A phase that runs over its time, or a total of nothing, does not overflow the bar.
    assert progress_bar(12, 10) == progress_bar(1, 1) == "[####################] 100%"
    assert progress_bar(5, 0) == "[--------------------]   0%"
