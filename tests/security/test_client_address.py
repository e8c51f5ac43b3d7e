"""Behind a trusted proxy, per-IP limits and audit records see the client, not the proxy."""

from __future__ import annotations

import pytest
import trio

from runtime.config import ConfigError, Settings, validate
from runtime.security.proxies import TrustedProxies, forwarded_for, peer_host
from runtime.testing import open_test_server

pytestmark = pytest.mark.integration

PROXY = TrustedProxies.parse("127.0.0.1, 10.0.0.0/8")


def test_an_untrusted_peer_is_its_own_address_whatever_it_claims() -> None:
    assert PROXY.client_address("192.0.2.7", ["203.0.113.1"]) == "192.0.2.7"
    assert TrustedProxies().client_address("127.0.0.1", ["203.0.113.1"]) == "127.0.0.1"


def test_a_trusted_peer_is_read_from_the_right_skipping_trusted_hops() -> None:
    # client -> 10.1.1.1 (inner proxy) -> 127.0.0.1 (socket peer)
    assert PROXY.client_address("127.0.0.1", ["203.0.113.1, 10.1.1.1"]) == "203.0.113.1"
    # a forged entry left of the real client is never used
    assert PROXY.client_address("127.0.0.1", ["6.6.6.6, 203.0.113.1"]) == "203.0.113.1"
    # several headers count as one list, in order
    assert PROXY.client_address("127.0.0.1", ["6.6.6.6", "203.0.113.1"]) == "203.0.113.1"
    # no header: the proxy itself
    assert PROXY.client_address("127.0.0.1", []) == "127.0.0.1"
    # only trusted hops: the leftmost of them
    assert PROXY.client_address("127.0.0.1", ["10.2.2.2, 10.1.1.1"]) == "10.2.2.2"
    # garbage in the header stops the walk at the last address a trusted hop gave
    assert PROXY.client_address("127.0.0.1", ["unknown, 10.1.1.1"]) == "10.1.1.1"
    assert PROXY.client_address("::ffff:127.0.0.1", ["2001:db8::1"]) == "2001:db8::1"


def test_every_forwarded_for_header_is_read_in_order() -> None:
    headers = [(b"x-forwarded-for", b"6.6.6.6"), (b"host", b"x"), (b"x-forwarded-for", b"1.2.3.4")]
    assert forwarded_for(headers) == ["6.6.6.6", "1.2.3.4"]
    assert PROXY.client_address("127.0.0.1", forwarded_for(headers)) == "1.2.3.4"


def test_peer_host_and_bad_proxy_settings() -> None:
    assert peer_host("1.2.3.4:5678") == "1.2.3.4"
    assert peer_host("::1:5678") == "::1"
    assert peer_host("memory") == "memory"
    assert not PROXY.trusts("not-an-ip")
    with pytest.raises(ValueError, match=r"'10\.0\.0\.0/33'"):
        TrustedProxies.parse("10.0.0.0/33")
    with pytest.raises(ConfigError, match="trusted_proxies"):
        validate(Settings(trusted_proxies="127.0.0.1, proxy.local"))


async def _upgrade(port: int, forwarded_for: str) -> int:
    """The HTTP status of a WebSocket upgrade request (101 accepted, 429 refused)."""
    request = (
        "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        f"X-Forwarded-For: {forwarded_for}\r\n\r\n"
    )
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        await stream.send_all(request.encode())
        head = b""
        while b"\r\n" not in head:
            chunk = await stream.receive_some()
            assert chunk, "closed before a status line"
            head += chunk
    return int(head.split(b" ", 2)[1])


@pytest.mark.parametrize("trusted", ["127.0.0.1", ""])
async def test_the_connect_limit_is_per_client_behind_a_trusted_proxy(trusted: str) -> None:
    with trio.fail_after(10):
        async with open_test_server(
            real_socket=True,
            rate_limits="connect_per_ip=0.001/1",
            trusted_proxies=trusted,
        ) as server:
            port = server.node.public_port
            first = await _upgrade(port, "203.0.113.1")
            second = await _upgrade(port, "203.0.113.2")
            again = await _upgrade(port, "203.0.113.1")
    assert first == 101
    assert again == 429  # one connect per client, whoever is behind the proxy
    # Trusted: the second client has its own bucket. Not trusted: everyone is the
    # proxy's 127.0.0.1, so the second client is refused like the first's repeat.
    assert second == (101 if trusted else 429)
