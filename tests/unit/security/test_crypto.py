from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runtime.security.crypto import (
    KEY_BYTES,
    NONCE_BYTES,
    DecryptionError,
    Keyring,
    key_id_of,
    new_key_b64,
    parse_keys,
)

K1 = bytes(range(32))
K2 = bytes(range(32, 64))
RING = Keyring({"k1": K1, "k2": K2}, current="k2")


@given(st.binary(max_size=2048), st.binary(max_size=64))
def test_round_trip(plaintext: bytes, aad: bytes) -> None:
    envelope = RING.encrypt(plaintext, aad)
    assert RING.decrypt(envelope, aad) == plaintext
    assert plaintext not in envelope[2 + 2 + NONCE_BYTES :] or len(plaintext) < 4


@given(st.binary(min_size=1, max_size=256), st.data())
def test_any_single_bit_flip_fails(plaintext: bytes, data: st.DataObject) -> None:
    envelope = bytearray(RING.encrypt(plaintext, b"row-1"))
    index = data.draw(st.integers(0, len(envelope) - 1))
    bit = data.draw(st.integers(0, 7))
    envelope[index] ^= 1 << bit
    with pytest.raises(DecryptionError):
        RING.decrypt(bytes(envelope), b"row-1")


@given(st.binary(max_size=256), st.integers(min_value=0))
def test_truncation_fails(plaintext: bytes, cut: int) -> None:
    envelope = RING.encrypt(plaintext, b"")
    shorter = envelope[: cut % len(envelope)]
    with pytest.raises(DecryptionError):
        RING.decrypt(shorter, b"")


def test_wrong_aad_fails() -> None:
    envelope = RING.encrypt(b"secret", b"session-1")
    with pytest.raises(DecryptionError, match="authentication"):
        RING.decrypt(envelope, b"session-2")


def test_envelope_layout_names_the_key() -> None:
    envelope = RING.encrypt(b"hello", b"")
    assert envelope[:4] == b"\x01\x02k2"
    assert len(envelope) == 4 + NONCE_BYTES + len(b"hello") + 16
    assert key_id_of(envelope) == "k2"
    assert RING.encrypt(b"hello", b"") != envelope  # fresh nonce each time


def test_rotation_old_envelopes_still_decrypt_and_are_flagged() -> None:
    old_ring = Keyring({"k1": K1}, current="k1")
    old = old_ring.encrypt(b"data", b"aad")
    assert not old_ring.needs_rotation(old)
    assert RING.needs_rotation(old)
    assert RING.decrypt(old, b"aad") == b"data"
    new = RING.encrypt(RING.decrypt(old, b"aad"), b"aad")
    assert not RING.needs_rotation(new)
    # A ring that dropped k2 can no longer read the re-encrypted data.
    with pytest.raises(DecryptionError, match="not in the keyring"):
        old_ring.decrypt(new, b"aad")


def test_swapping_key_id_in_header_fails() -> None:
    # Same key material under two names: the header is authenticated, so relabelling fails.
    ring = Keyring({"ka": K1, "kb": K1}, current="ka")
    envelope = ring.encrypt(b"x", b"")
    relabelled = envelope[:2] + b"kb" + envelope[4:]
    with pytest.raises(DecryptionError):
        ring.decrypt(relabelled, b"")


@pytest.mark.parametrize(
    ("envelope", "message"),
    [
        (b"", "truncated"),
        (b"\x01", "truncated"),
        (b"\x02\x02k2" + bytes(40), "version"),
        (b"\x01\x05k2", "truncated"),
        (b"\x01\x02k\xff" + bytes(40), "malformed"),
        (b"\x01\x02k2" + bytes(20), "truncated"),
        (b"\x01\x02k9" + bytes(40), "not in the keyring"),
    ],
)
def test_malformed_envelopes(envelope: bytes, message: str) -> None:
    with pytest.raises(DecryptionError, match=message):
        RING.decrypt(envelope, b"")


def test_keyring_validation_and_repr_hides_keys() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        Keyring({"k1": b"short"}, current="k1")
    with pytest.raises(ValueError, match="not in the keyring"):
        Keyring({"k1": K1}, current="k2")
    with pytest.raises(ValueError, match="key id"):
        Keyring({"bad id": K1}, current="bad id")
    assert K1.hex() not in repr(RING) and repr(K1) not in repr(RING)
    assert "k2" in repr(RING)


def test_parse_keys_from_config() -> None:
    b1 = base64.b64encode(K1).decode()
    b2 = base64.urlsafe_b64encode(K2).decode().rstrip("=")
    assert parse_keys(f" k1:{b1} , k2:{b2} ,") == {"k1": K1, "k2": K2}
    ring = Keyring.from_config(f"k1:{b1},k2:{b2}", current="k1")
    assert ring.current == "k1"
    assert ring.decrypt(ring.encrypt(b"z", b""), b"") == b"z"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "no encryption keys"),
        (" , ", "no encryption keys"),
        ("k1", "id:base64key"),
        ("k1:!!!notbase64", "not valid base64"),
        ("k1:" + base64.b64encode(b"x" * 16).decode(), "32 bytes"),
        ("bad id:" + base64.b64encode(K1).decode(), "key id"),
        ("k1:{0},k1:{0}".format(base64.b64encode(K1).decode()), "twice"),
    ],
)
def test_parse_keys_rejects_bad_config(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        parse_keys(spec)
    assert "!!!notbase64" not in str(info.value)


def test_new_key_is_usable_and_random() -> None:
    a, b = new_key_b64(), new_key_b64()
    assert a != b
    assert len(parse_keys(f"k:{a}")["k"]) == KEY_BYTES
