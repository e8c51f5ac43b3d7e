"""Test kit: run Tandem in-process (see :func:`open_test_server`).

Imports are lazy: the pytest plugin lives in this package and is loaded before
coverage starts, so importing the server here would hide it from coverage.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runtime.testing.server import TestServer, open_test_server

__all__ = ["TestServer", "open_test_server"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from runtime.testing import server

        return getattr(server, name)
    raise AttributeError(name)
