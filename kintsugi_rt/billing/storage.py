"""SQL for Stripe customers, subscriptions and processed webhook events."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg

from kintsugi_rt.billing.stripe_api import SubscriptionSnapshot


async def customer_of(db: asyncpg.Connection | asyncpg.Pool, user_id: uuid.UUID) -> str | None:
    found: str | None = await db.fetchval(
        "SELECT stripe_customer_id FROM billing_customers WHERE user_id = $1", user_id
    )
    return found


async def save_customer(conn: asyncpg.Connection, user_id: uuid.UUID, customer_id: str) -> None:
    await conn.execute(
        "INSERT INTO billing_customers (user_id, stripe_customer_id) VALUES ($1, $2)", user_id, customer_id
    )


async def user_of_customer(conn: asyncpg.Connection, customer_id: str) -> uuid.UUID | None:
    found: uuid.UUID | None = await conn.fetchval(
        "SELECT user_id FROM billing_customers WHERE stripe_customer_id = $1", customer_id
    )
    return found


async def claim_event(conn: asyncpg.Connection, event_id: str, event_type: str) -> bool:
    """Record the event; ``False`` if it was already applied (a replay)."""
    inserted = await conn.fetchval(
        "INSERT INTO stripe_events (id, type) VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING id",
        event_id,
        event_type,
    )
    return inserted is not None


async def subscription_of(db: asyncpg.Connection | asyncpg.Pool, user_id: uuid.UUID) -> Any:
    return await db.fetchrow(
        "SELECT stripe_subscription_id, status, price_id, tier, current_period_end, cancel_at_period_end "
        "FROM subscriptions WHERE user_id = $1",
        user_id,
    )


async def save_subscription(
    conn: asyncpg.Connection, user_id: uuid.UUID, snapshot: SubscriptionSnapshot, tier: str
) -> None:
    await conn.execute(
        """
        INSERT INTO subscriptions (user_id, stripe_subscription_id, status, price_id, tier,
                                   current_period_end, cancel_at_period_end, updated_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, now())
        ON CONFLICT (user_id) DO UPDATE SET
            stripe_subscription_id = EXCLUDED.stripe_subscription_id, status = EXCLUDED.status,
            price_id = EXCLUDED.price_id, tier = EXCLUDED.tier,
            current_period_end = EXCLUDED.current_period_end,
            cancel_at_period_end = EXCLUDED.cancel_at_period_end, updated_at = now()
        """,
        user_id,
        snapshot.id,
        snapshot.status,
        snapshot.price_id,
        tier,
        snapshot.current_period_end,
        snapshot.cancel_at_period_end,
    )


async def set_tier(conn: asyncpg.Connection | asyncpg.Pool, user_id: uuid.UUID, tier: str) -> str:
    """Set the user's tier; return the previous one."""
    previous: str = await conn.fetchval(
        "UPDATE users u SET tier = $2, updated_at = now() "
        "FROM (SELECT tier FROM users WHERE id = $1 FOR UPDATE) old WHERE u.id = $1 RETURNING old.tier",
        user_id,
        tier,
    )
    return previous


def newer_or_same(stored_end: datetime | None, fetched_end: datetime | None) -> bool:
    """Never move a period backwards: an older snapshot than the one stored is ignored."""
    return stored_end is None or fetched_end is None or fetched_end >= stored_end
