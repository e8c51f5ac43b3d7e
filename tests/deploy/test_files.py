"""The deployment files agree with the code: no Docker is needed to catch drift."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import attrs
import pytest
import yaml

from runtime.config import Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "compose.yaml").read_text())
SETTINGS = {f"TANDEM_{field.name.upper()}" for field in attrs.fields(Settings)}
NODES = [name for name in COMPOSE["services"] if name.startswith("tandem")]


def test_compose_sets_only_real_settings_and_a_valid_production_config() -> None:
    assert len(NODES) == 3
    for name in NODES:
        env = COMPOSE["services"][name]["environment"]
        assert set(env) <= SETTINGS, set(env) - SETTINGS
        # With the secrets compose requires, the nodes' settings load and validate.
        values = {key: re.sub(r"\$\{[^}]*\}", "", str(value)) for key, value in env.items()}
        values["TANDEM_JWT_SECRET"] = "k3y-" + "0123456789abcdefghij" * 2
        values["TANDEM_API_KEY"] = "an-api-key-for-the-test"
        values["TANDEM_ALLOWED_ORIGINS"] = "https://app.example.com"
        settings = load_settings([], values)
        assert settings.is_production
        assert settings.redis_url and settings.database_url
        assert settings.trusted_proxies  # behind HAProxy, per-IP limits need the client


def test_haproxy_has_one_server_per_node_and_checks_readiness() -> None:
    config = (ROOT / "deploy" / "haproxy.cfg").read_text()
    servers = re.findall(r'^\s*server (\S+) "\$\{(TANDEM_NODE\d)\}"', config, re.M)
    assert [name for name, _ in servers] == NODES
    proxy = COMPOSE["services"]["haproxy"]["environment"]
    assert {var for _, var in servers} | {"TANDEM_LISTEN"} == set(proxy)
    assert "option httpchk GET /readyz" in config
    assert "option forwardfor" in config


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed")
def test_haproxy_accepts_the_config() -> None:
    env = {"TANDEM_LISTEN": "127.0.0.1:8080"} | {
        f"TANDEM_NODE{i}": "127.0.0.1:1" for i in (1, 2, 3)
    }
    result = subprocess.run(
        ["haproxy", "-c", "-f", str(ROOT / "deploy" / "haproxy.cfg")],
        env=dict(os.environ) | env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_image_copies_every_package_the_project_installs() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    copied = set(re.findall(r"^COPY (\S+) \./\1$", dockerfile, re.M))
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert packages <= copied
    assert "COPY pyproject.toml README.md ./" in dockerfile  # what pip reads to install
    assert re.search(r"^USER tandem$", dockerfile, re.M)  # embedded PostgreSQL refuses root
