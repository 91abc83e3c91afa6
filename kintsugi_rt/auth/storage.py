"""SQL for users, sessions and refresh tokens. Every query is parameterised."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from kintsugi_rt.auth.messages import User

_USER_COLUMNS = "id, email, display_name, tier, created_at"


def _user(row: Any) -> User:
    return User(
        id=row["id"],
        email=row["email"],
        display_name=row["display_name"],
        tier=row["tier"],
        created_at=row["created_at"],
    )


class EmailTaken(Exception):
    pass


async def create_user(conn: asyncpg.Connection, email: str, display_name: str, password_hash: str) -> User:
    try:
        row = await conn.fetchrow(
            f"INSERT INTO users (email, display_name, password_hash) VALUES ($1, $2, $3) "  # noqa: S608
            f"RETURNING {_USER_COLUMNS}",
            email,
            display_name,
            password_hash,
        )
    except asyncpg.UniqueViolationError:
        raise EmailTaken from None
    return _user(row)


async def find_credentials(conn: asyncpg.Connection, email: str) -> tuple[User, str] | None:
    row = await conn.fetchrow(
        f"SELECT {_USER_COLUMNS}, password_hash FROM users WHERE lower(email) = lower($1)",  # noqa: S608
        email,
    )
    return None if row is None else (_user(row), row["password_hash"])


async def update_password_hash(conn: asyncpg.Connection, user_id: uuid.UUID, password_hash: str) -> None:
    await conn.execute(
        "UPDATE users SET password_hash = $2, updated_at = now() WHERE id = $1", user_id, password_hash
    )


async def get_user(conn: asyncpg.Connection, user_id: uuid.UUID) -> User | None:
    row = await conn.fetchrow(f"SELECT {_USER_COLUMNS} FROM users WHERE id = $1", user_id)  # noqa: S608
    return None if row is None else _user(row)


async def create_session(
    conn: asyncpg.Connection, user_id: uuid.UUID, now: datetime, user_agent: str | None, ip: str | None
) -> uuid.UUID:
    session_id: uuid.UUID = await conn.fetchval(
        "INSERT INTO auth_sessions (user_id, created_at, refreshed_at, user_agent, ip) "
        "VALUES ($1, $2, $2, $3, $4) RETURNING id",
        user_id,
        now,
        user_agent,
        ip,
    )
    return session_id


async def insert_refresh_token(
    conn: asyncpg.Connection, session_id: uuid.UUID, token_hash: bytes, now: datetime, expires_at: datetime
) -> None:
    await conn.execute(
        "INSERT INTO refresh_tokens (token_hash, session_id, issued_at, expires_at) VALUES ($1, $2, $3, $4)",
        token_hash,
        session_id,
        now,
        expires_at,
    )


@dataclass(frozen=True, slots=True)
class RefreshTokenState:
    session_id: uuid.UUID
    user_id: uuid.UUID
    expires_at: datetime
    used_at: datetime | None
    session_revoked: bool


async def lock_refresh_token(conn: asyncpg.Connection, token_hash: bytes) -> RefreshTokenState | None:
    """Find a refresh token and lock both its row and its session's row until the transaction ends.

    Concurrent refreshes of one family queue here. Locking the token row itself matters: under READ
    COMMITTED a waiter re-reads only the rows it locks once the holder commits, so with the session row
    alone it would still see the token as unused and rotate it a second time.
    """
    row = await conn.fetchrow(
        "SELECT t.session_id, s.user_id, t.expires_at, t.used_at, s.revoked_at IS NOT NULL AS revoked "
        "FROM refresh_tokens t JOIN auth_sessions s ON s.id = t.session_id "
        "WHERE t.token_hash = $1 FOR UPDATE OF t, s",
        token_hash,
    )
    if row is None:
        return None
    return RefreshTokenState(
        row["session_id"], row["user_id"], row["expires_at"], row["used_at"], row["revoked"]
    )


async def mark_refresh_token_used(
    conn: asyncpg.Connection, token_hash: bytes, session_id: uuid.UUID, now: datetime
) -> None:
    await conn.execute("UPDATE refresh_tokens SET used_at = $2 WHERE token_hash = $1", token_hash, now)
    await conn.execute("UPDATE auth_sessions SET refreshed_at = $2 WHERE id = $1", session_id, now)


async def revoke_session(conn: asyncpg.Connection, session_id: uuid.UUID, now: datetime, reason: str) -> bool:
    """Revoke a live session; ``False`` if it was revoked already."""
    status: str = await conn.execute(
        "UPDATE auth_sessions SET revoked_at = $2, revoked_reason = $3 WHERE id = $1 AND revoked_at IS NULL",
        session_id,
        now,
        reason,
    )
    return status == "UPDATE 1"


async def revoke_user_sessions(conn: asyncpg.Connection, user_id: uuid.UUID, now: datetime) -> int:
    status: str = await conn.execute(
        "UPDATE auth_sessions SET revoked_at = $2, revoked_reason = 'logout_all' "
        "WHERE user_id = $1 AND revoked_at IS NULL",
        user_id,
        now,
    )
    return int(status.split()[-1])


async def active_session_user(
    conn: asyncpg.Connection, session_id: uuid.UUID, user_id: uuid.UUID
) -> User | None:
    """The user behind a live (not revoked) session, or ``None``."""
    row = await conn.fetchrow(
        "SELECT u.id, u.email, u.display_name, u.tier, u.created_at "
        "FROM auth_sessions s JOIN users u ON u.id = s.user_id "
        "WHERE s.id = $1 AND s.user_id = $2 AND s.revoked_at IS NULL",
        session_id,
        user_id,
    )
    return None if row is None else _user(row)
