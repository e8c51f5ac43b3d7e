"""Fixtures for client tests: a real Tandem server in-process, over in-memory wires."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager

import pytest
from trio_websocket import WebSocketConnection

from runtime.testing import open_test_server
from runtime.testing.server import TestServer

Connect = Callable[[], AbstractAsyncContextManager[WebSocketConnection]]


@pytest.fixture
async def server() -> AsyncIterator[TestServer]:
    async with open_test_server() as server:
        yield server


@pytest.fixture
def connect_as(server: TestServer) -> Callable[[str], Connect]:
    """``connect_as("alice")``: a ``connect`` callable for an in-memory connection as alice."""

    def make(user: str) -> Connect:
        token = server.token(user)
        return lambda: server.websocket(token=token)

    return make


@pytest.fixture
def rng() -> random.Random:
    return random.Random(1234)
