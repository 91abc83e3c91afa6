"""What an agent's tool is bound to (an HTTP endpoint), what a call returns, and the HMAC signature.

A tool is called by POSTing JSON ``{"tool": <name>, "arguments": {...}}`` to its endpoint
(``webhooks.WebhookCaller``). The endpoint authenticates the call one of three ways (``kind``):

- ``n8n``: a header ``<header_name or Authorization>: <secret>`` (n8n's "Header Auth" credential);
- ``make``: ``x-make-apikey: <secret>`` (a Make custom webhook's API key);
- ``hmac``: ``X-Kintsugi-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, f"{t}.{body}")>``,
  Stripe-like: the receiver recomputes the HMAC over the timestamp, a dot and the raw request body,
  compares in constant time and refuses a timestamp more than ``tolerance`` seconds away from its clock
  (``verify_signature`` is the reference implementation).

``ToolEndpoint.secret`` is the decrypted secret; it lives only in memory and its ``repr`` hides it.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Literal

import msgspec

SIGNATURE_HEADER = "X-Kintsugi-Signature"
SIGNATURE_TOLERANCE = 300
EndpointKind = Literal["n8n", "make", "hmac"]


class ToolEndpoint(msgspec.Struct, frozen=True):
    """Where a tool is called and how the call authenticates; ``secret`` never shows in a repr."""

    kind: EndpointKind
    url: str
    header_name: str | None
    secret: str

    def __repr__(self) -> str:
        return (
            f"ToolEndpoint(kind={self.kind!r}, url={self.url!r}, "
            f"header_name={self.header_name!r}, secret=***)"
        )

    __str__ = __repr__


class ToolResult(msgspec.Struct, frozen=True):
    """The outcome of one tool call: ``ok`` for a 2xx answer read in full, else ``error`` says why.

    ``error`` is one of ``bad_url``, ``blocked_address``, ``timeout``, ``connect_failed``,
    ``response_too_large``, ``http_error`` (non-2xx; ``status`` and an excerpt of ``body``),
    ``too_many_redirects``, ``cancelled``, ``request_failed``."""

    ok: bool
    status: int | None
    duration_ms: int
    body: str
    error: str | None
    retried: int = 0


def _mac(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()


def sign(secret: str, body: bytes, *, timestamp: int | None = None) -> str:
    """The ``X-Kintsugi-Signature`` value for ``body``: ``t=<unix seconds>,v1=<hex HMAC-SHA256>``."""
    t = int(time.time()) if timestamp is None else timestamp
    return f"t={t},v1={_mac(secret, t, body)}"


def verify_signature(
    secret: str, header: str, body: bytes, tolerance: int = SIGNATURE_TOLERANCE, *, now: float | None = None
) -> bool:
    """Whether ``header`` (an ``X-Kintsugi-Signature`` value) signs ``body`` with ``secret``, recently.

    Receivers written in other languages do the same: split the header on ``,`` into ``key=value``
    pairs, take ``t`` and every ``v1``; refuse when ``|now - t| > tolerance``; compute
    ``hex(HMAC-SHA256(secret, t + "." + raw_body))`` and accept when it equals one ``v1`` (compared in
    constant time)."""
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t":
            try:
                timestamp = int(value)
            except ValueError:
                return False
        elif key == "v1":
            candidates.append(value)
    if timestamp is None or not candidates:
        return False
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        return False
    expected = _mac(secret, timestamp, body)
    return any(hmac.compare_digest(expected, c) for c in candidates)
