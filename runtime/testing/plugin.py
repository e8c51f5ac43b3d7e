"""pytest plugin (registered as ``tandem``): fixtures for testing against a Tandem server.

``tandem_server`` runs a server in-process over in-memory wires; combine it
with pytest-trio's ``autojump_clock`` fixture to make timeouts, heartbeats,
passivation and batching deterministic.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from runtime.testing.server import TestServer


@pytest.fixture
async def tandem_server() -> AsyncIterator[TestServer]:
    """A server running in-process for the test (imported late: see the package docstring)."""
    from runtime.testing.server import open_test_server

    async with open_test_server() as server:
        yield server
