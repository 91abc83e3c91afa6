"""Media's REST wire types."""

from __future__ import annotations

import uuid
from datetime import datetime

import msgspec


class MediaInfo(msgspec.Struct, omit_defaults=True):
    """What the API says about a stored file (``POST /api/media``, ``GET /api/media/{id}/meta``)."""

    id: uuid.UUID
    kind: str
    content_type: str
    size: int
    sha256: str
    created_at: datetime
    filename: str | None = None
    width: int | None = None
    height: int | None = None
    duration_ms: int | None = None


class MediaLinks(msgspec.Struct):
    """Signed URLs of one file, loadable without a token (``<img src>``, ``<audio>``, ``<video>``) until
    ``expires_at``; ask for new ones with ``media.links`` then. ``thumbnail_url`` is set for images that
    have a thumbnail (320 px on the longer side), else ``null``. Relative to the server's origin."""

    media_id: uuid.UUID
    url: str
    thumbnail_url: str | None
    expires_at: datetime
