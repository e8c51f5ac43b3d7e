"""pytest plugin (registered as ``tandem``): fixtures for testing against a Tandem server.

``tandem_server`` runs a server in-process over in-memory wires; combine it
with pytest-trio's ``autojump_clock`` fixture to make timeouts, heartbeats,
passivation and batching deterministic.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from runtime.testing.server import TestServer, open_test_server


@pytest.fixture
async def tandem_server() -> AsyncIterator[TestServer]:
    async with open_test_server() as server:
        yield server
