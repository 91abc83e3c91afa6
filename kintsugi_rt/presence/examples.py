"""Example frames of the presence module, for docs/protocol.md."""

from __future__ import annotations

import uuid
from typing import Any

from kintsugi_rt.presence.frames import Presence, PresenceUnwatch, PresenceWatch
from kintsugi_rt.socket.registry import ServerEvent

_USER = uuid.UUID("6f1c2b1e-8d1a-4c55-9a51-2f7c0e1b9a10")

WATCH = PresenceWatch(id="w1", user_ids=[_USER])
WATCH_RESULT: dict[str, Any] = {"users": [{"user_id": str(_USER), "status": "online"}]}
UNWATCH = PresenceUnwatch(id="w2", user_ids=[_USER])

EVENTS = (ServerEvent(Presence, Presence(user_id=_USER, status="online")),)
