"""SQL for Web Push: the browsers' subscriptions, and what a notification says (names). Every query is
parameterised."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import TypeAlias

import asyncpg

Executor: TypeAlias = "asyncpg.Connection | asyncpg.Pool"


@dataclass(frozen=True, slots=True)
class Target:
    """One browser to push to."""

    id: uuid.UUID
    user_id: uuid.UUID
    endpoint: str
    p256dh: str
    auth: str


@dataclass(frozen=True, slots=True)
class Names:
    """What a notification is titled with: the sender's name, the conversation's kind and title."""

    sender: str
    kind: str
    title: str | None


async def subscribe(
    db: asyncpg.Connection,
    *,
    user_id: uuid.UUID,
    session_id: uuid.UUID,
    endpoint: str,
    p256dh: str,
    auth: str,
    now: datetime,
    keep: int,
) -> None:
    """Store the login's subscription (replacing its earlier one; an endpoint another account had moves
    to this one), and keep only the user's ``keep`` most recently subscribed browsers."""
    await db.execute(
        "DELETE FROM push_subscriptions WHERE session_id = $1 AND endpoint <> $2", session_id, endpoint
    )
    await db.execute(
        "INSERT INTO push_subscriptions "
        "(endpoint, p256dh, auth, user_id, session_id, created_at, updated_at) "
        "VALUES ($1, $2, $3, $4, $5, $6, $6) "
        "ON CONFLICT (endpoint) DO UPDATE SET p256dh = EXCLUDED.p256dh, auth = EXCLUDED.auth, "
        "user_id = EXCLUDED.user_id, session_id = EXCLUDED.session_id, updated_at = EXCLUDED.updated_at, "
        "failures = 0",
        endpoint,
        p256dh,
        auth,
        user_id,
        session_id,
        now,
    )
    await db.execute(
        "DELETE FROM push_subscriptions WHERE id IN (SELECT id FROM push_subscriptions WHERE user_id = $1 "
        "ORDER BY updated_at DESC, id OFFSET $2)",
        user_id,
        keep,
    )


async def unsubscribe(db: Executor, user_id: uuid.UUID, endpoint: str) -> bool:
    """Forget one of the user's endpoints; ``False`` if it was not theirs (or not known)."""
    deleted = await db.fetchval(
        "DELETE FROM push_subscriptions WHERE endpoint = $1 AND user_id = $2 RETURNING id", endpoint, user_id
    )
    return deleted is not None


async def targets(db: Executor, user_ids: list[uuid.UUID], live_since: datetime) -> list[Target]:
    """The browsers of these users whose login is still alive: not revoked (logout), refreshed since
    ``live_since`` (a login idle longer than the refresh token's life has ended). Subscriptions of
    revoked logins are deleted on the way."""
    await db.execute(
        "DELETE FROM push_subscriptions AS p USING auth_sessions AS s "
        "WHERE p.session_id = s.id AND p.user_id = ANY($1::uuid[]) AND s.revoked_at IS NOT NULL",
        user_ids,
    )
    rows = await db.fetch(
        "SELECT p.id, p.user_id, p.endpoint, p.p256dh, p.auth FROM push_subscriptions AS p "
        "JOIN auth_sessions AS s ON s.id = p.session_id "
        "WHERE p.user_id = ANY($1::uuid[]) AND s.revoked_at IS NULL AND s.refreshed_at > $2",
        user_ids,
        live_since,
    )
    return [Target(r["id"], r["user_id"], r["endpoint"], r["p256dh"], r["auth"]) for r in rows]


async def succeeded(db: Executor, subscription_id: uuid.UUID, now: datetime) -> None:
    await db.execute(
        "UPDATE push_subscriptions SET last_success_at = $2, failures = 0 WHERE id = $1", subscription_id, now
    )


async def failed(db: Executor, subscription_id: uuid.UUID, give_up_after: int) -> bool:
    """Count a refusal; delete the subscription at ``give_up_after`` in a row. ``True`` if deleted."""
    failures = await db.fetchval(
        "UPDATE push_subscriptions SET failures = failures + 1 WHERE id = $1 RETURNING failures",
        subscription_id,
    )
    if failures is not None and failures >= give_up_after:
        await delete(db, subscription_id)
        return True
    return False


async def delete(db: Executor, subscription_id: uuid.UUID) -> None:
    await db.execute("DELETE FROM push_subscriptions WHERE id = $1", subscription_id)


async def names(db: Executor, sender_id: uuid.UUID | None, conversation_id: uuid.UUID) -> Names | None:
    """The sender's display name and the conversation's kind and title; ``None`` if it is gone."""
    row = await db.fetchrow(
        "SELECT (SELECT display_name FROM users WHERE id = $1) AS sender, c.kind, c.title "
        "FROM conversations AS c WHERE c.id = $2",
        sender_id,
        conversation_id,
    )
    if row is None:
        return None
    return Names(row["sender"] or "Someone", row["kind"], row["title"])


async def subscriptions_of(db: Executor, user_id: uuid.UUID) -> list[str]:
    """The user's endpoints (tests and operators)."""
    rows = await db.fetch(
        "SELECT endpoint FROM push_subscriptions WHERE user_id = $1 ORDER BY created_at", user_id
    )
    return [r["endpoint"] for r in rows]
