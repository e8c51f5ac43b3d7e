"""Encryption at rest for comments: sealed bodies, sealed thread metadata, a keyed index.

With a :class:`Sealer` (keys configured), the comment stores keep

* a comment's body as an envelope bound to ``row_aad("comments", session_id, id)``;
* a thread's metadata *and* anchor, together as ``{"metadata": ..., "anchor": ...}``,
  as one envelope bound to ``row_aad("comment_threads", session_id, id)``;
* beside it ``metadata_idx``: keyed HMAC-SHA256 digests (truncated to 128 bits) of each
  top-level metadata pair and of the anchor, so that ``list_threads`` can still filter
  on ``metadata.<key> == value`` and on the anchor in the database without seeing
  either. The HMAC key is derived from the row's encryption key (``key_id``), so the
  digests rotate with the envelope and a query computes one digest set per key held.

Digests reveal equality only: two threads of any session with the same pair under
the same key have the same digest. Values are compared as jsonb compares them
(object key order is irrelevant; ``1`` equals ``1.0``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping
from typing import Any

from runtime.gateways.encryption import Sealer, row_aad
from runtime.gateways.memory import decode_json, encode_json

JSON = Any
_INDEX_LABEL = b"tandem.comment_threads.metadata_idx.v1"


def comment_aad(session_id: str, comment_id: str) -> bytes:
    return row_aad("comments", session_id, comment_id)


def thread_aad(session_id: str, thread_id: str) -> bytes:
    return row_aad("comment_threads", session_id, thread_id)


def seal_body(sealer: Sealer, session_id: str, comment_id: str, body: str) -> bytes:
    return sealer.seal(encode_json(body), comment_aad(session_id, comment_id))


def open_body(sealer: Sealer, session_id: str, comment_id: str, envelope: bytes) -> str:
    body = decode_json(sealer.open(envelope, comment_aad(session_id, comment_id)))
    assert isinstance(body, str)
    return body


def seal_thread(
    sealer: Sealer, session_id: str, thread_id: str, metadata: JSON, anchor: JSON
) -> bytes:
    value = encode_json({"metadata": metadata, "anchor": anchor})
    return sealer.seal(value, thread_aad(session_id, thread_id))


def open_thread(
    sealer: Sealer, session_id: str, thread_id: str, envelope: bytes
) -> tuple[JSON, JSON]:
    """``(metadata, anchor)`` sealed in ``envelope``."""
    value = decode_json(sealer.open(envelope, thread_aad(session_id, thread_id)))
    return value["metadata"], value["anchor"]


def _canonical(value: JSON) -> JSON:
    if isinstance(value, bool) or value is None or isinstance(value, str | int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else value
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items()}
    return [_canonical(v) for v in value]


def _canonical_text(value: JSON) -> bytes:
    normalized = _canonical(decode_json(encode_json(value)))
    return json.dumps(
        normalized, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode()


def _index_key(sealer: Sealer, key_id: str) -> bytes:
    return hmac.new(sealer.keyring.keys[key_id], _INDEX_LABEL, hashlib.sha256).digest()


def _digest(index_key: bytes, kind: bytes, *parts: bytes) -> str:
    msg = bytearray(kind)
    for part in parts:
        msg += len(part).to_bytes(4, "big") + part
    return hmac.new(index_key, bytes(msg), hashlib.sha256).hexdigest()[:32]


def metadata_digests(
    sealer: Sealer,
    key_id: str,
    metadata: Mapping[str, JSON],
    anchor: JSON = None,
    *,
    with_anchor: bool = True,
) -> list[str]:
    """The index entries for ``metadata``'s top-level pairs (and the anchor) under ``key_id``."""
    index_key = _index_key(sealer, key_id)
    out = [
        _digest(index_key, b"m", key.encode(), _canonical_text(value))
        for key, value in metadata.items()
    ]
    if with_anchor:
        out.append(_digest(index_key, b"a", _canonical_text(anchor)))
    return sorted(set(out))


def filter_digests(
    sealer: Sealer, metadata: Mapping[str, JSON], anchor: JSON, match_anchor: bool
) -> Iterable[tuple[str, list[str]]]:
    """For each key held: ``(key_id, digests a matching row under that key contains)``."""
    for key_id in sealer.keyring.keys:
        yield key_id, metadata_digests(sealer, key_id, metadata, anchor, with_anchor=match_anchor)
