"""Security core: pure functions and values, clock injected, no I/O, no trio.

The audit chain's functions (``append``, ``verify``, ``chain_hash``) are used
through the module, ``runtime.security.audit``, as their names are generic.
"""

from runtime.security.audit import AuditRecord, VerifyResult
from runtime.security.crypto import DecryptionError, Keyring, parse_keys
from runtime.security.permissions import (
    Op,
    PermissionDenied,
    Role,
    allowed,
    matrix_markdown,
    require,
    role_for,
)
from runtime.security.ratelimit import Kind, Rate, RateLimiter, RateLimits, TokenBucket
from runtime.security.tokens import (
    AuthError,
    Identity,
    TokenVerifier,
    guest_identity,
    mint_token,
)
from runtime.security.validation import JsonLimitError, Limits, check_json_limits, valid_id

__all__ = [
    "AuditRecord",
    "AuthError",
    "DecryptionError",
    "Identity",
    "JsonLimitError",
    "Keyring",
    "Kind",
    "Limits",
    "Op",
    "PermissionDenied",
    "Rate",
    "RateLimiter",
    "RateLimits",
    "Role",
    "TokenBucket",
    "TokenVerifier",
    "VerifyResult",
    "allowed",
    "check_json_limits",
    "guest_identity",
    "matrix_markdown",
    "mint_token",
    "parse_keys",
    "require",
    "role_for",
    "valid_id",
]
