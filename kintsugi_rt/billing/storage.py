"""SQL for Stripe customers, subscriptions, processed webhook events, tiers, token reservations and
the usage ledger's totals."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg

from kintsugi_rt.billing.frames import UsageRow
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


async def lock_user(conn: asyncpg.Connection, user_id: uuid.UUID) -> None:
    """Lock the user's row until the transaction ends: one check-then-write per user at a time."""
    await conn.execute("SELECT 1 FROM users WHERE id = $1 FOR UPDATE", user_id)


async def user_by_email(conn: asyncpg.Connection | asyncpg.Pool, email: str) -> uuid.UUID | None:
    """The id of the account with this (normalised) email, compared case-insensitively."""
    found: uuid.UUID | None = await conn.fetchval(
        "SELECT id FROM users WHERE lower(email) = lower($1)", email
    )
    return found


async def ledger_sum(db: asyncpg.Connection | asyncpg.Pool, user_id: uuid.UUID, start: datetime) -> int:
    """Tokens the user spent since ``start``, from the usage ledger (the truth)."""
    used: int = await db.fetchval(
        "SELECT COALESCE(SUM(prompt_tokens + completion_tokens), 0) FROM usage_ledger "
        "WHERE user_id = $1 AND created_at >= $2",
        user_id,
        start,
    )
    return used


async def reserve_if_fits(
    conn: asyncpg.Connection,
    *,
    reservation_id: uuid.UUID,
    user_id: uuid.UUID,
    amount: int,
    limit: int,
    window_start: datetime,
    now: datetime,
    expires_at: datetime,
) -> tuple[bool, int]:
    """Insert the reservation if used + held + ``amount`` fits ``limit`` (-1: none); return (reserved?,
    used). Atomic only under ``lock_user``, taken by an earlier statement of the same transaction."""
    row = await conn.fetchrow(
        """
        WITH used AS (
            SELECT COALESCE(SUM(prompt_tokens + completion_tokens), 0) AS n FROM usage_ledger
            WHERE user_id = $1 AND created_at >= $2
        ), held AS (
            SELECT COALESCE(SUM(amount), 0) AS n FROM usage_reservations
            WHERE user_id = $1 AND expires_at > $3
        ), reserved AS (
            INSERT INTO usage_reservations (id, user_id, amount, expires_at)
            SELECT $4, $1, $5::int, $6 FROM used, held
            WHERE $7::bigint < 0 OR used.n + held.n + $5::int <= $7::bigint
            RETURNING 1
        )
        SELECT used.n AS used, EXISTS (SELECT 1 FROM reserved) AS ok FROM used
        """,
        user_id,
        window_start,
        now,
        reservation_id,
        amount,
        expires_at,
        limit,
    )
    return bool(row["ok"]), int(row["used"])


async def delete_reservation(db: asyncpg.Connection | asyncpg.Pool, reservation_id: uuid.UUID) -> None:
    await db.execute("DELETE FROM usage_reservations WHERE id = $1", reservation_id)


async def usage_history(
    db: asyncpg.Connection | asyncpg.Pool, user_id: uuid.UUID, start: datetime, end: datetime, group_by: str
) -> list[UsageRow]:
    """The ledger's totals in [start, end), per UTC day (``group_by == "day"``) or else per model."""
    key = "to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')" if group_by == "day" else "model"
    rows = await db.fetch(
        f"SELECT {key} AS key, SUM(prompt_tokens) AS prompt, SUM(completion_tokens) AS completion, "  # noqa: S608
        "count(*) AS requests FROM usage_ledger "
        "WHERE user_id = $1 AND created_at >= $2 AND created_at < $3 GROUP BY 1 ORDER BY 1",
        user_id,
        start,
        end,
    )
    return [
        UsageRow(
            key=r["key"],
            prompt_tokens=r["prompt"],
            completion_tokens=r["completion"],
            total_tokens=r["prompt"] + r["completion"],
            requests=r["requests"],
        )
        for r in rows
    ]


def newer_or_same(stored_end: datetime | None, fetched_end: datetime | None) -> bool:
    """Never move a period backwards: an older snapshot than the one stored is ignored."""
    return stored_end is None or fetched_end is None or fetched_end >= stored_end


async def tier_of(db: asyncpg.Connection | asyncpg.Pool, user_id: uuid.UUID) -> str:
    """The user's tier (``billing.Tiers`` is the one caller: every module asks it)."""
    tier: str = await db.fetchval("SELECT tier FROM users WHERE id = $1", user_id)
    return tier
