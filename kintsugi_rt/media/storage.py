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
class StoredThumbnail:
    """An image's thumbnail: a second object in the storage."""

    storage_key: str
    content_type: str
    size: int
    sha256: str
    width: int
    height: int


@dataclass(frozen=True, slots=True)
class StoredMedia:
    """A media file as stored: what clients are told, whose it is, where its bytes are, and its
    thumbnail if it has one."""

    info: MediaInfo
    owner_id: uuid.UUID
    storage_key: str
    thumbnail: StoredThumbnail | None = None


async def insert_thumbnail(db: Executor, media_id: uuid.UUID, thumbnail: StoredThumbnail) -> None:
    """Record the thumbnail of a media file (its bytes already stored)."""
    await db.execute(
        """
        INSERT INTO media_thumbnails (media_id, storage_key, content_type, size, sha256, width, height)
        VALUES ($1, $2, $3, $4, $5, $6, $7)
        """,
        media_id,
        thumbnail.storage_key,
        thumbnail.content_type,
        thumbnail.size,
        thumbnail.sha256,
        thumbnail.width,
        thumbnail.height,
    )


async def get_media(db: Executor, media_id: uuid.UUID) -> StoredMedia | None:
    """The media file, or ``None``; whoever asks may still not be allowed to read it."""
    row = await db.fetchrow(
        """
        SELECT m.id, m.owner_id, m.kind, m.content_type, m.size, m.sha256, m.filename, m.width, m.height,
               m.duration_ms, m.storage_key, m.created_at,
               t.storage_key AS t_key, t.content_type AS t_type, t.size AS t_size, t.sha256 AS t_sha256,
               t.width AS t_width, t.height AS t_height
        FROM media m LEFT JOIN media_thumbnails t ON t.media_id = m.id
        WHERE m.id = $1
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
    thumbnail = None
    if row["t_key"] is not None:
        thumbnail = StoredThumbnail(
            storage_key=row["t_key"],
            content_type=row["t_type"],
            size=row["t_size"],
            sha256=row["t_sha256"],
            width=row["t_width"],
            height=row["t_height"],
        )
    return StoredMedia(
        info=info, owner_id=row["owner_id"], storage_key=row["storage_key"], thumbnail=thumbnail
    )


@dataclass(frozen=True, slots=True)
class LinkTarget:
    """What signing a file's URLs needs: whose it is (for the access check) and whether it has a
    thumbnail."""

    owner_id: uuid.UUID
    has_thumbnail: bool


async def link_targets(db: Executor, media_ids: list[uuid.UUID]) -> dict[uuid.UUID, LinkTarget]:
    """Of ``media_ids``, those that exist."""
    rows = await db.fetch(
        """
        SELECT m.id, m.owner_id, t.media_id IS NOT NULL AS has_thumbnail
        FROM media m LEFT JOIN media_thumbnails t ON t.media_id = m.id
        WHERE m.id = ANY($1::uuid[])
        """,
        media_ids,
    )
    return {r["id"]: LinkTarget(owner_id=r["owner_id"], has_thumbnail=r["has_thumbnail"]) for r in rows}
