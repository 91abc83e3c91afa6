"""Per-user durable event streams in PostgreSQL.

Appending takes the next position of every recipient's stream under a row lock held until the
caller's transaction commits. So position N+1 of a user can only be taken once N has committed (or
rolled back and been handed out again): a reader that sees N+1 can always read 1..N. That is what
lets a connection fill any gap it notices, whatever order events arrive in across nodes.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from kintsugi_rt.socket.codec import encode_json
from kintsugi_rt.socket.protocol import ServerMessage
from kintsugi_rt.socket.registry import message_type

_TRIM_TIMEOUT_SECONDS = 600


@dataclass(frozen=True, slots=True)
class DurableDelivery:
    """What was appended: hand it to ``Events.publish_durable`` after the transaction commits."""

    body: bytes
    users: list[str]
    positions: list[int]


_LOCK = (
    "SELECT count(*) FROM (SELECT 1 FROM event_streams WHERE user_id = ANY($1::uuid[]) "
    "ORDER BY user_id FOR UPDATE) locked"
)
# The same, but only when every stream exists; otherwise it locks nothing and answers -1.
_LOCK_IF_ALL_EXIST = (
    "SELECT CASE WHEN (SELECT count(*) FROM event_streams WHERE user_id = ANY($1::uuid[])) "  # noqa: S608
    "= cardinality($1::uuid[]) THEN (" + _LOCK + ") ELSE -1 END"
)


async def lock(conn: asyncpg.Connection, user_ids: list[uuid.UUID]) -> None:
    """Lock these users' streams (creating missing ones) until the transaction ends.

    Locks are taken in user-id order, so transactions whose recipient sets overlap cannot deadlock.
    A transaction that appends more than once must lock every recipient of all its appends first:
    locks taken append by append would come in no global order.

    Streams are created when their user first connects, so usually all exist and one statement
    locks them. When one is missing, nothing is locked until it has been created: holding some
    rows while waiting for another transaction's uncommitted insert of a missing one, which in turn
    waits for those rows, would deadlock.
    """
    users = sorted(set(user_ids))
    if await conn.fetchval(_LOCK_IF_ALL_EXIST, users) == -1:
        await conn.execute(
            "INSERT INTO event_streams (user_id) SELECT unnest($1::uuid[]) ON CONFLICT DO NOTHING", users
        )
        await conn.fetchval(_LOCK, users)


async def append(
    conn: asyncpg.Connection, user_ids: list[uuid.UUID], event: ServerMessage
) -> DurableDelivery:
    """Append ``event`` to each user's stream. Call inside the transaction that makes the change."""
    body = encode_json(event)
    users = sorted(set(user_ids))
    if not users:
        return DurableDelivery(body, [], [])
    await lock(conn, users)
    rows = await conn.fetch(
        """
        WITH bumped AS (
            UPDATE event_streams SET last_pos = last_pos + 1
            WHERE user_id = ANY($1::uuid[])
            RETURNING user_id, last_pos
        ), event AS (
            INSERT INTO durable_events (type, body) VALUES ($2, $3) RETURNING id
        )
        INSERT INTO stream_entries (user_id, pos, event_id)
        SELECT bumped.user_id, bumped.last_pos, event.id FROM bumped, event
        RETURNING user_id, pos
        """,
        users,
        message_type(type(event)),
        body,
    )
    return DurableDelivery(body, [str(row["user_id"]) for row in rows], [row["pos"] for row in rows])


async def append_each(
    conn: asyncpg.Connection, events: dict[uuid.UUID, ServerMessage]
) -> list[DurableDelivery]:
    """Append a different event to each user's stream (e.g. each member's own view of a group),
    all in one statement. Call inside the transaction that makes the change."""
    if not events:
        return []
    users = sorted(events)
    bodies = [encode_json(events[u]) for u in users]
    await lock(conn, users)
    rows = await conn.fetch(
        """
        WITH input AS MATERIALIZED (
            SELECT t.user_id, t.type, t.body, nextval(pg_get_serial_sequence('durable_events', 'id')) AS id
            FROM unnest($1::uuid[], $2::text[], $3::bytea[]) AS t(user_id, type, body)
        ), bumped AS (
            UPDATE event_streams s SET last_pos = s.last_pos + 1 FROM input
            WHERE s.user_id = input.user_id
            RETURNING s.user_id, s.last_pos
        ), stored AS (
            INSERT INTO durable_events (id, type, body) SELECT id, type, body FROM input
        )
        INSERT INTO stream_entries (user_id, pos, event_id)
        SELECT bumped.user_id, bumped.last_pos, input.id FROM bumped JOIN input USING (user_id)
        RETURNING user_id, pos
        """,
        users,
        [message_type(type(events[u])) for u in users],
        bodies,
    )
    position = {row["user_id"]: row["pos"] for row in rows}
    return [DurableDelivery(body, [str(u)], [position[u]]) for u, body in zip(users, bodies, strict=True)]


@dataclass(frozen=True, slots=True)
class StreamHead:
    epoch: str
    pos: int


async def head(conn: asyncpg.Connection | asyncpg.Pool, user_id: uuid.UUID) -> StreamHead:
    """The stream's epoch and last position, creating the stream on first use.

    Three plain statements, not one: a stream another node creates at the same moment is invisible
    to a single statement's snapshot, but the SELECT after the INSERT (which waited for it) sees it.
    """
    query = "SELECT epoch, last_pos FROM event_streams WHERE user_id = $1"
    row = await conn.fetchrow(query, user_id)
    if row is None:
        await conn.execute("INSERT INTO event_streams (user_id) VALUES ($1) ON CONFLICT DO NOTHING", user_id)
        row = await conn.fetchrow(query, user_id)
    return StreamHead(str(row["epoch"]), row["last_pos"])


async def heads(conn: asyncpg.Connection | asyncpg.Pool, user_ids: list[uuid.UUID]) -> dict[uuid.UUID, int]:
    """Each existing stream's last position (one query, however many users)."""
    rows = await conn.fetch(
        "SELECT user_id, last_pos FROM event_streams WHERE user_id = ANY($1::uuid[])", user_ids
    )
    return {row["user_id"]: row["last_pos"] for row in rows}


async def read_range(
    conn: asyncpg.Connection | asyncpg.Pool, user_id: uuid.UUID, after: int, upto: int | None, limit: int
) -> list[tuple[int, bytes]]:
    """Entries with ``after < pos <= upto`` in order, at most ``limit``."""
    rows = await conn.fetch(
        """
        SELECT e.pos, d.body FROM stream_entries e JOIN durable_events d ON d.id = e.event_id
        WHERE e.user_id = $1 AND e.pos > $2 AND ($3::bigint IS NULL OR e.pos <= $3)
        ORDER BY e.pos LIMIT $4
        """,
        user_id,
        after,
        upto,
        limit,
    )
    return [(row["pos"], bytes(row["body"])) for row in rows]


async def trim(conn: asyncpg.Connection | asyncpg.Pool, older_than: datetime) -> int:
    """Drop events older than the retained window; their stream entries go with them."""
    # A big backlog may take longer than DATABASE_STATEMENT_TIMEOUT, which is meant for requests.
    status: str = await conn.execute(
        "DELETE FROM durable_events WHERE created_at < $1", older_than, timeout=_TRIM_TIMEOUT_SECONDS
    )
    return int(status.split()[-1])
