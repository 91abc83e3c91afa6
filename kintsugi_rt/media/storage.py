"""SQL for media rows (the metadata of uploaded files; their bytes are in ``blobs``). Every query is
parameterised."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import TypeAlias

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


@dataclass(frozen=True, slots=True)
class StoredMedia:
    """A media file as stored: what clients are told, whose it is, and where its bytes are."""

    info: MediaInfo
    owner_id: uuid.UUID
    storage_key: str


async def get_media(db: Executor, media_id: uuid.UUID) -> StoredMedia | None:
    """The media file, or ``None``; whoever asks may still not be allowed to read it."""
    row = await db.fetchrow(
        """
        SELECT id, owner_id, kind, content_type, size, sha256, filename, width, height,
               duration_ms, storage_key, created_at
        FROM media WHERE id = $1
        """,
        media_id,
    )
    if row is None:
        return None
    info = MediaInfo(
        id=row["id"],
        kind=row["kind"],
        content_type=row["content_type"],
        size=row["size"],
        sha256=row["sha256"],
        created_at=row["created_at"],
        filename=row["filename"],
        width=row["width"],
        height=row["height"],
        duration_ms=row["duration_ms"],
    )
    return StoredMedia(info=info, owner_id=row["owner_id"], storage_key=row["storage_key"])
