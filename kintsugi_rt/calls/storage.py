"""SQL for calls and their participants. Every query is parameterised."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeAlias

import asyncpg

from kintsugi_rt.calls.frames import CallInfo, Party

Executor: TypeAlias = "asyncpg.Connection | asyncpg.Pool"

_CALL_COLUMNS = (
    "c.id, c.conversation_id, c.caller_id, c.media, c.mode, c.state, c.max_participants, c.created_at, "
    "c.ring_deadline, c.end_deadline, c.answered_at, c.ended_at, c.end_reason, c.sfu_node"
)


@dataclass(frozen=True, slots=True)
class CallRow:
    """A call as stored (``CallInfo`` is what clients see of it, with its participants)."""

    id: uuid.UUID
    conversation_id: uuid.UUID
    caller_id: uuid.UUID | None
    media: str
    mode: str
    state: str
    max_participants: int
    created_at: datetime
    ring_deadline: datetime
    end_deadline: datetime
    answered_at: datetime | None
    ended_at: datetime | None
    end_reason: str | None
    sfu_node: str | None


@dataclass(frozen=True, slots=True)
class PartyRow:
    user_id: uuid.UUID
    state: str
    party_id: str | None


def _call(row: Any) -> CallRow:
    return CallRow(**{name: row[name] for name in CallRow.__slots__})


def _party(row: Any) -> PartyRow:
    return PartyRow(row["user_id"], row["state"], row["party_id"])


def info(call: CallRow, parties: list[PartyRow]) -> CallInfo:
    """What clients see of a call."""
    duration = None
    if call.answered_at is not None and call.ended_at is not None:
        duration = int((call.ended_at - call.answered_at).total_seconds())
    return CallInfo(
        id=call.id,
        conversation_id=call.conversation_id,
        caller_id=call.caller_id,
        media=call.media,  # type: ignore[arg-type]
        mode=call.mode,  # type: ignore[arg-type]
        state=call.state,  # type: ignore[arg-type]
        created_at=call.created_at,
        participants=[
            Party(user_id=p.user_id, state=p.state, party_id=p.party_id)  # type: ignore[arg-type]
            for p in parties
        ],
        answered_at=call.answered_at,
        ended_at=call.ended_at,
        end_reason=call.end_reason,  # type: ignore[arg-type]
        duration_s=duration,
    )


async def insert_call(
    db: asyncpg.Connection,
    *,
    conversation_id: uuid.UUID,
    caller_id: uuid.UUID,
    media: str,
    mode: str,
    max_participants: int,
    now: datetime,
    ring_deadline: datetime,
    end_deadline: datetime,
) -> CallRow | None:
    """A new ringing call; ``None`` when the conversation already has a live call (one at a time)."""
    row = await db.fetchrow(
        "INSERT INTO calls AS c (conversation_id, caller_id, media, mode, max_participants, created_at, "  # noqa: S608
        "ring_deadline, end_deadline) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) "
        "ON CONFLICT (conversation_id) WHERE state <> 'ended' DO NOTHING RETURNING " + _CALL_COLUMNS,
        conversation_id,
        caller_id,
        media,
        mode,
        max_participants,
        now,
        ring_deadline,
        end_deadline,
    )
    return None if row is None else _call(row)


async def live_call_of(db: Executor, conversation_id: uuid.UUID, *, lock: bool = False) -> CallRow | None:
    """The conversation's call in progress (ringing or active), if any."""
    row = await db.fetchrow(
        f"SELECT {_CALL_COLUMNS} FROM calls c WHERE c.conversation_id = $1 AND c.state <> 'ended'"  # noqa: S608
        + (" FOR UPDATE" if lock else ""),
        conversation_id,
    )
    return None if row is None else _call(row)


async def call(db: Executor, call_id: uuid.UUID, *, lock: bool = False) -> CallRow | None:
    row = await db.fetchrow(
        f"SELECT {_CALL_COLUMNS} FROM calls c WHERE c.id = $1" + (" FOR UPDATE" if lock else ""),  # noqa: S608
        call_id,
    )
    return None if row is None else _call(row)


async def parties(db: Executor, call_id: uuid.UUID) -> list[PartyRow]:
    rows = await db.fetch(
        "SELECT user_id, state, party_id FROM call_participants WHERE call_id = $1 ORDER BY user_id", call_id
    )
    return [_party(r) for r in rows]


async def add_parties(
    db: asyncpg.Connection,
    call_id: uuid.UUID,
    parties_: list[tuple[uuid.UUID, str, str | None]],
    now: datetime,
) -> None:
    """``(user, state, party)`` rows; a joined party gets ``joined_at``."""
    await db.executemany(
        "INSERT INTO call_participants (call_id, user_id, state, party_id, joined_at) "
        "VALUES ($1, $2, $3, $4, CASE WHEN $3 = 'joined' THEN $5::timestamptz END)",
        [(call_id, user, state, party, now) for user, state, party in parties_],
    )


async def join(
    db: asyncpg.Connection, call_id: uuid.UUID, user_id: uuid.UUID, party_id: str, now: datetime
) -> None:
    """The user is in the call on this device (a new participant, an answer, or a rejoin)."""
    await db.execute(
        "INSERT INTO call_participants (call_id, user_id, state, party_id, joined_at) "
        "VALUES ($1, $2, 'joined', $3, $4) ON CONFLICT (call_id, user_id) DO UPDATE "
        "SET state = 'joined', party_id = $3, joined_at = COALESCE(call_participants.joined_at, $4), "
        "left_at = NULL",
        call_id,
        user_id,
        party_id,
        now,
    )


async def set_party_state(
    db: asyncpg.Connection, call_id: uuid.UUID, user_id: uuid.UUID, state: str, now: datetime
) -> None:
    """``declined``, ``left`` or ``missed``: the device is out of the call."""
    await db.execute(
        "UPDATE call_participants SET state = $3, party_id = NULL, "
        "left_at = CASE WHEN $3 = 'left' THEN $4::timestamptz ELSE left_at END "
        "WHERE call_id = $1 AND user_id = $2",
        call_id,
        user_id,
        state,
        now,
    )


async def answer(db: asyncpg.Connection, call_id: uuid.UUID, now: datetime) -> None:
    await db.execute(
        "UPDATE calls SET state = 'active', answered_at = COALESCE(answered_at, $2) WHERE id = $1",
        call_id,
        now,
    )


async def end(db: asyncpg.Connection, call_id: uuid.UUID, reason: str, now: datetime) -> CallRow:
    """End the call: whoever still rings missed it, whoever is in it left."""
    await db.execute(
        "UPDATE call_participants SET "
        "state = CASE WHEN state = 'ringing' THEN 'missed' WHEN state = 'joined' THEN 'left' ELSE state END, "
        "left_at = CASE WHEN state = 'joined' THEN $2::timestamptz ELSE left_at END, party_id = NULL "
        "WHERE call_id = $1",
        call_id,
        now,
    )
    row = await db.fetchrow(
        "UPDATE calls AS c SET state = 'ended', ended_at = $3, end_reason = $2 WHERE c.id = $1 "  # noqa: S608
        "RETURNING " + _CALL_COLUMNS,
        call_id,
        reason,
        now,
    )
    return _call(row)


async def miss_unanswered(db: asyncpg.Connection, call_id: uuid.UUID) -> list[uuid.UUID]:
    """A group call's ring time is over: whoever still rings missed it."""
    rows = await db.fetch(
        "UPDATE call_participants SET state = 'missed' WHERE call_id = $1 AND state = 'ringing' "
        "RETURNING user_id",
        call_id,
    )
    return [r["user_id"] for r in rows]


async def set_mode(db: asyncpg.Connection, call_id: uuid.UUID, mode: str, sfu_node: str | None) -> None:
    await db.execute("UPDATE calls SET mode = $2, sfu_node = $3 WHERE id = $1", call_id, mode, sfu_node)


async def in_live_call(db: Executor, user_id: uuid.UUID) -> bool:
    """Busy: the user is in a call already (answered, on some device)."""
    found: bool = await db.fetchval(
        "SELECT EXISTS (SELECT 1 FROM call_participants p JOIN calls c ON c.id = p.call_id "
        "WHERE p.user_id = $1 AND p.state = 'joined' AND c.state <> 'ended')",
        user_id,
    )
    return found


async def joined_parties(db: Executor, call_id: uuid.UUID, party_ids: list[str]) -> dict[str, uuid.UUID]:
    """Which of these devices are in this (live) call now: party -> user."""
    rows = await db.fetch(
        "SELECT p.party_id, p.user_id FROM call_participants p JOIN calls c ON c.id = p.call_id "
        "WHERE p.call_id = $1 AND p.party_id = ANY($2::text[]) AND p.state = 'joined' AND c.state <> 'ended'",
        call_id,
        party_ids,
    )
    return {r["party_id"]: r["user_id"] for r in rows}


async def calls_of_party(db: Executor, party_id: str) -> list[tuple[uuid.UUID, uuid.UUID]]:
    """The live calls this device is in: (call, user)."""
    rows = await db.fetch(
        "SELECT p.call_id, p.user_id FROM call_participants p JOIN calls c ON c.id = p.call_id "
        "WHERE p.party_id = $1 AND p.state = 'joined' AND c.state <> 'ended'",
        party_id,
    )
    return [(r["call_id"], r["user_id"]) for r in rows]


async def due_rings(db: Executor, now: datetime, limit: int) -> list[uuid.UUID]:
    """Ringing calls whose ring time is over (each is then ``claim``ed in its own transaction)."""
    rows = await db.fetch(
        "SELECT id FROM calls WHERE state = 'ringing' AND ring_deadline <= $1 "
        "ORDER BY ring_deadline LIMIT $2",
        now,
        limit,
    )
    return [r["id"] for r in rows]


async def due_group_rings(db: Executor, now: datetime, limit: int) -> list[uuid.UUID]:
    """Active calls that still have ringing participants past the ring time."""
    rows = await db.fetch(
        "SELECT c.id FROM calls c WHERE c.state = 'active' AND c.ring_deadline <= $1 AND EXISTS "
        "(SELECT 1 FROM call_participants p WHERE p.call_id = c.id AND p.state = 'ringing') "
        "ORDER BY c.ring_deadline LIMIT $2",
        now,
        limit,
    )
    return [r["id"] for r in rows]


async def due_ends(db: Executor, now: datetime, limit: int) -> list[uuid.UUID]:
    """Calls past their tier's longest duration."""
    rows = await db.fetch(
        "SELECT id FROM calls WHERE state <> 'ended' AND end_deadline <= $1 ORDER BY end_deadline LIMIT $2",
        now,
        limit,
    )
    return [r["id"] for r in rows]


async def history(
    db: Executor, user_id: uuid.UUID, before: datetime | None, limit: int
) -> list[tuple[CallRow, list[PartyRow]]]:
    """The user's calls, newest first, with their participants (two queries)."""
    rows = await db.fetch(
        f"SELECT {_CALL_COLUMNS} FROM calls c JOIN call_participants me ON me.call_id = c.id "  # noqa: S608
        "WHERE me.user_id = $1 AND ($2::timestamptz IS NULL OR c.created_at < $2) "
        "ORDER BY c.created_at DESC, c.id LIMIT $3",
        user_id,
        before,
        limit,
    )
    calls = [_call(r) for r in rows]
    party_rows = await db.fetch(
        "SELECT call_id, user_id, state, party_id FROM call_participants WHERE call_id = ANY($1::uuid[]) "
        "ORDER BY user_id",
        [c.id for c in calls],
    )
    by_call: dict[uuid.UUID, list[PartyRow]] = {}
    for r in party_rows:
        by_call.setdefault(r["call_id"], []).append(_party(r))
    return [(c, by_call.get(c.id, [])) for c in calls]


async def claim(db: asyncpg.Connection, call_id: uuid.UUID) -> CallRow | None:
    """Lock the call for this transaction unless another one holds it (the sweepers of other nodes)."""
    row = await db.fetchrow(
        f"SELECT {_CALL_COLUMNS} FROM calls c WHERE c.id = $1 FOR UPDATE SKIP LOCKED",  # noqa: S608
        call_id,
    )
    return None if row is None else _call(row)
