"""The auth REST bodies, as msgspec types (decoded and validated in one pass)."""

from __future__ import annotations

import uuid
from datetime import datetime

import msgspec


class RegisterRequest(msgspec.Struct, forbid_unknown_fields=True):
    email: str
    password: str
    display_name: str


class LoginRequest(msgspec.Struct, forbid_unknown_fields=True):
    email: str
    password: str


class RefreshRequest(msgspec.Struct, forbid_unknown_fields=True):
    refresh_token: str


class User(msgspec.Struct):
    id: uuid.UUID
    email: str
    display_name: str
    tier: str
    created_at: datetime


class TokenPair(msgspec.Struct):
    user: User
    access_token: str
    refresh_token: str
    expires_in: int
    refresh_expires_in: int
    token_type: str = "Bearer"


class SessionsRevoked(msgspec.Struct):
    """``POST /api/auth/logout-all``: how many logins were ended."""

    sessions_revoked: int
