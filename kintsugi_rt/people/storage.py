"""SQL for people: profiles (display name, @handle, avatar) on the users table. Every query is
parameterised; the conversations' side (who shares one with whom) is the messenger's."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, TypeAlias

import asyncpg

Executor: TypeAlias = "asyncpg.Connection | asyncpg.Pool"

# The unique index on lower(handle) (migrations/0011_people.sql).
HANDLE_INDEX = "users_handle_key"

_PROFILE_COLUMNS = "id, display_name, handle, avatar_media_id"


@dataclass(frozen=True, slots=True)
class ProfileRow:
    user_id: uuid.UUID
    display_name: str
    handle: str | None
    avatar_media_id: uuid.UUID | None


@dataclass(frozen=True, slots=True)
class AvatarCandidate:
    """An uploaded file someone wants as their avatar: whose it is and what kind."""

    owner_id: uuid.UUID
    kind: str


def _row(row: Any) -> ProfileRow:
    return ProfileRow(
        user_id=row["id"],
        display_name=row["display_name"],
        handle=row["handle"],
        avatar_media_id=row["avatar_media_id"],
    )


async def profile(db: Executor, user_id: uuid.UUID) -> ProfileRow | None:
    row = await db.fetchrow(f"SELECT {_PROFILE_COLUMNS} FROM users WHERE id = $1", user_id)  # noqa: S608
    return None if row is None else _row(row)


async def profiles(db: Executor, user_ids: list[uuid.UUID]) -> list[ProfileRow]:
    """The users' profiles, in the order of ``user_ids`` (unknown ids left out)."""
    rows = await db.fetch(
        f"SELECT {_PROFILE_COLUMNS} FROM users WHERE id = ANY($1::uuid[])",  # noqa: S608
        user_ids,
    )
    found = {r["id"]: _row(r) for r in rows}
    return [found[u] for u in user_ids if u in found]


async def by_email(db: Executor, email: str) -> ProfileRow | None:
    """The user with this (normalised) address: one probe of the unique index on lower(email)."""
    row = await db.fetchrow(
        f"SELECT {_PROFILE_COLUMNS} FROM users WHERE lower(email) = $1",  # noqa: S608
        email,
    )
    return None if row is None else _row(row)


async def by_handle(db: Executor, handle: str) -> ProfileRow | None:
    """The user with this (lower-case) handle: one probe of the unique index on lower(handle)."""
    row = await db.fetchrow(
        f"SELECT {_PROFILE_COLUMNS} FROM users WHERE lower(handle) = $1",  # noqa: S608
        handle,
    )
    return None if row is None else _row(row)


async def avatar_candidate(db: Executor, media_id: uuid.UUID) -> AvatarCandidate | None:
    """The file's owner and kind, its row share-locked until the transaction ends (so it cannot be
    deleted between this check and the update that points at it)."""
    row = await db.fetchrow("SELECT owner_id, kind FROM media WHERE id = $1 FOR SHARE", media_id)
    return None if row is None else AvatarCandidate(owner_id=row["owner_id"], kind=row["kind"])


async def update_profile(
    db: Executor,
    user_id: uuid.UUID,
    *,
    display_name: str | None,
    set_handle: bool,
    handle: str | None,
    set_avatar: bool,
    avatar_media_id: uuid.UUID | None,
) -> ProfileRow | None:
    """Change what is asked (``display_name`` when not ``None``, the others when their ``set_`` flag
    is on); the new profile, or ``None`` for an unknown user. Raises ``UniqueViolationError`` (on
    ``HANDLE_INDEX``) when another user holds the handle."""
    row = await db.fetchrow(
        f"""
        UPDATE users SET
            display_name = coalesce($2, display_name),
            handle = CASE WHEN $3 THEN $4 ELSE handle END,
            avatar_media_id = CASE WHEN $5 THEN $6::uuid ELSE avatar_media_id END,
            updated_at = now()
        WHERE id = $1
        RETURNING {_PROFILE_COLUMNS}
        """,  # noqa: S608 - a fixed column list
        user_id,
        display_name,
        set_handle,
        handle,
        set_avatar,
        avatar_media_id,
    )
    return None if row is None else _row(row)


async def is_someones_avatar(db: Executor, media_id: uuid.UUID) -> bool:
    """Whether the file is the current avatar of some user (anyone may then load it)."""
    found: bool = await db.fetchval(
        "SELECT EXISTS (SELECT 1 FROM users WHERE avatar_media_id = $1)", media_id
    )
    return found
