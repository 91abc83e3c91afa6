"""People: finding someone to message, and profiles (display name, @handle, avatar).

- ``user.lookup`` finds exactly one person by their exact email address (normalised as auth stores
  it) or @handle (any case, with or without the '@'). Anyone may be found this way, but only by
  someone who already knows the exact address or handle, and only USER_LOOKUP_RATE_LIMIT times per
  user: no enumerating accounts. A known and an unknown address cost the same (one probe of a unique
  index) and answer alike but for the result.
- ``user.search`` matches by name or handle, but only among the people the caller shares a
  conversation with (the messenger says who they are); never the whole users table.
- ``profile.get`` shows the caller's own profile, or that of someone they share a conversation with.
- ``profile.update`` changes the caller's display name, handle or avatar; their devices get the
  durable ``profile.updated``.

A profile never carries the email address. Avatars are images their owner uploaded; a file that is
someone's current avatar may be read by every signed-in user (``can_see_avatar``, granted to media in
wiring.py).
"""

from __future__ import annotations

import math
import re
import unicodedata
import uuid

import asyncpg
import msgspec

from kintsugi_rt.auth.validation import check_display_name, normalize_email
from kintsugi_rt.context import AppContext
from kintsugi_rt.logs import get_logger
from kintsugi_rt.media import MediaService
from kintsugi_rt.messenger import MessengerService
from kintsugi_rt.people import storage
from kintsugi_rt.people.frames import (
    Profile,
    ProfileGet,
    ProfilePage,
    ProfileRef,
    ProfileUpdate,
    ProfileUpdated,
    UserLookup,
    UserSearch,
)
from kintsugi_rt.settings import RateLimit
from kintsugi_rt.socket import streams
from kintsugi_rt.socket.protocol import BAD_REQUEST, NOT_FOUND, RATE_LIMITED
from kintsugi_rt.socket.registry import SocketContext, SocketError

log = get_logger(__name__)

HANDLE_TAKEN = "handle_taken"

ERROR_CODES = {
    HANDLE_TAKEN: "Another user has that @handle, or it is reserved (admin, support, …); "
    "``details.field`` is ``handle``.",
}

HANDLE_PATTERN = re.compile(r"[a-z][a-z0-9_]{2,31}")
HANDLE_RULES = "3 to 32 of a-z, 0-9 and _, starting with a letter"
# Handles nobody may take: they would pass for the service speaking, or for a mention of everyone.
RESERVED_HANDLES = frozenset(
    {
        "abuse",
        "admin",
        "administrator",
        "all",
        "anonymous",
        "api",
        "deleted",
        "everyone",
        "help",
        "here",
        "info",
        "kintsugi",
        "kintsugi_rt",
        "moderator",
        "noreply",
        "no_reply",
        "null",
        "official",
        "postmaster",
        "root",
        "security",
        "staff",
        "support",
        "system",
        "undefined",
        "unknown",
        "webmaster",
    }
)


def handle_key(raw: str) -> str | None:
    """The stored form of a handle as typed (spaces and one leading '@' taken off, lower-cased), or
    ``None`` when it cannot be one. ASCII only: some non-ASCII letters lower-case to ASCII ones (the
    Kelvin sign to ``k``), which must not reach a handle."""
    text = raw.strip()
    if text.startswith("@"):
        text = text[1:]
    if not text.isascii():
        return None
    text = text.lower()
    return text if HANDLE_PATTERN.fullmatch(text) else None


def _bad(field: str, message: str) -> SocketError:
    return SocketError(BAD_REQUEST, message, {"field": field})


def _no_user() -> SocketError:
    return SocketError(NOT_FOUND, "No such user.")


class PeopleService:
    def __init__(self, ctx: AppContext, *, messenger: MessengerService, media: MediaService) -> None:
        self.ctx = ctx
        self.settings = ctx.settings
        self.messenger = messenger
        self.media = media

    # --- helpers ------------------------------------------------------------------------------------

    async def _limit(self, scope: str, user_id: uuid.UUID, rule: RateLimit, what: str) -> None:
        wait = await self.ctx.rate_limiter.hit(scope, str(user_id), rule)
        if wait is None:
            return
        retry_ms = max(1, math.ceil(wait * 1000))
        log.info("people.rate_limited", user_id=str(user_id), limit=scope, retry_after_ms=retry_ms)
        raise SocketError(
            RATE_LIMITED,
            f"Too many {what}; try again in {max(1, math.ceil(wait))} s.",
            retry_after_ms=retry_ms,
        )

    async def _views(
        self, rows: list[storage.ProfileRow], db: storage.Executor | None = None
    ) -> list[Profile]:
        """The profiles, with signed links to their avatars (one query for them all; on ``db`` when
        inside a transaction)."""
        avatars = [row.avatar_media_id for row in rows if row.avatar_media_id is not None]
        links = await self.media.links_many(avatars, db) if avatars else {}
        return [
            Profile(
                user_id=row.user_id,
                display_name=row.display_name,
                handle=row.handle,
                avatar=None if row.avatar_media_id is None else links.get(row.avatar_media_id),
            )
            for row in rows
        ]

    async def _view(self, row: storage.ProfileRow, db: storage.Executor | None = None) -> Profile:
        return (await self._views([row], db))[0]

    # --- finding people -------------------------------------------------------------------------------

    async def lookup(self, conn: SocketContext, message: UserLookup) -> ProfileRef:
        # Counted first, whatever the input: every attempt uses the budget.
        rule = self.settings.user_lookup_rate_limit
        await self._limit("people:lookup", conn.user_id, rule, "lookups")
        if (message.email is None) == (message.handle is None):
            raise _bad("email", "Give exactly one of email and handle.")
        pool = self.ctx.db.pool
        if message.email is not None:
            email = normalize_email(message.email)
            if email is None:
                raise _bad("email", "Not a valid email address.")
            row = await storage.by_email(pool, email)
        else:
            assert message.handle is not None
            handle = handle_key(message.handle)
            # Something that cannot be a handle is nobody's: the same answer as an unknown one.
            row = None if handle is None else await storage.by_handle(pool, handle)
        if row is None:
            raise _no_user()
        return ProfileRef(profile=await self._view(row))

    async def search(self, conn: SocketContext, message: UserSearch) -> ProfilePage:
        rule = self.settings.user_search_rate_limit
        await self._limit("people:search", conn.user_id, rule, "searches")
        # As display names are stored (auth's check_display_name): spaces collapsed; NFC.
        query = unicodedata.normalize("NFC", " ".join(message.query.split()))
        if query.startswith("@"):  # "@ann" looks for the handle (and names) containing "ann"
            query = query[1:].lstrip()
        if not query:
            raise _bad("query", "Search for at least one character.")
        found = await self.messenger.contacts_matching(conn.user_id, query, message.limit)
        rows = await storage.profiles(self.ctx.db.pool, found) if found else []
        return ProfilePage(profiles=await self._views(rows))

    # --- profiles -----------------------------------------------------------------------------------

    async def get(self, conn: SocketContext, message: ProfileGet) -> ProfileRef:
        me = conn.user_id
        target = message.user_id if message.user_id is not None else me
        if target != me and not await self.messenger.shares_conversation(me, target):
            raise _no_user()
        row = await storage.profile(self.ctx.db.pool, target)
        if row is None:
            raise _no_user()
        return ProfileRef(profile=await self._view(row))

    async def update(self, conn: SocketContext, message: ProfileUpdate) -> ProfileRef:
        me = conn.user_id
        display_name: str | None = None
        if not isinstance(message.display_name, msgspec.UnsetType):
            display_name, problem = check_display_name(message.display_name)
            if problem is not None:
                raise _bad("display_name", f"The display name: {problem}")
        set_handle = not isinstance(message.handle, msgspec.UnsetType)
        handle: str | None = None
        if isinstance(message.handle, str):
            handle = handle_key(message.handle)
            if handle is None:
                raise _bad("handle", f"A handle has {HANDLE_RULES}.")
            if handle in RESERVED_HANDLES:
                raise SocketError(HANDLE_TAKEN, "That handle is reserved.", {"field": "handle"})
        set_avatar = not isinstance(message.avatar_media_id, msgspec.UnsetType)
        avatar = message.avatar_media_id if isinstance(message.avatar_media_id, uuid.UUID) else None
        if display_name is None and not set_handle and not set_avatar:
            return await self.get(conn, ProfileGet())  # nothing to change

        async with self.ctx.db.pool.acquire() as db, db.transaction():
            if avatar is not None:
                candidate = await storage.avatar_candidate(db, avatar)
                if candidate is None or candidate.owner_id != me:
                    raise SocketError(NOT_FOUND, "No such media.", {"field": "avatar_media_id"})
                if candidate.kind != "image":
                    raise _bad("avatar_media_id", "An avatar is an image (upload it with kind=image).")
            try:
                row = await storage.update_profile(
                    db,
                    me,
                    display_name=display_name,
                    set_handle=set_handle,
                    handle=handle,
                    set_avatar=set_avatar,
                    avatar_media_id=avatar,
                )
            except asyncpg.UniqueViolationError as exc:
                if exc.constraint_name != storage.HANDLE_INDEX:
                    raise
                # Someone else holds it (or took it while this waited for their commit).
                raise SocketError(HANDLE_TAKEN, "That handle is taken.", {"field": "handle"}) from None
            if row is None:
                raise _no_user()
            profile = await self._view(row, db)
            delivery = await streams.append(db, [me], ProfileUpdated(profile=profile))
        await self.ctx.events.publish_durable(delivery)
        changed = [
            name
            for name, asked in (
                ("display_name", display_name is not None),
                ("handle", set_handle),
                ("avatar", set_avatar),
            )
            if asked
        ]
        log.info("people.profile_updated", user_id=str(me), fields=changed)
        return ProfileRef(profile=profile)

    # --- for other modules (media) ------------------------------------------------------------------

    async def can_see_avatar(self, user_id: uuid.UUID, media_id: uuid.UUID) -> bool:
        """Media: a file that is someone's current avatar may be read by every signed-in user (anyone
        may be shown their profile, through ``user.lookup``)."""
        return await storage.is_someones_avatar(self.ctx.db.pool, media_id)
