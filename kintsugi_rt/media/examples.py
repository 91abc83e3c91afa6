"""Example frames of the media module, for docs/protocol.md."""

from __future__ import annotations

import uuid
from typing import Any

from kintsugi_rt.media.frames import MediaLinksGet

_IMAGE = uuid.UUID("5d1f8a0e-7c1b-4a55-9e0a-0b3f2c7d9e11")
_GONE = uuid.UUID("0b7e4c1a-9f3d-4e2b-8a6c-5d1e2f3a4b5c")
_EXP = 1795694400
_SIG = "0Hk3bWfXo7mZq2Vd8yTn4LrJ6cPe1sAuKgBiNwQhYxM"
_THUMB_SIG = "Zp9Xw2Lk4Rt7Yc1Vb8Nm3Qs6Ja5Hd0FgEuWoIeTyRiU"

LINKS = MediaLinksGet(id="m1", media_ids=[_IMAGE, _GONE])
LINKS_RESULT: dict[str, Any] = {
    "links": [
        {
            "media_id": str(_IMAGE),
            "url": f"/api/media/{_IMAGE}/content?variant=original&exp={_EXP}&sig={_SIG}",
            "thumbnail_url": f"/api/media/{_IMAGE}/content?variant=thumbnail&exp={_EXP}&sig={_THUMB_SIG}",
            "expires_at": "2026-11-26T12:00:00Z",
        }
    ],
    "not_found": [str(_GONE)],
}
