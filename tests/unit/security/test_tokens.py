from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from runtime.security.tokens import (
    MAX_TOKEN_LENGTH,
    AuthError,
    Identity,
    TokenVerifier,
    guest_identity,
    mint_token,
)

SECRET = "s" * 32
NOW = 1_700_000_000.0

_RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
_RSA_OTHER = rsa.generate_private_key(public_exponent=65537, key_size=2048)
_ED = ed25519.Ed25519PrivateKey.generate()


def _pem(private: Any) -> str:
    data: bytes = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return data.decode()


RSA_PEM = _pem(_RSA)
ED_PEM = _pem(_ED)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _hand_made(header: dict[str, Any], claims: dict[str, Any], hmac_key: bytes | None) -> str:
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    sig = b""
    if hmac_key is not None:
        sig = hmac.new(hmac_key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(sig)}"


def _claims(**extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"sub": "alice", "iat": int(NOW), "exp": int(NOW) + 3600}
    base.update(extra)
    return {k: v for k, v in base.items() if v is not None}


def _expect(code: str, verifier: TokenVerifier, token: str, now: float = NOW) -> AuthError:
    with pytest.raises(AuthError) as info:
        verifier.verify(token, now=now)
    assert info.value.code == code
    return info.value


def test_mint_then_verify_round_trip() -> None:
    token = mint_token(
        SECRET, "alice", name="Alice A.", now=NOW, ttl_s=600, grants={"session-1": "editor"}
    )
    ident = TokenVerifier(hs256_secret=SECRET).verify(token, now=NOW + 1)
    assert ident == Identity(
        user_id="alice",
        name="Alice A.",
        guest=False,
        grants={"session-1": "editor"},
        expires_at=NOW + 600,
    )


def test_name_defaults_to_sub_and_grants_to_empty() -> None:
    ident = TokenVerifier(hs256_secret=SECRET).verify(mint_token(SECRET, "bob", now=NOW), now=NOW)
    assert (ident.name, ident.grants, ident.guest) == ("bob", {}, False)


def test_expiry_boundary_honours_leeway() -> None:
    v = TokenVerifier(hs256_secret=SECRET, leeway_s=30)
    token = mint_token(SECRET, "alice", now=NOW, ttl_s=100)
    exp = NOW + 100
    assert v.verify(token, now=exp + 30 - 0.001).user_id == "alice"
    _expect("token_expired", v, token, now=exp + 30)
    _expect("token_expired", v, token, now=exp + 10_000)


def test_zero_leeway_expires_exactly_at_exp() -> None:
    v = TokenVerifier(hs256_secret=SECRET, leeway_s=0)
    token = mint_token(SECRET, "alice", now=NOW, ttl_s=100)
    assert v.verify(token, now=NOW + 99.999).user_id == "alice"
    _expect("token_expired", v, token, now=NOW + 100)


def test_nbf_and_iat_in_the_future_are_rejected_beyond_leeway() -> None:
    v = TokenVerifier(hs256_secret=SECRET, leeway_s=30)
    nbf = jwt.encode(_claims(nbf=int(NOW) + 60), SECRET, algorithm="HS256")
    _expect("token_invalid", v, nbf)
    assert v.verify(nbf, now=NOW + 31).user_id == "alice"
    iat = jwt.encode(_claims(iat=int(NOW) + 60), SECRET, algorithm="HS256")
    assert "future" in _expect("token_invalid", v, iat).message
    backwards = jwt.encode(_claims(iat=int(NOW) + 10, exp=int(NOW) + 5), SECRET, algorithm="HS256")
    _expect("token_invalid", v, backwards)


def test_exp_is_required_by_default_and_optional_when_configured() -> None:
    token = jwt.encode(_claims(exp=None), SECRET, algorithm="HS256")
    _expect("token_invalid", TokenVerifier(hs256_secret=SECRET), token)
    ident = TokenVerifier(hs256_secret=SECRET, require_exp=False).verify(token, now=NOW)
    assert ident.expires_at is None
    bare = jwt.encode({"sub": "alice"}, SECRET, algorithm="HS256")  # no iat/nbf/exp at all
    assert (
        TokenVerifier(hs256_secret=SECRET, require_exp=False).verify(bare, now=NOW).name == "alice"
    )


@pytest.mark.parametrize("bad", [True, "12345", [1], float("nan")])
def test_non_numeric_time_claims_are_rejected(bad: object) -> None:
    v = TokenVerifier(hs256_secret=SECRET)
    token = _hand_made({"alg": "HS256", "typ": "JWT"}, _claims(exp=bad), SECRET.encode())
    _expect("token_invalid", v, token)


def test_alg_none_is_rejected() -> None:
    token = _hand_made({"alg": "none", "typ": "JWT"}, _claims(), None)
    _expect("token_invalid", TokenVerifier(hs256_secret=SECRET), token)
    _expect("token_invalid", TokenVerifier(public_keys_pem=[RSA_PEM]), token)


def test_algorithm_confusion_hs256_signed_with_public_key_is_rejected() -> None:
    # The classic attack: HMAC the token with the server's *public* PEM as secret.
    forged = _hand_made({"alg": "HS256", "typ": "JWT"}, _claims(), RSA_PEM.encode())
    err = _expect("token_invalid", TokenVerifier(public_keys_pem=[RSA_PEM]), forged)
    assert "algorithm" in err.message
    # With an HS256 secret also configured, the public key is still never the HMAC key.
    both = TokenVerifier(hs256_secret=SECRET, public_keys_pem=[RSA_PEM])
    _expect("token_invalid", both, forged)


def test_rs256_and_eddsa_public_keys_verify_their_own_algorithms() -> None:
    v = TokenVerifier(public_keys_pem=[RSA_PEM, ED_PEM])
    assert v.algorithms == frozenset({"RS256", "EdDSA"})
    assert v.verify(jwt.encode(_claims(), _RSA, algorithm="RS256"), now=NOW).user_id == "alice"
    assert v.verify(jwt.encode(_claims(), _ED, algorithm="EdDSA"), now=NOW).user_id == "alice"
    # Signed by an unknown key, or with an algorithm no configured key allows.
    _expect("token_invalid", v, jwt.encode(_claims(), _RSA_OTHER, algorithm="RS256"))
    _expect("token_invalid", v, jwt.encode(_claims(), _RSA, algorithm="PS256"))
    _expect("token_invalid", v, jwt.encode(_claims(), SECRET, algorithm="HS256"))


def test_tampered_payload_fails_signature() -> None:
    token = mint_token(SECRET, "alice", now=NOW)
    header, _, sig = token.split(".")
    forged_payload = _b64(json.dumps(_claims(sub="mallory")).encode())
    err = _expect(
        "token_invalid", TokenVerifier(hs256_secret=SECRET), f"{header}.{forged_payload}.{sig}"
    )
    assert "signature" in err.message
    _expect("token_invalid", TokenVerifier(hs256_secret="x" * 40), token)


@pytest.mark.parametrize("token", ["", "   "])
def test_missing_token_is_auth_required(token: str) -> None:
    _expect("auth_required", TokenVerifier(hs256_secret=SECRET), token)


@pytest.mark.parametrize("token", ["garbage", "a.b.c", "x" * (MAX_TOKEN_LENGTH + 1)])
def test_malformed_tokens_are_invalid(token: str) -> None:
    _expect("token_invalid", TokenVerifier(hs256_secret=SECRET), token)


def test_undecodable_payload_with_valid_signature_is_invalid() -> None:
    header = _b64(json.dumps({"alg": "HS256"}).encode())
    payload = _b64(b"[1, 2]")  # valid JSON, but not an object
    sig = hmac.new(SECRET.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    _expect("token_invalid", TokenVerifier(hs256_secret=SECRET), f"{header}.{payload}.{_b64(sig)}")


def test_issuer_and_audience() -> None:
    v = TokenVerifier(hs256_secret=SECRET, issuer="https://idp", audience="tandem")
    good = mint_token(SECRET, "alice", now=NOW, issuer="https://idp", audience="tandem")
    assert v.verify(good, now=NOW).user_id == "alice"
    as_list = jwt.encode(_claims(iss="https://idp", aud=["other", "tandem"]), SECRET)
    assert v.verify(as_list, now=NOW).user_id == "alice"
    for bad in (
        mint_token(SECRET, "alice", now=NOW, issuer="https://evil", audience="tandem"),
        mint_token(SECRET, "alice", now=NOW, audience="tandem"),
        mint_token(SECRET, "alice", now=NOW, issuer="https://idp", audience="other"),
        mint_token(SECRET, "alice", now=NOW, issuer="https://idp"),
        jwt.encode(_claims(iss="https://idp", aud={"tandem": 1}), SECRET),
    ):
        _expect("token_invalid", v, bad)


def test_token_with_audience_is_rejected_when_none_configured() -> None:
    token = mint_token(SECRET, "alice", now=NOW, audience="another-service")
    assert "audience" in _expect("token_invalid", TokenVerifier(hs256_secret=SECRET), token).message


@pytest.mark.parametrize(
    "claims",
    [
        _claims(sub=None),
        _claims(sub=""),
        _claims(sub="a" * 129),
        _claims(sub="alice bob"),
        _claims(sub="alice\n"),
        _claims(sub=42),
        _claims(name=""),
        _claims(name="n" * 129),
        _claims(name="bell\x07"),
        _claims(name=7),
        _claims(grants={"s1": "god"}),
        _claims(grants={"bad id": "viewer"}),
        _claims(grants=["s1"]),
        _claims(grants={f"s{i}": "viewer" for i in range(257)}),
    ],
)
def test_invalid_identity_claims_are_rejected(claims: dict[str, Any]) -> None:
    token = jwt.encode(claims, SECRET, algorithm="HS256")
    _expect("token_invalid", TokenVerifier(hs256_secret=SECRET), token)


def test_sub_at_max_length_with_full_alphabet_is_accepted() -> None:
    sub = ("aZ09_.:@-" * 20)[:128]
    ident = TokenVerifier(hs256_secret=SECRET).verify(mint_token(SECRET, sub, now=NOW), now=NOW)
    assert ident.user_id == sub


def _jwk(private: Any, **extra: Any) -> dict[str, Any]:
    alg = "RS256" if isinstance(private, rsa.RSAPrivateKey) else "EdDSA"
    data: dict[str, Any] = json.loads(jwt.get_algorithm_by_name(alg).to_jwk(private.public_key()))
    data.update(extra)
    return data


def test_jwks_selects_key_by_kid() -> None:
    jwks = {
        "keys": [
            _jwk(_RSA, kid="k1"),
            _jwk(_RSA_OTHER, kid="k2", alg="RS256"),
            _jwk(_ED, kid="k3"),
            {"kty": "RSA", "use": "enc", "n": "x", "e": "AQAB"},  # encryption keys ignored
        ]
    }
    v = TokenVerifier(jwks=jwks)
    t2 = jwt.encode(_claims(sub="bob"), _RSA_OTHER, algorithm="RS256", headers={"kid": "k2"})
    assert v.verify(t2, now=NOW).user_id == "bob"
    t3 = jwt.encode(_claims(), _ED, algorithm="EdDSA", headers={"kid": "k3"})
    assert v.verify(t3, now=NOW).user_id == "alice"
    # No kid: any key of the token's algorithm may verify it.
    assert v.verify(jwt.encode(_claims(), _RSA, algorithm="RS256"), now=NOW).user_id == "alice"
    # A kid naming the wrong key fails even though another configured key would verify.
    wrong = jwt.encode(_claims(), _RSA, algorithm="RS256", headers={"kid": "k2"})
    _expect("token_invalid", v, wrong)
    unknown = jwt.encode(_claims(), _RSA, algorithm="RS256", headers={"kid": "nope"})
    assert "unknown key id" in _expect("token_invalid", v, unknown).message


@pytest.mark.parametrize(
    "jwks",
    [
        {"keys": "nope"},
        {"keys": ["nope"]},
        {"keys": [{"kty": "oct", "k": _b64(SECRET.encode())}]},
        {"keys": [{"kty": "RSA"}]},
        {"keys": [{"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}]},
        {"keys": [_jwk(_RSA, alg="HS256")]},
        {"keys": [_jwk(_RSA, alg="PS256")]},  # parses as RSA, but only RS256 is allowed
    ],
)
def test_bad_jwks_is_a_config_error(jwks: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        TokenVerifier(jwks=jwks)


def test_bad_key_config_is_rejected() -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    for pem in (_pem(small), _pem(ec_key)):
        with pytest.raises(ValueError):
            TokenVerifier(public_keys_pem=[pem])
    with pytest.raises(ValueError):
        TokenVerifier()
    with pytest.raises(ValueError):
        TokenVerifier(hs256_secret="short")
    with pytest.raises(ValueError):
        TokenVerifier(hs256_secret=SECRET, leeway_s=-1)


def test_mint_token_validates_inputs() -> None:
    with pytest.raises(ValueError):
        mint_token("short", "alice", now=NOW)
    with pytest.raises(ValueError):
        mint_token(SECRET, "not valid", now=NOW)
    with pytest.raises(ValueError):
        mint_token(SECRET, "alice", now=NOW, ttl_s=0)
    with pytest.raises(ValueError):
        mint_token(SECRET, "alice", now=NOW, name="x" * 129)
    with pytest.raises(ValueError):
        mint_token(SECRET, "alice", now=NOW, grants={"s": "admin"})


def test_guest_identity() -> None:
    ident = guest_identity("x7Kq2")
    assert ident == Identity(
        user_id="guest-x7Kq2", name="Guest x7Kq2", guest=True, grants={}, expires_at=None
    )
    for bad in ("", "has space", "a" * 130):
        with pytest.raises(ValueError):
            guest_identity(bad)
