"""Test kit: run Tandem in-process (see :func:`open_test_server`)."""

from runtime.testing.server import TestServer, open_test_server

__all__ = ["TestServer", "open_test_server"]
