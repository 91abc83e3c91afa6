"""Signed media URLs: what an ``<img>``, ``<audio>`` or ``<video>`` element can load without a token.

A URL names one file and one variant of it (the original or its thumbnail) and carries its expiry and an
HMAC-SHA256 over ``id|variant|exp``: it cannot be bent to another file, another variant or a later
expiry. The expiry is rounded up to a quarter of ``MEDIA_URL_TTL``, so the same file gets the same URL
for a while and browsers reuse what they cached.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import uuid
from datetime import UTC, datetime
from typing import Literal

from kintsugi_rt.errors import ApiError
from kintsugi_rt.settings import Settings

Variant = Literal["original", "thumbnail"]
VARIANTS: dict[str, Variant] = {"original": "original", "thumbnail": "thumbnail"}

URL_INVALID = "url_invalid"
URL_EXPIRED = "url_expired"

# What JWT_SECRET is mixed with when MEDIA_URL_SECRET is unset: a token signature can never be a URL's.
_DERIVATION_LABEL = b"kintsugi-rt media url signing key v1"
# A signature is 32 bytes: 43 base64url characters without padding.
_SIGNATURE_CHARS = 43
# Expiries beyond this are not timestamps any URL of ours carries.
_MAX_EXPIRY = 2**40


def url_key(settings: Settings) -> bytes:
    """``MEDIA_URL_SECRET``, or a key derived from ``JWT_SECRET`` with a domain-separating HMAC."""
    if settings.media_url_secret:
        return settings.media_url_secret.encode()
    return hmac.new(settings.jwt_secret.encode(), _DERIVATION_LABEL, hashlib.sha256).digest()


def url_invalid() -> ApiError:
    return ApiError(403, URL_INVALID, "This media URL is not valid: ask for a new one (media.links).")


def url_expired() -> ApiError:
    return ApiError(410, URL_EXPIRED, "This media URL has expired: ask for a new one (media.links).")


class UrlSigner:
    """Signs and checks media URLs with one key; knows nothing of who may read what."""

    def __init__(self, key: bytes, ttl_seconds: int) -> None:
        self._key = key
        self.ttl = max(1, ttl_seconds)
        # Expiries are multiples of this: one URL per file per bucket.
        self.bucket = max(1, self.ttl // 4)

    @classmethod
    def from_settings(cls, settings: Settings) -> UrlSigner:
        return cls(url_key(settings), math.ceil(settings.media_url_ttl.total_seconds()))

    def expiry(self, now: datetime) -> int:
        """The expiry of a URL issued at ``now``: at least the TTL away, rounded up to the bucket."""
        earliest = math.ceil(now.timestamp()) + self.ttl
        return -(-earliest // self.bucket) * self.bucket

    def signature(self, media_id: uuid.UUID, variant: Variant, exp: int) -> str:
        message = f"{media_id}|{variant}|{exp}".encode()
        digest = hmac.new(self._key, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def url(self, media_id: uuid.UUID, variant: Variant, exp: int) -> str:
        """The relative URL (the client knows the server's origin)."""
        sig = self.signature(media_id, variant, exp)
        return f"/api/media/{media_id}/content?variant={variant}&exp={exp}&sig={sig}"

    def verify(
        self, raw_id: str, variant: str | None, raw_exp: str | None, sig: str | None, now: datetime
    ) -> tuple[uuid.UUID, Variant]:
        """The file and variant a URL grants, or ``url_invalid`` (403) / ``url_expired`` (410).

        The signature is checked first (in constant time), so an expired URL is told apart from a forged
        one only for URLs we issued."""
        try:
            media_id = uuid.UUID(raw_id)
        except ValueError:
            raise url_invalid() from None
        chosen = VARIANTS.get(variant or "original")
        if chosen is None or sig is None or raw_exp is None:
            raise url_invalid()
        if not (raw_exp.isascii() and raw_exp.isdigit()) or len(raw_exp) > 13 or int(raw_exp) > _MAX_EXPIRY:
            raise url_invalid()
        exp = int(raw_exp)
        if len(sig) != _SIGNATURE_CHARS or not _decodes(sig):
            raise url_invalid()
        expected = self.signature(media_id, chosen, exp)
        if not hmac.compare_digest(expected.encode(), sig.encode()):
            raise url_invalid()
        if exp <= now.timestamp():
            raise url_expired()
        return media_id, chosen

    def expires_at(self, exp: int) -> datetime:
        return datetime.fromtimestamp(exp, UTC)


def _decodes(sig: str) -> bool:
    if not sig.isascii():
        return False
    try:
        base64.urlsafe_b64decode(sig + "=")
    except (binascii.Error, ValueError):
        return False
    return True
