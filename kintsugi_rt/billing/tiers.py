"""One reusable tier check for socket handlers and REST routes."""

from __future__ import annotations

import uuid

import asyncpg

from kintsugi_rt.errors import ApiError
from kintsugi_rt.settings import TIERS
from kintsugi_rt.socket.registry import SocketError

TIER_REQUIRED = "tier_required"


def tier_at_least(tier: str, needed: str) -> bool:
    return TIERS.index(tier) >= TIERS.index(needed)


async def current_tier(db: asyncpg.Pool | asyncpg.Connection, user_id: uuid.UUID) -> str:
    tier: str = await db.fetchval("SELECT tier FROM users WHERE id = $1", user_id)
    return tier


def _message(needed: str) -> str:
    return f"This needs the {needed} tier or above."


async def require_tier_socket(db: asyncpg.Pool, user_id: uuid.UUID, needed: str) -> str:
    """For socket handlers: raise ``tier_required`` (``details.tier``) unless the user's tier suffices."""
    tier = await current_tier(db, user_id)
    if not tier_at_least(tier, needed):
        raise SocketError(TIER_REQUIRED, _message(needed), {"tier": needed, "current": tier})
    return tier


async def require_tier_rest(db: asyncpg.Pool, user_id: uuid.UUID, needed: str) -> str:
    """For REST routes: 403 ``tier_required`` with ``details.tier``."""
    tier = await current_tier(db, user_id)
    if not tier_at_least(tier, needed):
        raise ApiError(403, TIER_REQUIRED, _message(needed), details={"tier": needed, "current": tier})
    return tier
