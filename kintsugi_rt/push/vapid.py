"""VAPID (RFC 8292): the server's key pair, and the ``Authorization`` header that proves a push is ours.

The keys come from ``VAPID_PUBLIC_KEY`` / ``VAPID_PRIVATE_KEY``. Outside production, without them, a
private key is generated once into the data directory (as the development JWT secret is), so browsers'
subscriptions outlive restarts; production never generates one: without the keys push is off.
"""

from __future__ import annotations

import base64
import os
import secrets
import time
from pathlib import Path
from urllib.parse import urlsplit

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from kintsugi_rt.settings import Settings, SettingsError

DEVELOPMENT_SUBJECT = "mailto:push@localhost"
# A token lives 12 hours (push services accept up to 24); a fresh one is signed an hour before the end.
TOKEN_LIFETIME_SECONDS = 12 * 3600
_RENEW_BEFORE_SECONDS = 3600
_KEY_FILE = "vapid_private_key"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def public_key_of(private_key: ec.EllipticCurvePrivateKey) -> str:
    """The uncompressed point, base64url: a browser's ``applicationServerKey``."""
    point = private_key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return b64url(point)


def private_key_from(raw: str) -> ec.EllipticCurvePrivateKey:
    return ec.derive_private_key(int.from_bytes(_unb64url(raw), "big"), ec.SECP256R1())


def generate_private_key() -> str:
    """A new private key as 32 raw bytes, base64url (the form ``VAPID_PRIVATE_KEY`` takes)."""
    key = ec.generate_private_key(ec.SECP256R1())
    return b64url(key.private_numbers().private_value.to_bytes(32, "big"))


class Vapid:
    """The key pair and the subject; signs (and caches) one token per push service origin."""

    def __init__(self, private_key: ec.EllipticCurvePrivateKey, subject: str) -> None:
        self._private_key = private_key
        self.public_key = public_key_of(private_key)
        self.subject = subject
        self._tokens: dict[str, tuple[str, float]] = {}

    def authorization(self, endpoint: str) -> str:
        """``vapid t=<ES256 JWT: aud = the endpoint's origin, exp, sub>, k=<our public key>``."""
        parts = urlsplit(endpoint)
        audience = f"{parts.scheme}://{parts.netloc}"
        now = time.time()  # the JWT's exp is wall-clock time, checked by the push service
        cached = self._tokens.get(audience)
        if cached is None or cached[1] - now < _RENEW_BEFORE_SECONDS:
            expires = int(now) + TOKEN_LIFETIME_SECONDS
            claims = {"aud": audience, "exp": expires, "sub": self.subject}
            token = jwt.encode(claims, self._private_key, algorithm="ES256", headers={"typ": "JWT"})
            if len(self._tokens) > 1000:
                self._tokens.clear()
            cached = self._tokens[audience] = (token, float(expires))
        return f"vapid t={cached[0]}, k={self.public_key}"


def load_vapid(settings: Settings) -> Vapid | None:
    """The server's VAPID identity; ``None`` in production without keys (push is off). Does file I/O
    outside production (the generated key), so it runs at start, not when the node is built."""
    if settings.vapid_private_key is not None:
        key = private_key_from(settings.vapid_private_key)
        if public_key_of(key) != settings.vapid_public_key:
            raise SettingsError("VAPID_PUBLIC_KEY: is not the public key of VAPID_PRIVATE_KEY")
        return Vapid(key, settings.vapid_subject or DEVELOPMENT_SUBJECT)
    if settings.is_production:
        return None
    raw = _development_key(settings.data_dir)
    return Vapid(private_key_from(raw), settings.vapid_subject or DEVELOPMENT_SUBJECT)


def _development_key(data_dir: Path) -> str:
    """Generate a private key once and keep it (linked into place, so two nodes agree on one)."""
    path = data_dir / _KEY_FILE
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        staging = data_dir / f".{_KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(generate_private_key() + "\n")
        try:
            os.link(staging, path)
        except FileExistsError:
            pass
        finally:
            staging.unlink()
    return path.read_text().strip()
