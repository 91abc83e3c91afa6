"""SQL for media rows (the metadata of uploaded files; their bytes are in ``blobs``). Every query is
parameterised."""

from __future__ import annotations

import uuid
from typing import Any, TypeAlias

import asyncpg

from kintsugi_rt.media.messages import MediaInfo

Executor: TypeAlias = "asyncpg.Connection | asyncpg.Pool"


async def insert_media(db: Executor, owner_id: uuid.UUID, info: MediaInfo, storage_key: str) -> None:
    """Record a file whose bytes are already stored under ``storage_key``."""
    await db.execute(
        """
        INSERT INTO media (id, owner_id, kind, content_type, size, sha256, filename,
                           width, height, duration_ms, storage_key, created_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
        """,
        info.id,
        owner_id,
        info.kind,
        info.content_type,
        info.size,
        info.sha256,
        info.filename,
        info.width,
        info.height,
        info.duration_ms,
        storage_key,
        info.created_at,
    )


async def get_media(db: Executor, media_id: uuid.UUID) -> Any:
    """The media row (every column), or ``None``; whoever asks may still not be allowed to read it."""
    return await db.fetchrow(
        """
        SELECT id, owner_id, kind, content_type, size, sha256, filename, width, height,
               duration_ms, storage_key, created_at
        FROM media WHERE id = $1
        """,
        media_id,
    )
