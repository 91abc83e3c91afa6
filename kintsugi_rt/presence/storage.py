"""SQL for presence: the last-seen time stored on each user. Every query is parameterised."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import TypeAlias

import asyncpg

Executor: TypeAlias = "asyncpg.Connection | asyncpg.Pool"


async def set_last_seen(db: Executor, user_id: uuid.UUID, at: datetime) -> datetime | None:
    """Store when the user went offline; the stored value, or ``None`` if the user is gone."""
    last_seen: datetime | None = await db.fetchval(
        "UPDATE users SET last_seen_at = $2 WHERE id = $1 RETURNING last_seen_at",
        user_id,
        at,
    )
    return last_seen


async def last_seen_of(db: Executor, user_ids: list[uuid.UUID]) -> list[tuple[uuid.UUID, datetime | None]]:
    """``(user_id, last_seen_at)`` of those of ``user_ids`` that exist, in no particular order."""
    rows = await db.fetch("SELECT id, last_seen_at FROM users WHERE id = ANY($1::uuid[])", user_ids)
    return [(row["id"], row["last_seen_at"]) for row in rows]
