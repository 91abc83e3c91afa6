"""Which URLs a tool's webhook may point at: the server-side request forgery guard.

A webhook URL is chosen by a user, so before every request (every redirect hop too) its host is
resolved (``getaddrinfo``, every address) and refused when any address is not public: loopback,
private (10/8, 172.16/12, 192.168/16, fc00::/7), link-local (169.254/16 with the cloud metadata
address, fe80::/10), multicast, unspecified, reserved, shared (CGNAT 100.64/10), and the same
addresses behind IPv4-mapped, 6to4 or Teredo IPv6 forms; known metadata names are refused before
resolution. ``AGENT_WEBHOOK_ALLOW`` lists CIDRs and ``host[:port]`` names that are allowed anyway.
The checked address is returned so the caller connects to it and to nothing else: a name that
resolves differently a second time (DNS rebinding) never gets a second resolution.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

METADATA_HOSTS = frozenset(
    {
        "metadata.google.internal",
        "metadata.goog",
        "metadata",
        "instance-data",
        "instance-data.ec2.internal",
        "metadata.azure.internal",
    }
)
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class Refused(Exception):
    """The URL is not one a webhook may be called at; ``reason`` is ``bad_url`` or ``blocked_address``."""

    def __init__(self, reason: Literal["bad_url", "blocked_address"], detail: str) -> None:
        super().__init__(detail)
        self.reason: Literal["bad_url", "blocked_address"] = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class AllowList:
    """``AGENT_WEBHOOK_ALLOW``: networks any host may resolve into, and names (with a port or any)."""

    networks: tuple[Network, ...] = ()
    hosts: frozenset[tuple[str, int | None]] = frozenset()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> AllowList:
        networks: list[Network] = []
        hosts: set[tuple[str, int | None]] = set()
        for raw in entries:
            entry = raw.strip().lower()
            if not entry:
                continue
            if "/" in entry:
                networks.append(ipaddress.ip_network(entry, strict=False))
                continue
            host, port = _split_host_port(entry)
            address = _ip(host)
            if address is not None and port is None:
                networks.append(ipaddress.ip_network(address))
            else:
                hosts.add((host, port))
        return cls(tuple(networks), frozenset(hosts))

    def permits_host(self, host: str, port: int) -> bool:
        return (host, None) in self.hosts or (host, port) in self.hosts

    def permits_address(self, address: Address) -> bool:
        return any(address in network for network in self.networks)


@dataclass(frozen=True, slots=True)
class Target:
    """A checked URL: connect to one of ``addresses`` only, send ``host`` as Host (and SNI for https)."""

    url: str
    scheme: str
    host: str
    port: int
    addresses: tuple[str, ...]

    @property
    def origin(self) -> tuple[str, str, int]:
        return (self.scheme, self.host, self.port)

    @property
    def host_header(self) -> str:
        shown = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return shown if self.port == default else f"{shown}:{self.port}"


def _split_host_port(entry: str) -> tuple[str, int | None]:
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else None
    if entry.count(":") == 1:
        host, _, port = entry.partition(":")
        return host, int(port)
    return entry, None


def _ip(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def is_public(address: Address) -> bool:
    """Whether an address is on the public internet (embedded IPv4 forms checked as IPv4)."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded: list[Address] = []
        if address.ipv4_mapped is not None:
            embedded.append(address.ipv4_mapped)
        if address.sixtofour is not None:
            embedded.append(address.sixtofour)
        if address.teredo is not None:
            embedded.extend(address.teredo)
        if address in _NAT64:
            embedded.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
        if embedded:
            return all(is_public(a) for a in embedded)
    if address.version == 4 and address in _CGNAT:
        return False
    return address.is_global and not (
        address.is_loopback
        or address.is_private
        or address.is_link_local
        or address.is_multicast
        or address.is_unspecified
        or address.is_reserved
    )


def parse_url(url: str, *, allow: AllowList, allow_http: bool) -> tuple[str, str, int]:
    """Scheme, host (lower-case, no brackets) and port of a URL a webhook may have; ``Refused`` if not."""
    if len(url) > 2048 or any(c.isspace() or ord(c) < 32 for c in url):
        raise Refused("bad_url", "not a URL")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise Refused("bad_url", "not a URL") from None
    if parts.scheme not in ("https", "http") or not parts.netloc:
        raise Refused("bad_url", "not an http(s) URL")
    if parts.username is not None or parts.password is not None:
        raise Refused("bad_url", "a webhook URL carries no user name or password")
    host = (parts.hostname or "").rstrip(".").lower()
    if not host:
        raise Refused("bad_url", "the URL has no host")
    if port == 0:
        raise Refused("bad_url", "the URL's port is not valid")
    port = port or (443 if parts.scheme == "https" else 80)
    if parts.scheme == "http" and not allow_http and not allow.permits_host(host, port):
        address = _ip(host)
        if address is None or not allow.permits_address(address):
            raise Refused("bad_url", "only https URLs")
    return parts.scheme, host, port


async def check_url(url: str, *, allow: AllowList, allow_http: bool) -> Target:
    """Resolve the URL's host once and return the address to connect to; ``Refused`` when not allowed.

    ``allow_http``: plain http for any host (outside production); in production only allow-listed
    hosts and networks may use it. Raises ``OSError`` when the name does not resolve."""
    scheme, host, port = parse_url(url, allow=allow, allow_http=allow_http)
    host_allowed = allow.permits_host(host, port)
    if not host_allowed and (host in METADATA_HOSTS or host == "localhost" or host.endswith(".localhost")):
        raise Refused("blocked_address", "a cloud metadata or local name")
    literal = _ip(host)
    if literal is not None:
        addresses: list[Address] = [literal]
    else:
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        addresses = []
        for info in infos:
            address = _ip(str(info[4][0]).split("%", 1)[0])
            if address is None:
                raise Refused("blocked_address", "an address that is not IP")
            if address not in addresses:
                addresses.append(address)
        if not addresses:
            raise OSError(f"{host} does not resolve")
    if not host_allowed:
        for address in addresses:
            if not is_public(address) and not allow.permits_address(address):
                raise Refused("blocked_address", "resolves to an address that is not public")
        if scheme == "http" and not allow_http and not all(allow.permits_address(a) for a in addresses):
            raise Refused("bad_url", "only https URLs")
    return Target(url=url, scheme=scheme, host=host, port=port, addresses=tuple(str(a) for a in addresses))
