from __future__ import annotations

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from runtime.security.audit import (
    GENESIS_HASH,
    AuditRecord,
    VerifyResult,
    append,
    chain_hash,
    verify,
)


def _chain(n: int, start: float = 1_700_000_000.0) -> list[AuditRecord]:
    records: list[AuditRecord] = []
    prev = None
    for i in range(n):
        prev = append(
            prev,
            ts=start + i * 1.5,
            actor=f"user-{i % 3}",
            action="member.add" if i % 2 else "session.create",
            target=f"session-{i // 2}",
            details={"role": "editor", "i": i, "note": "ünïcode ✓"},
        )
        records.append(prev)
    return records


def _rehash(record: AuditRecord, **changes: object) -> AuditRecord:
    edited = attrs.evolve(record, **changes)  # type: ignore[arg-type]
    return attrs.evolve(edited, hash=edited.expected_hash())


def test_append_builds_a_linked_chain() -> None:
    a, b = _chain(2)
    assert (a.seq, a.prev_hash) == (1, GENESIS_HASH)
    assert (b.seq, b.prev_hash) == (2, a.hash)
    assert len(a.hash) == 64 and a.hash != b.hash
    assert verify([a, b]) == VerifyResult(ok=True, checked=2, head_hash=b.hash)


def test_empty_chain_is_valid() -> None:
    assert verify([]) == VerifyResult(ok=True, checked=0, head_hash=GENESIS_HASH)


def test_chain_hash_is_canonical() -> None:
    kw = {"seq": 1, "ts": 10.0, "actor": "a", "action": "x", "target": "t"}
    h1 = chain_hash(GENESIS_HASH, details={"a": 1, "b": [1, 2]}, **kw)  # type: ignore[arg-type]
    h2 = chain_hash(GENESIS_HASH, details={"b": [1, 2], "a": 1}, **kw)  # type: ignore[arg-type]
    assert h1 == h2  # key order does not matter
    h3 = chain_hash(GENESIS_HASH, details={"a": 1, "b": [2, 1]}, **kw)  # type: ignore[arg-type]
    assert h1 != h3
    # Sub-microsecond float noise (e.g. from a SQL timestamp round trip) is ignored.
    h4 = chain_hash(
        GENESIS_HASH, seq=1, ts=10.0 + 1e-9, actor="a", action="x", target="t",
        details={"a": 1, "b": [1, 2]},
    )  # fmt: skip
    assert h1 == h4


def test_details_are_copied_and_need_string_keys() -> None:
    details = {"k": "v"}
    record = append(None, ts=1.0, actor="a", action="b", target="c", details=details)
    details["k"] = "changed"
    assert verify([record]).ok
    with pytest.raises(TypeError):
        append(None, ts=1.0, actor="a", action="b", target="c", details={1: "x"})  # type: ignore[dict-item]


def test_edit_without_rehash_breaks_at_the_edited_record() -> None:
    chain = _chain(5)
    chain[2] = attrs.evolve(chain[2], actor="mallory")
    result = verify(chain)
    assert (result.ok, result.first_bad_seq, result.index, result.checked) == (False, 3, 2, 2)
    assert result.reason == "hash does not match the record's contents"


def test_edit_with_rehash_breaks_at_the_next_record() -> None:
    chain = _chain(5)
    chain[2] = _rehash(chain[2], details={"role": "owner"})
    result = verify(chain)
    assert (result.ok, result.first_bad_seq) == (False, 4)
    assert result.reason == "prev_hash does not match the hash of seq 3"


def test_fully_rewritten_tail_is_caught_only_by_an_anchor() -> None:
    chain = _chain(4)
    anchor = chain[-1].hash
    forged = [*chain[:2]]
    prev = chain[1]
    for original in chain[2:]:
        prev = append(
            prev,
            ts=original.ts,
            actor="mallory",
            action=original.action,
            target=original.target,
            details=dict(original.details),
        )
        forged.append(prev)
    assert verify(forged).ok
    result = verify(forged, expected_head=anchor)
    assert (result.ok, result.first_bad_seq) == (False, 5)


def test_removed_record_is_detected() -> None:
    chain = _chain(5)
    del chain[1]
    result = verify(chain)
    assert (result.ok, result.first_bad_seq, result.index) == (False, 3, 1)
    assert result.reason is not None and "missing" in result.reason


def test_removed_first_record_is_detected() -> None:
    result = verify(_chain(3)[1:])
    assert (result.ok, result.first_bad_seq, result.index) == (False, 2, 0)


def test_truncated_tail_is_detected_with_anchor() -> None:
    chain = _chain(5)
    assert verify(chain[:3]).ok  # undetectable without knowing the head
    result = verify(chain[:3], expected_head=chain[-1].hash)
    assert (result.ok, result.first_bad_seq, result.checked) == (False, 4, 3)
    assert verify(chain, expected_head=chain[-1].hash).ok


def test_reordered_records_are_detected() -> None:
    chain = _chain(5)
    chain[1], chain[2] = chain[2], chain[1]
    result = verify(chain)
    assert (result.ok, result.first_bad_seq, result.index) == (False, 3, 1)


def test_duplicated_record_is_detected() -> None:
    chain = _chain(3)
    result = verify([chain[0], chain[1], chain[1], chain[2]])
    assert (result.ok, result.first_bad_seq, result.index) == (False, 2, 2)
    assert result.reason is not None and "out of order or duplicated" in result.reason


def test_inserted_record_is_detected() -> None:
    chain = _chain(4)
    # A well-formed record spliced in after seq 2, renumbering what follows.
    inserted = append(chain[1], ts=chain[1].ts + 0.1, actor="mallory", action="x", target="y")
    renumbered = [attrs.evolve(r, seq=r.seq + 1) for r in chain[2:]]
    result = verify([*chain[:2], inserted, *renumbered])
    assert (result.ok, result.first_bad_seq, result.index) == (False, 4, 3)
    # Without renumbering the seq sequence itself breaks right after the insert.
    result = verify([*chain[:2], inserted, *chain[2:]])
    assert (result.ok, result.first_bad_seq, result.index) == (False, 3, 3)


def test_unencodable_contents_are_reported_not_raised() -> None:
    chain = _chain(2)
    chain[1] = attrs.evolve(chain[1], details={"x": float("nan")})
    result = verify(chain)
    assert (result.ok, result.first_bad_seq) == (False, 2)
    assert result.reason == "contents are not canonically encodable"


def test_verify_a_window_after_a_trusted_record() -> None:
    chain = _chain(6)
    assert verify(chain[3:], after=chain[2]).ok
    result = verify(chain[4:], after=chain[2])
    assert (result.ok, result.first_bad_seq) == (False, 5)


@given(st.integers(2, 12), st.data())
def test_any_single_tampering_is_detected_at_or_before_the_next_record(
    n: int, data: st.DataObject
) -> None:
    chain = _chain(n)
    i = data.draw(st.integers(0, n - 1), label="index")
    kind = data.draw(st.sampled_from(["edit", "rehash", "remove", "swap", "insert"]))
    tampered = list(chain)
    if kind == "edit":
        tampered[i] = attrs.evolve(chain[i], target="elsewhere")
        expected_bad = chain[i].seq
    elif kind == "rehash":
        tampered[i] = _rehash(chain[i], action="forged")
        expected_bad = chain[i].seq + 1
    elif kind == "remove":
        del tampered[i]
        # The next record no longer fits; with none left, the anchor names the gap.
        expected_bad = chain[i].seq + 1 if i < n - 1 else chain[i].seq
    elif kind == "swap":
        j = data.draw(st.integers(0, n - 1).filter(lambda j: j != i), label="other")
        tampered[i], tampered[j] = tampered[j], tampered[i]
        expected_bad = tampered[min(i, j)].seq
    else:
        prev = chain[i - 1] if i else None
        forged = append(prev, ts=0.0, actor="mallory", action="x", target="y")
        tampered.insert(i, forged)
        expected_bad = chain[i].seq
    result = verify(tampered, expected_head=chain[-1].hash)
    assert not result.ok
    assert result.first_bad_seq == expected_bad
