"""Webhook signatures: ``Tandem-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "t.body">``.

A receiver recomputes the HMAC over the timestamp, a dot and the raw body with
the endpoint's secret, compares in constant time, and rejects a timestamp older
than its tolerance (5 minutes by default) so a captured request cannot be
replayed later; the event ``id`` de-duplicates retries.
"""

from __future__ import annotations

import hashlib
import hmac

HEADER = "Tandem-Signature"
DEFAULT_TOLERANCE = 300.0


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The header value for ``body`` sent at ``timestamp`` (unix seconds)."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify(
    secret: str, body: bytes, header: str, *, now: float, tolerance: float = DEFAULT_TOLERANCE
) -> bool:
    """True if ``header`` signs ``body`` with ``secret`` and is not older than ``tolerance``."""
    parts: dict[str, list[str]] = {}
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        parts.setdefault(key, []).append(value)
    try:
        timestamp = int(parts["t"][0])
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > tolerance:
        return False
    expected = sign(secret, body, timestamp).split("v1=", 1)[1]
    return any(hmac.compare_digest(expected, given) for given in parts.get("v1", []))
