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


class PresenceWatch(ClientMessage, tag="presence.watch"):
    """Receive ``presence`` events for these users on this socket; the reply holds their state now."""

    user_ids: UserIds


class PresenceUnwatch(ClientMessage, tag="presence.unwatch"):
    """Stop receiving ``presence`` events for these users on this socket."""

    user_ids: UserIds


class UserPresence(msgspec.Struct, omit_defaults=True):
    """One user's state; ``last_seen`` only while offline."""

    user_id: uuid.UUID
    status: Status
    last_seen: datetime | None = None


class PresenceState(msgspec.Struct):
    """The reply to ``presence.watch``: users that exist among those asked for."""

    users: list[UserPresence]


class Presence(ServerMessage, tag="presence"):
    """A user came online or went offline (ephemeral: dropped first under pressure, not replayed)."""

    user_id: uuid.UUID
    status: Status
    last_seen: datetime | None = None
