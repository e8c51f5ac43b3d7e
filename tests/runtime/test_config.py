"""Settings from flags and environment, production refusals, and token verifier wiring."""

from __future__ import annotations

import json
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from runtime.app import token_verifier
from runtime.config import ConfigError, load_settings, parse_rate_limits
from runtime.security.ratelimit import Rate

GOOD = "f3a9c1d27be84e60a5d9c0b1e2f4a6b8"


def test_flags_override_environment_which_overrides_defaults() -> None:
    settings = load_settings(["--port", "9001"], {"TANDEM_PORT": "9000", "TANDEM_HOST": "0.0.0.0"})
    assert (settings.port, settings.host, settings.presence_timeout) == (9001, "0.0.0.0", 15.0)


def test_bad_values_name_their_source() -> None:
    with pytest.raises(ConfigError, match="TANDEM_PORT"):
        load_settings([], {"TANDEM_PORT": "eighty"})


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "needs TANDEM_JWT_SECRET"),
        ({"TANDEM_JWT_SECRET": "short"}, "at least 32 bytes"),
        ({"TANDEM_JWT_SECRET": "changeme" * 5}, "looks like a default"),
        ({"TANDEM_JWT_SECRET": "a" * 40}, "looks like a default"),
    ],
)
def test_production_refuses_weak_or_missing_secrets(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings([], {"TANDEM_PROFILE": "production", **env})


def test_production_defaults_are_closed() -> None:
    settings = load_settings([], {"TANDEM_PROFILE": "production", "TANDEM_JWT_SECRET": GOOD})
    assert settings.effective_default_access == "none"
    assert load_settings([], {}).effective_default_access == "editor"


def test_rate_limit_specs() -> None:
    assert parse_rate_limits("off") is None
    limits = parse_rate_limits("event_per_connection=100/500")
    assert limits is not None and limits.event_per_connection == Rate(100.0, 500.0)
    with pytest.raises(ConfigError, match="kind=rate/burst"):
        parse_rate_limits("bogus=1/2")


def test_rs256_tokens_verify_through_a_jwks_file(tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [{**jwk, "kid": "k1", "alg": "RS256", "use": "sig"}]}))
    settings = load_settings(
        [],
        {
            "TANDEM_PROFILE": "production",
            "TANDEM_JWKS_FILE": str(jwks),
            "TANDEM_JWT_ISSUER": "app",
            "TANDEM_DATA_DIR": str(tmp_path),
        },
    )
    verifier = token_verifier(settings)
    now = time.time()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    token = jwt.encode(
        {"sub": "ann", "iss": "app", "exp": now + 60, "iat": now},
        pem,
        algorithm="RS256",
        headers={"kid": "k1"},
    )
    assert verifier.verify(token, now=now).user_id == "ann"
    assert verifier.hs256_secret is None  # no dev secret made up when keys are configured


@pytest.mark.parametrize("value", ["-0.01", "11"])
def test_presence_interval_out_of_range_is_refused(value: str) -> None:
    with pytest.raises(ConfigError, match="presence_interval"):
        load_settings([], {"TANDEM_PRESENCE_INTERVAL": value})


@pytest.mark.parametrize(
    ("env", "value"),
    [
        ("TANDEM_BATCH_WIDEN_LOAD", "1"),  # the window's growth would divide by 1 - it
        ("TANDEM_BATCH_WIDEN_LOAD", "-0.1"),
        ("TANDEM_BATCH_WIDEN_RATE", "-1"),
        ("TANDEM_BATCH_WIDEN_RATE", "nan"),  # every comparison with it is false
        ("TANDEM_NOTIFICATION_PACE", "-1"),
        ("TANDEM_NOTIFICATION_PACE", "nan"),
    ],
)
def test_batching_settings_out_of_range_are_refused(env: str, value: str) -> None:
    with pytest.raises(ConfigError, match=env.removeprefix("TANDEM_").lower()):
        load_settings([], {env: value})
