"""Presence frames."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

import msgspec

from kintsugi_rt.socket.protocol import ClientMessage, ServerMessage

MAX_WATCHED = 500

UserIds = Annotated[list[uuid.UUID], msgspec.Meta(min_length=1, max_length=MAX_WATCHED)]
Status = Literal["online", "offline"]
# ``unknown``: no such user, or one the watcher may not see (the two are never told apart).
WatchedStatus = Literal["online", "offline", "unknown"]


class PresenceWatch(ClientMessage, tag="presence.watch"):
    """The current state of these users. Only users who share a conversation with you are visible (and
    you receive their ``presence`` events on every socket anyway); any other id answers ``unknown``."""

    user_ids: UserIds


class PresenceUnwatch(ClientMessage, tag="presence.unwatch"):
    """Accepted for older clients and does nothing: ``presence.watch`` no longer subscribes."""

    user_ids: UserIds


class UserPresence(msgspec.Struct, omit_defaults=True):
    """One user's state; ``last_seen`` only while offline."""

    user_id: uuid.UUID
    status: WatchedStatus
    last_seen: datetime | None = None


class PresenceState(msgspec.Struct):
    """The reply to ``presence.watch``: every user asked for, in the order asked."""

    users: list[UserPresence]


class Presence(ServerMessage, tag="presence"):
    """A user you share a conversation with came online or went offline (ephemeral: dropped first under
    pressure, not replayed; once per change per socket)."""

    user_id: uuid.UUID
    status: Status
    last_seen: datetime | None = None
