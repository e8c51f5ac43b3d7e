"""The address a request really comes from, behind trusted reverse proxies.

Behind HAProxy or nginx every socket peer is the proxy, so the per-IP connect
limit would put all users in one bucket and audit records would name the proxy.
``X-Forwarded-For`` is believed only when the socket peer is a proxy the
operator trusts (``TANDEM_TRUSTED_PROXIES``), and it is read from the right:
each trusted hop appends the address it saw, so the first address from the
right that is not itself a trusted proxy is the client. Anything left of it was
written by the client and may be forged, so it is never used.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

import attrs

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@attrs.frozen
class TrustedProxies:
    networks: tuple[Network, ...] = ()

    @classmethod
    def parse(cls, spec: str) -> TrustedProxies:
        """``"10.0.0.0/8, 127.0.0.1"`` -> proxies; raises ValueError naming the bad item."""
        networks = []
        for item in (part.strip() for part in spec.split(",")):
            if not item:
                continue
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                raise ValueError(f"{item!r} is not an IP address or network") from None
        return cls(tuple(networks))

    def trusts(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address.strip().strip("[]"))
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in network for network in self.networks)

    def client_address(self, peer: str, forwarded_for: Iterable[str]) -> str:
        """The client's address given the socket peer and every X-Forwarded-For value."""
        if not self.networks or not self.trusts(peer):
            return peer
        hops = [hop.strip() for value in forwarded_for for hop in value.split(",")]
        address = peer
        for hop in reversed(hops):
            if not hop:
                continue
            if not _is_ip(hop):
                return address  # garbage from an untrusted writer: stop at the last good hop
            address = hop
            if not self.trusts(hop):
                return hop
        return address


def forwarded_for(headers: Iterable[tuple[bytes, bytes]]) -> list[str]:
    """Every ``X-Forwarded-For`` value of a request, in order (names as h11 gives them)."""
    return [value.decode("latin-1") for name, value in headers if name == b"x-forwarded-for"]


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return False
    return True


def peer_host(peer: str) -> str:
    """``"1.2.3.4:5678"`` or ``"::1:5678"`` -> the host part."""
    return peer.rsplit(":", 1)[0] if ":" in peer else peer
