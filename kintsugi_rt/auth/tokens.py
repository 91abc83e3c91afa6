"""Access tokens (JWT, HS256 pinned) and opaque refresh tokens (stored only as SHA-256)."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import jwt

ALGORITHM = "HS256"
ACCESS_TYPE = "access"
_REQUIRED_CLAIMS = ["sub", "exp", "iat", "jti", "typ", "sid"]


class TokenExpired(Exception):
    pass


class TokenInvalid(Exception):
    pass


@dataclass(frozen=True, slots=True)
class AccessClaims:
    user_id: uuid.UUID
    session_id: uuid.UUID
    jti: str
    issued_at: datetime
    expires_at: datetime


class AccessTokens:
    def __init__(self, secret: str, lifetime: timedelta) -> None:
        self._secret = secret
        self.lifetime = lifetime

    def issue(self, user_id: uuid.UUID, session_id: uuid.UUID, now: datetime) -> str:
        claims = {
            "sub": str(user_id),
            "sid": str(session_id),
            "typ": ACCESS_TYPE,
            "jti": secrets.token_urlsafe(12),
            "iat": int(now.timestamp()),
            "exp": int((now + self.lifetime).timestamp()),
        }
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM)

    def verify(self, token: str, now: datetime) -> AccessClaims:
        """Check signature, algorithm, type and expiry against ``now`` (the injected clock)."""
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                options={"require": _REQUIRED_CLAIMS, "verify_exp": False, "verify_iat": False},
            )
            if claims["typ"] != ACCESS_TYPE:
                raise TokenInvalid("not an access token")
            if not all(isinstance(claims[name], str) for name in ("sub", "sid", "jti")):
                raise TokenInvalid("sub, sid and jti must be strings")
            user_id = uuid.UUID(claims["sub"])
            session_id = uuid.UUID(claims["sid"])
            issued_at = datetime.fromtimestamp(int(claims["iat"]), tz=now.tzinfo)
            expires_at = datetime.fromtimestamp(int(claims["exp"]), tz=now.tzinfo)
        except (jwt.InvalidTokenError, ValueError, TypeError, OverflowError, OSError) as exc:
            # Only a token we signed gets this far, but its claims are still checked like input.
            raise TokenInvalid(str(exc)) from None
        if expires_at <= now:
            raise TokenExpired
        return AccessClaims(user_id, session_id, str(claims["jti"]), issued_at, expires_at)


def new_refresh_token() -> tuple[str, bytes]:
    """A fresh opaque token and the hash we store for it."""
    token = secrets.token_urlsafe(32)
    return token, hash_refresh_token(token)


def hash_refresh_token(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()
