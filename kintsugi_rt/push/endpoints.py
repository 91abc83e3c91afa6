"""Which push endpoints a server will POST to, and the browser keys it encrypts for.

A subscription's endpoint is a URL a client chose, so it is checked like any URL the server fetches:
``https`` only (plain ``http`` in the test environment, for the local fake push service), no user info,
and in production no loopback, private, link-local or otherwise non-public address, neither written
as an IP nor behind a name (``resolves_publicly`` is asked before every request, not only once).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import re
import socket
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric import ec

# Names that only mean something inside a network (RFC 6761, 6762, 8375 and common practice).
_LOCAL_SUFFIXES = (".localhost", ".local", ".internal", ".lan", ".home.arpa", ".intranet", ".corp")
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+={0,2}")


class EndpointRefused(ValueError):
    """The endpoint or a key is not one the server will use; the message says why, ``field`` which."""

    def __init__(self, message: str, field: str = "endpoint") -> None:
        super().__init__(message)
        self.field = field


def check_endpoint(url: str, *, allow_http: bool, allow_private: bool) -> str:
    """The endpoint, if the server may POST to it; raise ``EndpointRefused`` otherwise."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise EndpointRefused("not a URL") from None
    schemes = ("https", "http") if allow_http else ("https",)
    if parts.scheme not in schemes or not parts.netloc:
        raise EndpointRefused(f"not an {' or '.join(schemes)} URL")
    if parts.username is not None or parts.password is not None:
        raise EndpointRefused("a push endpoint carries no user name or password")
    if parts.fragment or any(c.isspace() for c in url):
        raise EndpointRefused("not a URL")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise EndpointRefused("the URL has no host")
    if port == 0:
        raise EndpointRefused("the URL's port is not valid")
    if not allow_private:
        address = _ip(host)
        if address is not None:
            if not address.is_global:
                raise EndpointRefused("a push endpoint must be on the public internet")
        elif host == "localhost" or host.endswith(_LOCAL_SUFFIXES) or "." not in host:
            raise EndpointRefused("a push endpoint must be on the public internet")
    return url


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


async def resolves_publicly(url: str) -> bool:
    """Every address the endpoint's host resolves to is public (production's check before a request).

    Raises ``OSError`` when the name does not resolve (a retryable failure, like a network error)."""
    parts = urlsplit(url)
    host = (parts.hostname or "").rstrip(".")
    address = _ip(host)
    if address is not None:
        return address.is_global
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, parts.port or 443, type=socket.SOCK_STREAM)
    addresses = {_ip(str(info[4][0]).split("%", 1)[0]) for info in infos}
    return bool(addresses) and all(a is not None and a.is_global for a in addresses)


def decode_key(text: str) -> bytes:
    """Base64url, with or without padding (browsers send it without)."""
    if not _BASE64URL.fullmatch(text):
        raise EndpointRefused("not base64url")
    body = text.rstrip("=")
    try:
        return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (binascii.Error, ValueError):
        raise EndpointRefused("not base64url") from None


def check_keys(p256dh: str, auth: str) -> tuple[str, str]:
    """The browser's keys (RFC 8291): an uncompressed point on P-256 and a 16-byte auth secret."""
    try:
        point = decode_key(p256dh)
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
    except ValueError:
        raise EndpointRefused("keys.p256dh is not a P-256 public key (base64url)", "keys.p256dh") from None
    if len(point) != 65:
        raise EndpointRefused("keys.p256dh is not an uncompressed P-256 public key", "keys.p256dh")
    try:
        secret = decode_key(auth)
    except EndpointRefused:
        raise EndpointRefused("keys.auth is not base64url", "keys.auth") from None
    if len(secret) != 16:
        raise EndpointRefused("keys.auth is not a 16-byte secret", "keys.auth")
    return p256dh.rstrip("="), auth.rstrip("=")
