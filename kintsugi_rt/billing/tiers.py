"""The one owner of "which tier is this user on": chat, media and the coming modules ask here."""

from __future__ import annotations

import uuid

import asyncpg

from kintsugi_rt.billing import storage
from kintsugi_rt.db.database import Database
from kintsugi_rt.errors import ApiError
from kintsugi_rt.settings import TIERS
from kintsugi_rt.socket.registry import SocketError

TIER_REQUIRED = "tier_required"


def tier_at_least(tier: str, needed: str) -> bool:
    return TIERS.index(tier) >= TIERS.index(needed)


def _message(needed: str) -> str:
    return f"This needs the {needed} tier or above."


class Tiers:
    """Reads a user's tier (one query, ``users.tier``) and checks it against what a feature needs."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def tier_of(self, user_id: uuid.UUID, conn: asyncpg.Connection | None = None) -> str:
        """The user's tier now; pass ``conn`` to read it inside a transaction."""
        return await storage.tier_of(conn if conn is not None else self._db.pool, user_id)

    async def require(self, user_id: uuid.UUID, needed: str) -> str:
        """For socket handlers: raise ``tier_required`` (``details.tier``) unless the tier suffices."""
        tier = await self.tier_of(user_id)
        if not tier_at_least(tier, needed):
            raise SocketError(TIER_REQUIRED, _message(needed), {"tier": needed, "current": tier})
        return tier

    async def require_rest(self, user_id: uuid.UUID, needed: str) -> str:
        """For REST routes: 403 ``tier_required`` with ``details.tier``."""
        tier = await self.tier_of(user_id)
        if not tier_at_least(tier, needed):
            raise ApiError(403, TIER_REQUIRED, _message(needed), details={"tier": needed, "current": tier})
        return tier
