"""Encryption at rest: AES-256-GCM envelopes that name their key, for rotation.

Envelope layout (all lengths in bytes)::

    version (1) = 0x01 | key-id length n (1) | key id (n, ASCII) | nonce (12) | ciphertext+tag

The header (version, key id) is authenticated together with the caller's AAD,
so neither can be swapped without decryption failing. Nonces are random, so a
single key must encrypt fewer than 2**32 messages (NIST SP 800-38D); rotate
long before that by adding a key and making it current.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Mapping

import attrs
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

VERSION = 1
KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
_KEY_ID_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}", re.ASCII)


class DecryptionError(Exception):
    """The envelope is malformed, names an unknown key, or fails authentication."""


def _check_key_id(key_id: str) -> bytes:
    if not _KEY_ID_RE.fullmatch(key_id):
        raise ValueError(f"key id {key_id!r} must be 1..64 chars of [A-Za-z0-9_.-]")
    return key_id.encode("ascii")


def _copy_keys(keys: Mapping[str, bytes]) -> dict[str, bytes]:
    # A private copy, so later changes to the caller's mapping cannot alter the ring.
    return dict(keys)


@attrs.frozen
class Keyring:
    """Named 256-bit keys; ``current`` encrypts, any of them decrypts."""

    # repr=False: a keyring printed in a log or traceback must not leak keys.
    keys: Mapping[str, bytes] = attrs.field(repr=False, converter=_copy_keys)
    current: str
    _aeads: dict[str, AESGCM] = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        for key_id, key in self.keys.items():
            _check_key_id(key_id)
            if len(key) != KEY_BYTES:
                raise ValueError(f"key {key_id!r} must be {KEY_BYTES} bytes, got {len(key)}")
        if self.current not in self.keys:
            raise ValueError(f"current key {self.current!r} is not in the keyring")
        object.__setattr__(self, "_aeads", {k: AESGCM(v) for k, v in self.keys.items()})

    @classmethod
    def from_config(cls, keys_spec: str, current: str) -> Keyring:
        """From ``TANDEM_ENCRYPTION_KEYS``-style text and the current key's id."""
        return cls(parse_keys(keys_spec), current)

    def encrypt(self, plaintext: bytes, aad: bytes) -> bytes:
        """Encrypt under the current key. ``aad`` (e.g. the row's id) must match on decrypt."""
        header = _header(self.current)
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._aeads[self.current].encrypt(nonce, plaintext, header + aad)
        return header + nonce + sealed

    def decrypt(self, envelope: bytes, aad: bytes) -> bytes:
        """Decrypt with the key the envelope names, or raise :class:`DecryptionError`."""
        key_id, body_start = _parse_header(envelope)
        aead = self._aeads.get(key_id)
        if aead is None:
            raise DecryptionError(f"envelope key {key_id!r} is not in the keyring")
        if len(envelope) - body_start < NONCE_BYTES + TAG_BYTES:
            raise DecryptionError("envelope is truncated")
        nonce = envelope[body_start : body_start + NONCE_BYTES]
        try:
            return aead.decrypt(
                nonce, envelope[body_start + NONCE_BYTES :], envelope[:body_start] + aad
            )
        except InvalidTag:
            raise DecryptionError("envelope failed authentication") from None

    def needs_rotation(self, envelope: bytes) -> bool:
        """True if ``envelope`` was not sealed with the current key (re-encrypt it)."""
        return key_id_of(envelope) != self.current


def _header(key_id: str) -> bytes:
    raw = _check_key_id(key_id)
    return bytes([VERSION, len(raw)]) + raw


def _parse_header(envelope: bytes) -> tuple[str, int]:
    if len(envelope) < 2:
        raise DecryptionError("envelope is truncated")
    if envelope[0] != VERSION:
        raise DecryptionError(f"unknown envelope version {envelope[0]}")
    n = envelope[1]
    raw = envelope[2 : 2 + n]
    if len(raw) != n:
        raise DecryptionError("envelope is truncated")
    key_id = raw.decode("ascii", errors="replace")
    if not _KEY_ID_RE.fullmatch(key_id):
        raise DecryptionError("envelope key id is malformed")
    return key_id, 2 + n


def key_id_of(envelope: bytes) -> str:
    """The key id an envelope was sealed with (no decryption)."""
    return _parse_header(envelope)[0]


def parse_keys(spec: str) -> dict[str, bytes]:
    """Parse ``"k1:BASE64,k2:BASE64"`` (standard or URL-safe base64 of 32 bytes)."""
    keys: dict[str, bytes] = {}
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        key_id, sep, encoded = part.partition(":")
        key_id = key_id.strip()
        if not sep:
            raise ValueError(f"key entry for {key_id!r} must look like 'id:base64key'")
        _check_key_id(key_id)
        if key_id in keys:
            raise ValueError(f"key id {key_id!r} appears twice")
        encoded = encoded.strip().replace("-", "+").replace("_", "/")
        try:
            key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
        except binascii.Error:
            # Never echo the value: it is (part of) a secret.
            raise ValueError(f"key {key_id!r} is not valid base64") from None
        if len(key) != KEY_BYTES:
            raise ValueError(f"key {key_id!r} must decode to {KEY_BYTES} bytes, got {len(key)}")
        keys[key_id] = key
    if not keys:
        raise ValueError("no encryption keys configured")
    return keys


def new_key_b64() -> str:
    """A fresh random 256-bit key, base64-encoded for the keys config."""
    return base64.b64encode(AESGCM.generate_key(bit_length=256)).decode("ascii")
