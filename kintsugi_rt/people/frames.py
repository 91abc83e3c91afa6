"""People frames: finding someone to message (exact lookup, search among your contacts) and profiles.

A *profile* is what anyone who may see a user is shown: id, display name, @handle and avatar — never
the email address.
"""

from __future__ import annotations

import uuid
from typing import Annotated

import msgspec

from kintsugi_rt.media import MediaLinks
from kintsugi_rt.socket.protocol import ClientMessage, ServerMessage

# Longer than any address we store (254) so surrounding spaces still reach the normalisation.
Email = Annotated[str, msgspec.Meta(min_length=1, max_length=320)]
# A handle is 3 to 32 characters; room for a leading '@' and spaces, which are taken off.
HandleInput = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
# Trimmed and checked by the handler (1 to 64 characters, no control characters).
DisplayName = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
Query = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
SearchLimit = Annotated[int, msgspec.Meta(ge=1, le=50)]

# --- shapes ----------------------------------------------------------------------------------------


class Profile(msgspec.Struct):
    user_id: uuid.UUID
    display_name: str
    handle: str | None  # without the '@', lower-case
    # The profile picture (an image): signed links to it and its thumbnail, valid until ``expires_at``;
    # ``GET /api/media/{media_id}`` with the access token works too.
    avatar: MediaLinks | None


class ProfileRef(msgspec.Struct):
    profile: Profile


class ProfilePage(msgspec.Struct):
    profiles: list[Profile]


# --- client frames ---------------------------------------------------------------------------------


class UserLookup(ClientMessage, tag="user.lookup", omit_defaults=True):
    """Find one person by their exact email address or @handle (give exactly one). Rate-limited per
    user (USER_LOOKUP_RATE_LIMIT); ``not_found`` when nobody has it."""

    email: Email | None = None
    handle: HandleInput | None = None


class UserSearch(ClientMessage, tag="user.search"):
    """People you share a conversation with whose display name or handle contains ``query`` (any
    case; prefix matches first). Never searches everyone. Rate-limited (USER_SEARCH_RATE_LIMIT)."""

    query: Query
    limit: SearchLimit = 20


class ProfileGet(ClientMessage, tag="profile.get", omit_defaults=True):
    """Your own profile, or (``user_id``) that of someone you share a conversation with."""

    user_id: uuid.UUID | None = None


class ProfileUpdate(ClientMessage, tag="profile.update"):
    """Change your display name, @handle or avatar; a field left out is kept, ``null`` clears the
    handle or the avatar. Your other devices get ``profile.updated``."""

    display_name: DisplayName | msgspec.UnsetType = msgspec.UNSET
    handle: HandleInput | msgspec.UnsetType | None = msgspec.UNSET
    avatar_media_id: uuid.UUID | msgspec.UnsetType | None = msgspec.UNSET


# --- server events ---------------------------------------------------------------------------------


class ProfileUpdated(ServerMessage, tag="profile.updated"):
    """Your profile changed (on another device, or this one): its whole new state."""

    profile: Profile
