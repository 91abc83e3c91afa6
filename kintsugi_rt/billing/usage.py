"""Token limits per tier and window: reserve before the upstream call, settle with the real usage.

Windows are fixed and shared by everyone: they start at every multiple of ``TOKEN_RESET_INTERVAL``
since 1970-01-01 00:00 UTC (for 6 h: 00:00, 06:00, 12:00, 18:00 UTC), and ``reset_at`` is the next
one. ``used`` is the sum of the usage ledger's rows in the window — the ledger is the truth.

A reservation (the prompt estimate plus the request's ``max_tokens``) must fit beside what is used and
what is already reserved; checking and reserving is one atomic step per user (a row lock in
PostgreSQL, one Lua script in Redis), so concurrent requests can never reserve more than the limit
together. The only overspend left is a request whose real usage exceeds its own reservation (the
provider counted the prompt a little higher than we did): at most one request's reservation.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

import asyncpg
import msgspec
from redis.asyncio import Redis

from kintsugi_rt.billing import storage
from kintsugi_rt.db.database import Database

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# A reservation whose answer never settled (its node died) stops counting after this.
RESERVATION_TTL = timedelta(minutes=15)


def window_start(now: datetime, interval: timedelta) -> datetime:
    return EPOCH + ((now - EPOCH) // interval) * interval


class UsageState(msgspec.Struct):
    tier: str
    used: int
    limit: int  # -1: no limit
    reset_at: datetime


class LimitExceeded(Exception):
    def __init__(self, state: UsageState, requested: int) -> None:
        super().__init__("token limit exceeded")
        self.state = state
        self.requested = requested


@dataclass(frozen=True, slots=True)
class Reservation:
    id: uuid.UUID
    user_id: uuid.UUID
    amount: int


class Counters(Protocol):
    """Where ``used`` and the reservations are counted: PostgreSQL, or Redis rebuilt from it."""

    async def reserve(
        self, conn: asyncpg.Connection, reservation: Reservation, limit: int, start: datetime, now: datetime
    ) -> tuple[bool, int]:
        """Reserve atomically if it fits; return (reserved?, used). ``conn`` is the caller's
        connection, inside its transaction: a reservation never waits for a second pool connection
        while holding one (which deadlocks a busy pool)."""
        ...

    async def release(self, reservation: Reservation) -> None: ...

    async def settle_in(self, conn: asyncpg.Connection, reservation: Reservation) -> None:
        """Inside the transaction that writes the ledger row."""
        ...

    async def settled(
        self, user_id: uuid.UUID, reservation: Reservation | None, tokens: int, start: datetime
    ) -> int:
        """After that transaction committed; return ``used`` now."""
        ...

    async def used(self, user_id: uuid.UUID, start: datetime) -> int: ...


class PostgresCounters:
    def __init__(self, db: Database) -> None:
        self._db = db

    @property
    def _pool(self) -> asyncpg.Pool:
        return self._db.pool

    async def reserve(
        self, conn: asyncpg.Connection, reservation: Reservation, limit: int, start: datetime, now: datetime
    ) -> tuple[bool, int]:
        # The user's row lock makes check-and-reserve one step against concurrent requests; it is
        # held until the caller commits, when the reservation becomes visible to others. The check
        # is a second statement, so that its snapshot is taken after the lock was granted and sees
        # every reservation committed before.
        await storage.lock_user(conn, reservation.user_id)
        return await storage.reserve_if_fits(
            conn,
            reservation_id=reservation.id,
            user_id=reservation.user_id,
            amount=reservation.amount,
            limit=limit,
            window_start=start,
            now=now,
            expires_at=now + RESERVATION_TTL,
        )

    async def release(self, reservation: Reservation) -> None:
        await storage.delete_reservation(self._pool, reservation.id)

    async def settle_in(self, conn: asyncpg.Connection, reservation: Reservation) -> None:
        await storage.delete_reservation(conn, reservation.id)

    async def settled(
        self, user_id: uuid.UUID, reservation: Reservation | None, tokens: int, start: datetime
    ) -> int:
        return await storage.ledger_sum(self._pool, user_id, start)

    async def used(self, user_id: uuid.UUID, start: datetime) -> int:
        return await storage.ledger_sum(self._pool, user_id, start)


# Reservations live in a hash (id -> "amount:expires_ms"); expired ones are dropped as they are read.
# A missing "used" key (a new window, or Redis lost its data) answers -1: rebuild it from the ledger.
_RESERVE = """
local used = redis.call('GET', KEYS[1])
if not used then return {-1, 0} end
used = tonumber(used)
local reserved = 0
local all = redis.call('HGETALL', KEYS[2])
for i = 1, #all, 2 do
  local amount, expires = string.match(all[i + 1], '(%d+):(%d+)')
  if tonumber(expires) <= tonumber(ARGV[4]) then
    redis.call('HDEL', KEYS[2], all[i])
  else
    reserved = reserved + tonumber(amount)
  end
end
local limit = tonumber(ARGV[1])
if limit >= 0 and used + reserved + tonumber(ARGV[2]) > limit then return {0, used} end
redis.call('HSET', KEYS[2], ARGV[3], ARGV[2] .. ':' .. ARGV[5])
redis.call('PEXPIRE', KEYS[2], ARGV[6])
return {1, used}
"""

_SETTLE = """
if ARGV[2] ~= '' then redis.call('HDEL', KEYS[2], ARGV[2]) end
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
return redis.call('INCRBY', KEYS[1], ARGV[1])
"""


class RedisCounters:
    """Atomic counters in Redis; the ledger in PostgreSQL rebuilds them whenever they are missing."""

    def __init__(self, redis: Redis, prefix: str, db: Database, interval: timedelta) -> None:
        self._redis = redis
        self._prefix = f"{prefix}usage:"
        self._db = db
        self._ttl_ms = int((interval + RESERVATION_TTL).total_seconds() * 1000)
        self._reserve = redis.register_script(_RESERVE)
        self._settle = redis.register_script(_SETTLE)

    @property
    def _pool(self) -> asyncpg.Pool:
        return self._db.pool

    def _keys(self, user_id: uuid.UUID, start: datetime) -> list[str]:
        return [f"{self._prefix}used:{user_id}:{int(start.timestamp())}", f"{self._prefix}reserved:{user_id}"]

    async def _rebuild(
        self, user_id: uuid.UUID, start: datetime, conn: asyncpg.Connection | None = None
    ) -> None:
        used = await storage.ledger_sum(conn or self._pool, user_id, start)
        await self._redis.set(self._keys(user_id, start)[0], used, nx=True, px=self._ttl_ms)

    async def reserve(
        self, conn: asyncpg.Connection, reservation: Reservation, limit: int, start: datetime, now: datetime
    ) -> tuple[bool, int]:
        keys = self._keys(reservation.user_id, start)
        now_ms = int(now.timestamp() * 1000)
        expires_ms = now_ms + int(RESERVATION_TTL.total_seconds() * 1000)
        args: list[int | str] = [
            limit,
            reservation.amount,
            str(reservation.id),
            now_ms,
            expires_ms,
            self._ttl_ms,
        ]
        for _ in range(2):
            ok, used = await self._reserve(keys=keys, args=args)
            if int(ok) != -1:
                return bool(int(ok)), int(used)
            await self._rebuild(reservation.user_id, start, conn)
        raise RuntimeError("usage counter vanished twice while reserving")

    async def release(self, reservation: Reservation) -> None:
        await self._redis.hdel(f"{self._prefix}reserved:{reservation.user_id}", str(reservation.id))

    async def settle_in(self, conn: asyncpg.Connection, reservation: Reservation) -> None:
        return None  # Redis is told after the commit (``settled``)

    async def settled(
        self, user_id: uuid.UUID, reservation: Reservation | None, tokens: int, start: datetime
    ) -> int:
        keys = self._keys(user_id, start)
        used = int(await self._settle(keys=keys, args=[tokens, str(reservation.id) if reservation else ""]))
        if used == -1:  # rebuilt from the ledger, which already holds this answer's row
            await self._rebuild(user_id, start)
            return await self.used(user_id, start)
        return used

    async def used(self, user_id: uuid.UUID, start: datetime) -> int:
        key = self._keys(user_id, start)[0]
        value = await self._redis.get(key)
        if value is None:
            await self._rebuild(user_id, start)
            value = await self._redis.get(key)
        return int(value or 0)
