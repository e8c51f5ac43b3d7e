"""Authentication: JWT verification into an :class:`Identity`, and HS256 minting.

PyJWT checks only the signature here; every time-based claim is checked against
the caller's ``now`` so behaviour is deterministic and testable.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import attrs
import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from runtime.security.validation import valid_id

AuthErrorCode = Literal["auth_required", "token_invalid", "token_expired"]

# Role names a token may grant. Kept here (not imported from permissions) to
# avoid an import cycle; a unit test asserts it equals permissions.Role.
GRANTABLE_ROLES = frozenset({"owner", "editor", "commenter", "viewer", "none"})

MAX_TOKEN_LENGTH = 8192  # bounds parsing work on hostile input
MAX_NAME_LENGTH = 128
MAX_GRANTS = 256
MIN_HS256_SECRET_BYTES = 32  # RFC 7518 3.2: HMAC key at least the hash size

_HS256 = "HS256"
_RS256 = "RS256"
_EDDSA = "EdDSA"
_MIN_RSA_BITS = 2048

_PublicKey = RSAPublicKey | Ed25519PublicKey


class AuthError(Exception):
    """Authentication failed; ``code`` is stable for clients, ``message`` for humans."""

    def __init__(self, code: AuthErrorCode, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code: AuthErrorCode = code
        self.message = message


@attrs.frozen
class Identity:
    """An authenticated (or guest) principal."""

    user_id: str
    name: str
    guest: bool
    grants: Mapping[str, str] = attrs.field(factory=dict)
    expires_at: float | None = None


@attrs.frozen
class _Key:
    alg: str
    kid: str | None
    key: _PublicKey


def _classify(key: object) -> tuple[str, _PublicKey]:
    """The one algorithm a public key may verify; private or other keys are rejected."""
    if isinstance(key, RSAPublicKey):
        if key.key_size < _MIN_RSA_BITS:
            raise ValueError(f"RSA key too small ({key.key_size} bits)")
        return _RS256, key
    if isinstance(key, Ed25519PublicKey):
        return _EDDSA, key
    raise ValueError(f"unsupported public key type {type(key).__name__}; use RSA or Ed25519")


def _load_jwks(jwks: Mapping[str, Any]) -> list[_Key]:
    keys = jwks.get("keys")
    if not isinstance(keys, list):
        raise ValueError("JWKS must be an object with a 'keys' list")
    out: list[_Key] = []
    for jwk in keys:
        if not isinstance(jwk, dict):
            raise ValueError("JWKS entries must be objects")
        if jwk.get("use", "sig") != "sig":
            continue  # encryption keys are not for us
        if jwk.get("kty") == "oct":
            # A shared secret published as a "public" key would let anyone mint tokens.
            raise ValueError("symmetric ('oct') keys are not allowed in a JWKS")
        try:
            parsed = jwt.PyJWK(jwk).key
        except jwt.PyJWTError as e:
            raise ValueError(f"invalid JWK: {e}") from e
        alg, public = _classify(parsed)
        declared = jwk.get("alg")
        if declared is not None and declared != alg:
            raise ValueError(f"JWK alg {declared!r} is not allowed for this key (expected {alg})")
        kid = jwk.get("kid")
        out.append(_Key(alg=alg, kid=kid if isinstance(kid, str) else None, key=public))
    return out


@attrs.frozen
class TokenVerifier:
    """Verifies bearer JWTs against configured keys and claims.

    Allowed algorithms follow from the configured keys only: HS256 with
    ``hs256_secret``; RS256 / EdDSA with RSA / Ed25519 public keys (PEM or JWKS).
    ``none`` is never accepted and an HMAC is never checked with a public key.
    """

    hs256_secret: str | None = None
    public_keys_pem: Sequence[str] = ()
    jwks: Mapping[str, Any] | None = None
    issuer: str | None = None
    audience: str | None = None
    leeway_s: float = 30.0
    require_exp: bool = True
    _keys: tuple[_Key, ...] = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        if self.hs256_secret is not None:
            if len(self.hs256_secret.encode()) < MIN_HS256_SECRET_BYTES:
                raise ValueError(f"hs256_secret must be at least {MIN_HS256_SECRET_BYTES} bytes")
        if self.leeway_s < 0:
            raise ValueError("leeway_s must be >= 0")
        keys: list[_Key] = []
        for pem in self.public_keys_pem:
            alg, key = _classify(load_pem_public_key(pem.encode()))
            keys.append(_Key(alg=alg, kid=None, key=key))
        if self.jwks is not None:
            keys.extend(_load_jwks(self.jwks))
        if self.hs256_secret is None and not keys:
            raise ValueError("TokenVerifier needs an hs256_secret, public keys or a JWKS")
        object.__setattr__(self, "_keys", tuple(keys))

    @property
    def algorithms(self) -> frozenset[str]:
        """The algorithms this verifier accepts."""
        algs = {k.alg for k in self._keys}
        if self.hs256_secret is not None:
            algs.add(_HS256)
        return frozenset(algs)

    def verify(self, token: str, *, now: float) -> Identity:
        """Return the token's identity or raise :class:`AuthError`."""
        if not isinstance(token, str) or not token.strip():
            raise AuthError("auth_required", "a bearer token is required")
        if len(token) > MAX_TOKEN_LENGTH:
            raise AuthError("token_invalid", "token is too long")
        claims = self._verified_claims(token)
        expires_at = self._check_times(claims, now)
        self._check_issuer_audience(claims)
        return _identity_from_claims(claims, expires_at)

    def _verified_claims(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthError("token_invalid", "token is malformed") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms:
            raise AuthError("token_invalid", f"algorithm {alg!r} is not accepted")
        candidates: list[str | _PublicKey]
        if alg == _HS256:
            assert self.hs256_secret is not None  # guaranteed by self.algorithms
            candidates = [self.hs256_secret]
        else:
            kid = header.get("kid")
            same_alg = [k for k in self._keys if k.alg == alg]
            if isinstance(kid, str) and any(k.kid is not None for k in same_alg):
                same_alg = [k for k in same_alg if k.kid == kid]
                if not same_alg:
                    raise AuthError("token_invalid", f"unknown key id {kid!r}")
            candidates = [k.key for k in same_alg]
        for key in candidates:
            try:
                claims = jwt.decode(
                    token,
                    key,
                    algorithms=[alg],  # exactly the header's alg, already allow-listed
                    options={
                        "verify_signature": True,
                        "verify_exp": False,
                        "verify_nbf": False,
                        "verify_iat": False,
                        "verify_iss": False,
                        "verify_aud": False,
                        "verify_sub": False,
                        "verify_jti": False,
                    },
                )
            except jwt.InvalidSignatureError:
                continue
            except jwt.PyJWTError:
                raise AuthError("token_invalid", "token is malformed") from None
            if not isinstance(claims, dict):  # pragma: no cover - PyJWT guarantees a dict
                break
            return claims
        raise AuthError("token_invalid", "signature verification failed")

    def _check_times(self, claims: Mapping[str, Any], now: float) -> float | None:
        leeway = self.leeway_s
        exp = _numeric_claim(claims, "exp")
        if exp is None and self.require_exp:
            raise AuthError("token_invalid", "token has no 'exp' claim")
        if exp is not None and now >= exp + leeway:
            raise AuthError("token_expired", "token has expired")
        nbf = _numeric_claim(claims, "nbf")
        if nbf is not None and now + leeway < nbf:
            raise AuthError("token_invalid", "token is not valid yet ('nbf' in the future)")
        iat = _numeric_claim(claims, "iat")
        if iat is not None:
            if now + leeway < iat:
                raise AuthError("token_invalid", "token was issued in the future ('iat')")
            if exp is not None and iat > exp:
                raise AuthError("token_invalid", "token 'iat' is after its 'exp'")
        return exp

    def _check_issuer_audience(self, claims: Mapping[str, Any]) -> None:
        if self.issuer is not None and claims.get("iss") != self.issuer:
            raise AuthError("token_invalid", "token issuer is not accepted")
        aud = claims.get("aud")
        if self.audience is None:
            # A token scoped to some audience is not meant for a server that has none.
            if aud is not None:
                raise AuthError("token_invalid", "token has an audience but none is configured")
            return
        auds = [aud] if isinstance(aud, str) else aud
        if not isinstance(auds, list) or self.audience not in auds:
            raise AuthError("token_invalid", "token audience is not accepted")


def _numeric_claim(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    # bool is an int subclass; "exp": true must not mean 1970-01-01T00:00:01.
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        raise AuthError("token_invalid", f"claim {name!r} must be a number")
    return float(value)


def _check_name(name: object) -> str:
    if (
        not isinstance(name, str)
        or not 1 <= len(name) <= MAX_NAME_LENGTH
        or any(unicodedata.category(c) == "Cc" for c in name)
    ):
        raise ValueError(f"name must be 1..{MAX_NAME_LENGTH} chars without control characters")
    return name


def _check_grants(grants: object) -> dict[str, str]:
    if not isinstance(grants, Mapping) or len(grants) > MAX_GRANTS:
        raise ValueError(f"grants must be an object of at most {MAX_GRANTS} entries")
    out: dict[str, str] = {}
    for session_id, role in grants.items():
        if not valid_id(session_id):
            raise ValueError(f"grants: invalid session id {session_id!r}")
        if role not in GRANTABLE_ROLES:
            raise ValueError(f"grants: unknown role {role!r}")
        out[session_id] = role
    return out


def _identity_from_claims(claims: Mapping[str, Any], expires_at: float | None) -> Identity:
    sub = claims.get("sub")
    if not valid_id(sub):
        raise AuthError("token_invalid", "claim 'sub' must be 1..128 chars of [A-Za-z0-9_.:@-]")
    assert isinstance(sub, str)
    try:
        name = _check_name(claims.get("name", sub))
        grants = _check_grants(claims.get("grants", {}))
    except ValueError as e:
        raise AuthError("token_invalid", str(e)) from None
    return Identity(user_id=sub, name=name, guest=False, grants=grants, expires_at=expires_at)


def mint_token(
    secret: str,
    user_id: str,
    *,
    name: str | None = None,
    ttl_s: float = 86400,
    now: float,
    grants: Mapping[str, str] | None = None,
    issuer: str | None = None,
    audience: str | None = None,
) -> str:
    """Mint an HS256 token that :meth:`TokenVerifier.verify` accepts (``tandem token``)."""
    if len(secret.encode()) < MIN_HS256_SECRET_BYTES:
        raise ValueError(f"secret must be at least {MIN_HS256_SECRET_BYTES} bytes")
    if not valid_id(user_id):
        raise ValueError("user_id must be 1..128 chars of [A-Za-z0-9_.:@-]")
    if ttl_s <= 0:
        raise ValueError("ttl_s must be positive")
    claims: dict[str, Any] = {"sub": user_id, "iat": int(now), "exp": int(now + ttl_s)}
    if name is not None:
        claims["name"] = _check_name(name)
    if grants:
        claims["grants"] = _check_grants(grants)
    if issuer is not None:
        claims["iss"] = issuer
    if audience is not None:
        claims["aud"] = audience
    return jwt.encode(claims, secret, algorithm=_HS256)


def guest_identity(random_suffix: str) -> Identity:
    """An anonymous guest (dev profile): ``guest-<suffix>``, no grants, no expiry."""
    user_id = f"guest-{random_suffix}"
    if not random_suffix or not valid_id(user_id):
        raise ValueError("random_suffix must be non-empty and from [A-Za-z0-9_.:@-]")
    return Identity(user_id=user_id, name=f"Guest {random_suffix[:8]}", guest=True, grants={})
