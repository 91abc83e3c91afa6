"""Example frames and replies of the people module, for docs/protocol.md."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from kintsugi_rt.media import MediaLinks
from kintsugi_rt.people import frames as m
from kintsugi_rt.socket.registry import ServerEvent

_ANN = uuid.UUID("6f1c2b1e-8d1a-4c55-9a51-2f7c0e1b9a10")
_BO = uuid.UUID("2b0f6c1e-5d0a-4a4e-9a1c-3f1f8f0e7a21")
_PHOTO = uuid.UUID("5d4c3b2a-1f0e-4d9c-8b7a-6f5e4d3c2b1a")
_BO_PROFILE: dict[str, Any] = {"user_id": str(_BO), "display_name": "Bo", "handle": "bo", "avatar": None}
_EXP = 1796153400
_EXPIRES = datetime.fromtimestamp(_EXP, UTC)
_CONTENT = f"/api/media/{_PHOTO}/content"
_AVATAR = MediaLinks(
    media_id=_PHOTO,
    url=f"{_CONTENT}?variant=original&exp={_EXP}&sig=Yq2vF0u3m1lKc7rHkP9s0wTn4LrJ6cPe1sAuKgBiNwQ",
    thumbnail_url=f"{_CONTENT}?variant=thumbnail&exp={_EXP}&sig=c8Vb1Nm3Qs6Ja5Hd0FgEuWoIeTyRiUZp9Xw2Lk4Rt7Y",
    expires_at=_EXPIRES,
)
_ANN_PROFILE = m.Profile(user_id=_ANN, display_name="Ann Lee", handle="ann_lee", avatar=_AVATAR)

LOOKUP = m.UserLookup(id="p1", handle="@bo")
LOOKUP_RESULT: dict[str, Any] = {"profile": _BO_PROFILE}
SEARCH = m.UserSearch(id="p2", query="bo", limit=20)
SEARCH_RESULT: dict[str, Any] = {"profiles": [_BO_PROFILE]}
GET = m.ProfileGet(id="p3", user_id=_BO)
GET_RESULT: dict[str, Any] = {"profile": _BO_PROFILE}
UPDATE = m.ProfileUpdate(id="p4", display_name="Ann Lee", handle="ann_lee", avatar_media_id=_PHOTO)
UPDATE_RESULT: dict[str, Any] = {
    "profile": {
        "user_id": str(_ANN),
        "display_name": "Ann Lee",
        "handle": "ann_lee",
        "avatar": {
            "media_id": str(_PHOTO),
            "url": _AVATAR.url,
            "thumbnail_url": _AVATAR.thumbnail_url,
            "expires_at": "2026-12-01T19:30:00Z",
        },
    }
}

EVENTS = (ServerEvent(m.ProfileUpdated, m.ProfileUpdated(profile=_ANN_PROFILE), durable=True),)
