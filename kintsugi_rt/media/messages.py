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
