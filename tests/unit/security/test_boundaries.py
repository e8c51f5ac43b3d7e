"""The security core stays pure: no event loop, database, cache or network imports."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import runtime.security

PACKAGE = Path(runtime.security.__file__).parent
FORBIDDEN = ("trio", "psycopg", "redis", "socket", "asyncio", "urllib", "http", "requests")
# PyJWT itself pulls in urllib/http/socket (for its unused JWKS client), so only
# these are checked transitively.
FORBIDDEN_TRANSITIVELY = ("trio", "psycopg", "redis", "asyncio")


def _imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_no_module_imports_io_or_trio() -> None:
    files = sorted(PACKAGE.glob("*.py"))
    assert len(files) >= 7
    for path in files:
        for name in _imported_modules(path):
            assert name.split(".")[0] not in FORBIDDEN, f"{path.name} imports {name}"


def test_importing_the_package_loads_no_io_libraries() -> None:
    code = (
        "import sys, runtime.security, runtime.security.audit;"
        f"bad = [m for m in {FORBIDDEN_TRANSITIVELY!r} if m in sys.modules];"
        "print(bad); raise SystemExit(1 if bad else 0)"
    )
    root = PACKAGE.parent.parent
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_public_names_resolve() -> None:
    for name in runtime.security.__all__:
        assert getattr(runtime.security, name) is not None
