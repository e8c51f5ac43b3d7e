"""Sealing stored values at rest: JSON text in, an AES-256-GCM envelope out.

A thin layer over :class:`runtime.security.crypto.Keyring` for the stores. The
additional authenticated data (AAD) names the row a value belongs to — build it
with :func:`row_aad` from the table and the row's key, e.g.
``row_aad("session_events", session_id, seq)`` — so a ciphertext copied into
another row (or another table) fails to open instead of showing the wrong data.

Other stores (comment bodies, thread metadata) reuse :class:`Sealer` with their
own table name in the AAD. Keys come from ``TANDEM_ENCRYPTION_KEYS`` and
``TANDEM_ENCRYPTION_KEY_CURRENT`` (see :func:`keyring_from_settings`).
"""

from __future__ import annotations

import attrs

from runtime.config import ConfigError, Settings
from runtime.security.crypto import DecryptionError, Keyring, key_id_of, parse_keys

__all__ = [
    "DecryptionError",
    "EncryptionUnavailable",
    "Sealer",
    "keyring_from_settings",
    "row_aad",
]


class EncryptionUnavailable(Exception):
    """A value must be stored encrypted but no encryption keys are configured."""

    def __init__(self, message: str = "no encryption keys configured") -> None:
        super().__init__(message)


def row_aad(table: str, *key: str | int) -> bytes:
    """AAD binding a sealed value to one row: the table and the row's key, unambiguously.

    Each part is length-prefixed, so ``("a:b", 1)`` and ``("a", ":b1")`` differ.
    """
    out = bytearray(b"tandem.row.v1")
    for part in (table, *key):
        raw = str(part).encode("utf-8")
        out += len(raw).to_bytes(4, "big") + raw
    return bytes(out)


@attrs.frozen
class Sealer:
    """Encrypts JSON text under the keyring's current key; opens any key it holds."""

    keyring: Keyring

    @property
    def current_key_id(self) -> str:
        return self.keyring.current

    def seal(self, value_json: str, aad: bytes) -> bytes:
        """The envelope for ``value_json`` (JSON text) bound to ``aad``."""
        return self.keyring.encrypt(value_json.encode("utf-8"), aad)

    def open(self, envelope: bytes, aad: bytes) -> str:
        """The JSON text sealed in ``envelope``; raises ``DecryptionError``."""
        try:
            return self.keyring.decrypt(bytes(envelope), aad).decode("utf-8")
        except UnicodeDecodeError:
            raise DecryptionError("sealed value is not UTF-8 text") from None

    def reseal(self, envelope: bytes, aad: bytes) -> bytes:
        """``envelope`` re-encrypted under the current key (same plaintext, same AAD)."""
        return self.keyring.encrypt(self.keyring.decrypt(bytes(envelope), aad), aad)

    def needs_rotation(self, envelope: bytes) -> bool:
        return self.keyring.needs_rotation(bytes(envelope))

    @staticmethod
    def key_id_of(envelope: bytes) -> str:
        return key_id_of(bytes(envelope))


def keyring_from_settings(settings: Settings) -> Keyring | None:
    """The configured keyring, or None when ``encryption_keys`` is unset.

    With one key it is also the current one; with several,
    ``encryption_key_current`` must name one. Raises ``ConfigError``.
    """
    spec = (settings.encryption_keys or "").strip()
    if not spec:
        if settings.encryption_key_current:
            raise ConfigError("encryption_key_current is set but encryption_keys is empty")
        return None
    try:
        keys = parse_keys(spec)
    except ValueError as exc:
        raise ConfigError(f"encryption_keys: {exc}") from None
    current = settings.encryption_key_current
    if not current:
        if len(keys) != 1:
            raise ConfigError("encryption_key_current must name one of the encryption_keys")
        current = next(iter(keys))
    if current not in keys:
        raise ConfigError(f"encryption_key_current {current!r} is not in encryption_keys")
    return Keyring(keys, current)


def sealer_from_settings(settings: Settings) -> Sealer | None:
    keyring = keyring_from_settings(settings)
    return None if keyring is None else Sealer(keyring)
