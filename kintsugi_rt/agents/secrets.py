"""Agent endpoint secrets, encrypted at rest with AES-256-GCM.

A stored secret is ``v1.<key id>.<base64url(nonce || ciphertext+tag)>``; the key id (8 hex digits of
the key's SHA-256) says which key encrypted it. New secrets use AGENT_SECRETS_KEY; AGENT_SECRETS_KEYS_OLD
are still accepted for decrypting, so keys rotate without downtime: set a new AGENT_SECRETS_KEY, move
the old one into AGENT_SECRETS_KEYS_OLD, run ``kintsugi-rt agents rekey``, then drop the old key.

Outside production an unset AGENT_SECRETS_KEY is generated once into KINTSUGI_DATA_DIR
(``agent_secrets_key``); production has no such fallback. Plaintext secrets are never logged.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import secrets
from collections.abc import Sequence
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from kintsugi_rt.settings import Settings

_PREFIX = "v1"
_AAD = b"kintsugi-rt agent secret v1"
KEY_FILE = "agent_secrets_key"


class SecretsUnavailable(Exception):
    """No key to encrypt or decrypt with (production without AGENT_SECRETS_KEY), or a ciphertext no
    configured key opens."""


def decode_key(text: str) -> bytes:
    """A key as configured: base64 (standard or URL-safe, padding optional) of 32 bytes."""
    raw = text.strip()
    try:
        key = base64.urlsafe_b64decode(raw.replace("+", "-").replace("/", "_") + "=" * (-len(raw) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("not base64") from None
    if len(key) != 32:
        raise ValueError("must be base64 of 32 bytes (openssl rand -base64 32)")
    return key


def key_id(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()[:8]


def new_key() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


class SecretBox:
    """Encrypts with the current key; decrypts with it or any old one (chosen by key id)."""

    def __init__(self, current: bytes | None, old: Sequence[bytes] = ()) -> None:
        self._current = current
        self._keys = {key_id(k): AESGCM(k) for k in old}
        if current is not None:
            self._keys[key_id(current)] = AESGCM(current)

    @property
    def current_id(self) -> str | None:
        return None if self._current is None else key_id(self._current)

    def encrypt(self, plaintext: str) -> str:
        if self._current is None:
            raise SecretsUnavailable("AGENT_SECRETS_KEY is not set")
        nonce = secrets.token_bytes(12)
        sealed = AESGCM(self._current).encrypt(nonce, plaintext.encode(), _AAD)
        body = base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")
        return f"{_PREFIX}.{key_id(self._current)}.{body}"

    def decrypt(self, token: str) -> str:
        prefix, _, rest = token.partition(".")
        kid, _, body = rest.partition(".")
        cipher = self._keys.get(kid)
        if prefix != _PREFIX or cipher is None:
            raise SecretsUnavailable(f"no configured key opens this secret (key id {kid!r})")
        try:
            data = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
            return cipher.decrypt(data[:12], data[12:], _AAD).decode()
        except (InvalidTag, binascii.Error, ValueError):
            raise SecretsUnavailable(f"the secret does not open with key {kid!r}") from None

    def is_current(self, token: str) -> bool:
        """Whether ``token`` is encrypted with the current key (``rekey`` leaves those alone)."""
        return self.current_id is not None and token.split(".")[1:2] == [self.current_id]


def box_from_settings(settings: Settings) -> SecretBox:
    """The box for these settings: AGENT_SECRETS_KEY (or, outside production, the key generated once
    into the data dir), and AGENT_SECRETS_KEYS_OLD for decrypting."""
    old = [decode_key(k) for k in settings.agent_secrets_keys_old]
    if settings.agent_secrets_key is not None:
        return SecretBox(decode_key(settings.agent_secrets_key), old)
    if settings.is_production:
        return SecretBox(None, old)
    return SecretBox(decode_key(_development_key(settings.data_dir)), old)


def _development_key(data_dir: Path) -> str:
    """Generate a key once and keep it (written aside and linked into place, so two nodes starting
    together agree on one)."""
    path = data_dir / KEY_FILE
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        staging = data_dir / f".{KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(new_key() + "\n")
        try:
            os.link(staging, path)
        except FileExistsError:
            pass
        finally:
            staging.unlink()
    return path.read_text().strip()
