"""docs/protocol.md names every error code, close code and client message type.

The codes and message types are defined in ``runtime/protocol``; if one is
added or renamed without the docs, these tests fail.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from runtime.protocol.errors import RECONNECT, CloseCode, ErrorCode
from runtime.protocol.messages import CLIENT_TYPES

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


@pytest.fixture(scope="module")
def doc() -> str:
    return DOC.read_text(encoding="utf-8")


@pytest.mark.parametrize("code", list(ErrorCode), ids=str)
def test_error_code_is_documented(doc: str, code: ErrorCode) -> None:
    assert f"`{code.value}`" in doc


@pytest.mark.parametrize("code", list(CloseCode), ids=lambda c: f"{c.value}-{c.name}")
def test_close_code_is_documented_with_its_reconnect_policy(doc: str, code: CloseCode) -> None:
    # A row of the close code table: | `4000` | ... | yes/no | ...
    row = re.search(rf"^\| `{code.value}` \|(?P<rest>.*)$", doc, re.MULTILINE)
    assert row is not None, f"close code {code.value} has no row in the close code table"
    cells = [cell.strip().lower() for cell in row["rest"].split("|")]
    expected = "yes" if RECONNECT[code] else "no"
    assert expected in cells, f"{code.value}: reconnect should read {expected!r}: {cells}"


# The comment and notification types register themselves on import: import them here,
# so the list below does not depend on which test module was collected first.
import runtime.comments.ws  # noqa: E402, F401

CORE_MODULE = "runtime.protocol.messages"


@pytest.mark.parametrize("kind", list(CLIENT_TYPES))
def test_client_message_type_is_documented(doc: str, kind: str) -> None:
    assert f"`{kind}`" in doc
    if CLIENT_TYPES[kind].__module__ == CORE_MODULE:
        # Core messages each have a section with an example.
        assert f'"type": "{kind}"' in doc or f'"type":"{kind}"' in doc, kind
    else:
        # Comment and notification requests share one table: named in a row's first cell.
        row = rf"^\| [^|]*`{re.escape(kind)}`[^|]*\|"
        assert re.search(row, doc, re.MULTILINE), kind
