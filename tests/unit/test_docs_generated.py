"""Docs that are generated from code, or must name everything the code defines.

* The permission matrix in ``docs/protocol.md`` (between ``<!-- matrix:start -->``
  and ``<!-- matrix:end -->``) is exactly ``matrix_markdown()``. To update it::

      python -c "from tests.unit.test_docs_generated import write_matrix; write_matrix()"

* Every ``Settings`` field's environment variable appears in ``docs/operations.md``
  (the configuration reference), so a new setting cannot go undocumented.
"""

from __future__ import annotations

import re
from pathlib import Path

import attrs
import pytest

from runtime.config import Settings
from runtime.security.permissions import matrix_markdown

DOCS = Path(__file__).resolve().parents[2] / "docs"
PROTOCOL = DOCS / "protocol.md"
OPERATIONS = DOCS / "operations.md"
START, END = "<!-- matrix:start -->\n", "<!-- matrix:end -->"


def _matrix_block(text: str) -> str:
    assert text.count(START) == 1 and text.count(END) == 1, "one pair of matrix markers"
    start = text.index(START) + len(START)
    end = text.index(END)
    assert start <= end, "matrix markers out of order"
    return text[start:end]


def write_matrix() -> None:
    """Regenerate the matrix block in docs/protocol.md from the code."""
    text = PROTOCOL.read_text(encoding="utf-8")
    block = _matrix_block(text)
    start = text.index(START) + len(START)
    PROTOCOL.write_text(
        text[:start] + matrix_markdown() + text[start + len(block) :], encoding="utf-8"
    )


def test_permission_matrix_in_docs_is_generated_from_code() -> None:
    block = _matrix_block(PROTOCOL.read_text(encoding="utf-8"))
    assert block == matrix_markdown(), (
        "docs/protocol.md matrix differs from runtime.security.permissions.MATRIX; "
        "regenerate it with tests.unit.test_docs_generated.write_matrix()"
    )


@pytest.fixture(scope="module")
def operations() -> str:
    return OPERATIONS.read_text(encoding="utf-8")


@pytest.mark.parametrize("name", [f.name for f in attrs.fields(Settings)])
def test_setting_is_in_the_configuration_reference(operations: str, name: str) -> None:
    env = f"TANDEM_{name.upper()}"
    # A row of the table: | `name` | `TANDEM_NAME` | `--name` | ...
    row = re.search(
        rf"^\| `{name}` \| `{env}` \| `--{name.replace('_', '-')}` \|", operations, re.M
    )
    assert row is not None, f"{env} has no row in docs/operations.md 'Configuration reference'"
