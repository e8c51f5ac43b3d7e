"""Settings: every one is a ``tandem serve --flag`` and an environment variable ``TANDEM_<NAME>``.

Precedence: command-line flag, then environment, then the default. The
defaults are the embedded profile: ``dev``, bound to 127.0.0.1:8080, no
external PostgreSQL or Redis.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from runtime.security.proxies import TrustedProxies
from runtime.security.ratelimit import Kind, Rate, RateLimits


def _setting(default: Any, help: str, *, secret: bool = False) -> Any:
    return attrs.field(default=default, metadata={"help": help, "secret": secret})


@attrs.frozen
class Settings:
    host: str = _setting("127.0.0.1", "address to bind")
    port: int = _setting(8080, "port for WebSocket and HTTP (0: pick a free one)")
    workers: int = _setting(
        1, "processes serving the port, one per core (> 1 needs TANDEM_REDIS_URL)"
    )
    reuse_port: bool = _setting(
        False, "bind the public port with SO_REUSEPORT, shared with other processes"
    )
    internal_port: int | None = _setting(
        None, "serve /status on this port instead of the public one"
    )
    profile: str = _setting("dev", "dev (guests allowed, readable logs) or production")
    jwt_secret: str | None = _setting(
        None, "HS256 secret for client tokens (>= 32 bytes)", secret=True
    )
    jwt_public_keys: str = _setting("", "PEM files of RS256/EdDSA public keys, comma-separated")
    jwks_file: str | None = _setting(None, "a JWKS file of RS256/EdDSA public keys (chosen by kid)")
    jwt_issuer: str | None = _setting(None, "required `iss` claim")
    jwt_audience: str | None = _setting(None, "required `aud` claim")
    jwt_leeway: float = _setting(30.0, "clock skew allowed on exp/nbf/iat (seconds)")
    database_url: str | None = _setting(None, "PostgreSQL URL; unset: embedded store in DATA_DIR")
    redis_url: str | None = _setting(None, "Redis URL for cluster mode")
    redis_prefix: str = _setting("tandem:", "prefix of every Redis key and channel (one cluster)")
    redis_pool: int = _setting(16, "Redis connections per node (and worker threads waiting)")
    session_lease: float = _setting(3.0, "cluster mode: seconds a session owner's lease lasts")
    data_dir: str = _setting(str(Path.home() / ".tandem"), "where embedded state lives")
    presence_timeout: float = _setting(
        15.0, "seconds without a sign of life before a client is dropped"
    )
    away_after: float = _setting(60.0, "seconds without presence activity before a user is away")
    presence_interval: float = _setting(
        0.02, "shortest time between two presence broadcasts of a session (seconds)"
    )
    max_message_bytes: int = _setting(65536, "largest inbound WebSocket message (1009 past it)")
    outbound_limit: int = _setting(
        4 * 1024 * 1024, "queued outbound bytes per connection (4000 past it)"
    )
    compression: bool = _setting(
        True, "accept permessage-deflate (WebSocket compression) from clients that offer it"
    )
    mailbox_size: int = _setting(1024, "messages a session mailbox holds before senders wait")
    mailbox_timeout: float = _setting(
        5.0, "seconds a request waits for mailbox room before `overloaded`"
    )
    batch_max: int = _setting(
        512, "most messages a session handles (and events it flushes) at once"
    )
    batch_delay: float = _setting(
        0.010, "extra wait to widen a batch, used only under load (seconds; 0: never)"
    )
    batch_delay_max: float = _setting(
        0.030, "widest batching window, reached as a session's CPU load nears 100 % (seconds)"
    )
    batch_widen_load: float = _setting(
        0.35, "share of a session's recent time spent handling from which its window opens"
    )
    batch_widen_rate: float = _setting(
        50_000.0,
        "deliveries/s offered to a session (events x local members) from which its window"
        " opens whatever its CPU load, fully at twice that (0: off)",
    )
    memory_retention: int = _setting(1000, "events per session kept in memory for fast resume")
    passivate_after: float = _setting(300.0, "seconds an idle actor lives before it is stopped")
    db_pool_min: int = _setting(2, "PostgreSQL connections kept open")
    db_pool_max: int = _setting(20, "most PostgreSQL connections (and worker threads using them)")
    db_statement_timeout: float = _setting(30.0, "seconds before PostgreSQL cancels a statement")
    retention_events: int = _setting(100_000, "events kept per session in the store (0: no limit)")
    retention_seconds: float = _setting(
        30 * 86400.0, "seconds events are kept in the store (0: forever)"
    )
    cache_session_ttl: float = _setting(300.0, "seconds session metadata stays cached")
    cache_member_ttl: float = _setting(600.0, "seconds a membership stays cached")
    shutdown_timeout: float = _setting(10.0, "seconds to drain on shutdown before cancelling")
    max_sessions_per_connection: int = _setting(100, "sessions one connection may join")
    auth_timeout: float = _setting(10.0, "seconds an anonymous production connection has to `auth`")
    default_access: str | None = _setting(
        None,
        "non-members' role: none|viewer|commenter|editor (dev: editor, production: none)",
    )
    rate_limits: str = _setting(
        "default",
        "`default`, `off`, or `kind=rate/burst,...` overrides",
    )
    allowed_origins: str = _setting(
        "*",
        "Origins browsers may connect from, comma-separated (`*`: any)",
    )
    trusted_proxies: str = _setting(
        "",
        "reverse proxies (addresses or CIDRs, comma-separated) whose X-Forwarded-For is believed",
    )
    api_key: str | None = _setting(
        None, "bearer key for the /v1 HTTP API (required in production)", secret=True
    )
    encryption_keys: str | None = _setting(
        None,
        "keys for payloads stored encrypted (`sensitive`): `id:base64 32 bytes,...`",
        secret=True,
    )
    encryption_key_current: str | None = _setting(
        None, "id of the key new writes use (needed with several encryption_keys)"
    )
    log_level: str = _setting("info", "debug, info, warning or error")
    log_format: str = _setting("auto", "auto (json in production, text in dev), json or text")
    alert_interval: float = _setting(10.0, "seconds per alert evaluation window")
    alert_publish_p99: float = _setting(0.1, "alert when publish-to-delivery p99 exceeds (s)")
    alert_session_p99: float = _setting(0.2, "alert when join/leave p99 exceeds (s)")
    alert_presence_p99: float = _setting(0.05, "alert when presence update p99 exceeds (s)")
    alert_database_p99: float = _setting(0.1, "alert when database call p99 exceeds (s)")
    alert_redis_p99: float = _setting(0.01, "alert when Redis call p99 exceeds (s)")
    alert_mailbox_depth: int = _setting(512, "alert when one mailbox holds more messages")
    alert_restarts: int = _setting(10, "alert when supervisors restart more per window")
    notification_group_window: float = _setting(
        300.0, "seconds within which activity on one thread groups into one notification"
    )
    notification_pace: float = _setting(
        0.25, "seconds between one inbox's writes while notifications keep coming"
    )
    webhook_retry_base: float = _setting(1.0, "seconds before the first webhook retry (doubles)")
    webhook_retry_cap: float = _setting(3600.0, "most seconds between webhook retries")
    webhook_disable_after: float = _setting(
        3 * 86400.0, "seconds an endpoint may fail without a success before it is disabled"
    )
    webhook_timeout: float = _setting(10.0, "seconds a webhook request may take")

    @property
    def is_production(self) -> bool:
        return self.profile == "production"

    @property
    def effective_default_access(self) -> str:
        return self.default_access or ("none" if self.is_production else "editor")


_BOOL_TRUE = {"1", "true", "yes", "on"}


def _convert(field: attrs.Attribute[Any], raw: str) -> Any:
    kind = str(field.type)
    if raw == "" and "None" in kind:
        return None
    if kind.startswith("int"):
        return int(raw)
    if kind.startswith("float"):
        return float(raw)
    if kind.startswith("bool"):
        return raw.lower() in _BOOL_TRUE
    return raw


class ConfigError(ValueError):
    pass


def load_settings(
    argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None
) -> Settings:
    """Settings from flags (``argv``, already stripped of the subcommand) and ``env``."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    for field in attrs.fields(Settings):
        raw = env.get(f"TANDEM_{field.name.upper()}")
        if raw is not None:
            values[field.name] = _parse(field, raw, f"TANDEM_{field.name.upper()}")
    if argv:
        parser = argparse.ArgumentParser(prog="tandem serve", add_help=False)
        add_setting_flags(parser)
        parsed = parser.parse_args(list(argv))
        for field in attrs.fields(Settings):
            value = getattr(parsed, field.name)
            if value is not None:
                values[field.name] = _parse(field, value, "--" + field.name.replace("_", "-"))
    settings = Settings(**values)
    validate(settings)
    return settings


def settings_env(settings: Settings) -> dict[str, str]:
    """Every setting as ``TANDEM_<NAME>``: what :func:`load_settings` reads back unchanged.

    How ``--workers`` hands its settings to each worker: environment, not flags,
    so secrets do not show in ``ps``.
    """
    out = {}
    for field in attrs.fields(Settings):
        value = getattr(settings, field.name)
        if value is None:
            text = ""  # "unset" for the optional ones (_convert)
        elif isinstance(value, bool):
            text = "1" if value else "0"
        else:
            text = str(value)
        out[f"TANDEM_{field.name.upper()}"] = text
    return out


def _parse(field: attrs.Attribute[Any], raw: str, where: str) -> Any:
    try:
        return _convert(field, raw)
    except ValueError:
        raise ConfigError(f"{where}: {raw!r} is not a valid {field.type}") from None


def add_setting_flags(parser: argparse.ArgumentParser) -> None:
    for field in attrs.fields(Settings):
        env_name = f"TANDEM_{field.name.upper()}"
        default = "unset" if field.default is None or field.metadata["secret"] else field.default
        parser.add_argument(
            "--" + field.name.replace("_", "-"),
            dest=field.name,
            default=None,
            metavar=env_name,
            help=f"{field.metadata['help']} (env {env_name}; default {default})",
        )


def validate(settings: Settings) -> None:
    if settings.profile not in ("dev", "production"):
        raise ConfigError("profile must be dev or production")
    if settings.is_production:
        has_keys = bool(settings.jwt_public_keys.strip() or settings.jwks_file)
        if not settings.jwt_secret and not has_keys:
            raise ConfigError(
                "the production profile needs TANDEM_JWT_SECRET or public keys (JWKS / PEM)"
            )
    if settings.is_production and settings.jwt_secret:
        if len(settings.jwt_secret.encode()) < 32:
            raise ConfigError("TANDEM_JWT_SECRET must be at least 32 bytes")
        if len(set(settings.jwt_secret)) < 8 or settings.jwt_secret.lower().startswith(
            ("changeme", "secret", "example", "password")
        ):
            raise ConfigError("TANDEM_JWT_SECRET looks like a default; generate a random one")
    if settings.effective_default_access not in ("none", "viewer", "commenter", "editor"):
        raise ConfigError("default_access must be none, viewer, commenter or editor")
    parse_rate_limits(settings.rate_limits)
    try:
        TrustedProxies.parse(settings.trusted_proxies)
    except ValueError as exc:
        raise ConfigError(f"trusted_proxies: {exc}") from None
    from runtime.gateways.encryption import keyring_from_settings  # raises ConfigError

    keyring_from_settings(settings)
    if settings.workers < 1:
        raise ConfigError("workers must be >= 1")
    if settings.workers > 1 and not settings.redis_url:
        # The workers are separate processes: only a cluster (Redis) gives them one
        # order per session, shared presence, shared rate limits and invalidation.
        raise ConfigError(
            f"--workers {settings.workers} needs TANDEM_REDIS_URL: the workers are "
            "nodes of one cluster, coordinated through Redis"
        )
    if settings.workers > 1 and settings.port < 0:
        raise ConfigError("--workers needs a public port (>= 0)")
    if settings.workers > 1 and settings.internal_port:
        # worker i serves /status on internal_port + i (runtime/workers.py)
        internal = range(settings.internal_port, settings.internal_port + settings.workers)
        if internal[-1] > 65535 or settings.port in internal:
            raise ConfigError(
                f"--workers {settings.workers} uses internal ports {internal[0]}-{internal[-1]}:"
                " they must be <= 65535 and not include the public port"
            )
    if settings.presence_timeout <= 0:
        raise ConfigError("presence_timeout must be > 0")
    if settings.max_message_bytes < 1024:
        raise ConfigError("max_message_bytes must be >= 1024")
    if not 0 <= settings.presence_interval <= 10:
        raise ConfigError("presence_interval must be between 0 and 10 seconds")
    if not 0 <= settings.batch_widen_load < 1:
        raise ConfigError("batch_widen_load must be at least 0 and below 1")
    if not settings.batch_widen_rate >= 0:
        raise ConfigError("batch_widen_rate must be at least 0")
    if not settings.notification_pace >= 0:  # NaN too: it would turn pacing off unsaid
        raise ConfigError("notification_pace must be >= 0 seconds")


def public_view(settings: Settings) -> dict[str, Any]:
    """Settings for /status, secrets masked."""
    out = {}
    for field in attrs.fields(Settings):
        value = getattr(settings, field.name)
        if field.metadata["secret"] and value:
            value = "***"
        elif field.name.endswith("_url") and value:
            value = _mask_url(value)
        out[field.name] = value
    return out


def _mask_url(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


def parse_rate_limits(spec: str) -> RateLimits | None:
    """``default`` -> the documented defaults; ``off`` -> None; else per-kind overrides."""
    if spec == "off":
        return None
    if spec in ("", "default"):
        return RateLimits()
    overrides: dict[str, Rate] = {}
    for item in spec.split(","):
        try:
            kind, value = item.strip().split("=", 1)
            per_s, burst = value.split("/", 1)
            overrides[Kind(kind).value] = Rate(float(per_s), float(burst))
        except ValueError as exc:
            raise ConfigError(
                f"rate_limits: cannot read {item!r} (kind=rate/burst): {exc}"
            ) from None
    return attrs.evolve(RateLimits(), **overrides)
