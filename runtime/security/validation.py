"""Shape limits for untrusted input, applied before cattrs structuring."""

from __future__ import annotations

import re

# One alphabet for every identifier a client can name (users, sessions, events):
# safe in URLs, log lines, Redis keys and SQL without quoting surprises.
_ID_RE = re.compile(r"[A-Za-z0-9_.:@-]{1,128}", re.ASCII)

MAX_ID_LENGTH = 128


def valid_id(s: object) -> bool:
    """True if ``s`` is a str of 1..128 chars from ``[A-Za-z0-9_.:@-]``."""
    return isinstance(s, str) and _ID_RE.fullmatch(s) is not None
