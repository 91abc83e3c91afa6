"""The usage meter other modules call: reserve, release, settle; and what the socket shows of usage."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import asyncpg

from kintsugi_rt.billing import storage
from kintsugi_rt.billing.frames import UsageHistoryResult, UsageUpdated, UsageWarning
from kintsugi_rt.billing.tiers import Tiers
from kintsugi_rt.billing.usage import (
    Counters,
    LimitExceeded,
    PostgresCounters,
    RedisCounters,
    Reservation,
    UsageState,
    window_start,
)
from kintsugi_rt.context import AppContext
from kintsugi_rt.logs import get_logger

log = get_logger(__name__)

WARNING_THRESHOLDS = (80, 100)
MAX_HISTORY = timedelta(days=366)


class UsageMeter:
    def __init__(self, ctx: AppContext, *, tiers: Tiers) -> None:
        self._ctx = ctx
        self.tiers = tiers
        self._interval = ctx.settings.token_reset_interval
        self.counters: Counters = (
            RedisCounters(ctx.redis, ctx.settings.redis_key_prefix, ctx.db, self._interval)
            if ctx.redis is not None
            else PostgresCounters(ctx.db)
        )

    def _window(self) -> tuple[datetime, datetime, datetime]:
        now = self._ctx.clock.now()
        start = window_start(now, self._interval)
        return now, start, start + self._interval

    async def state(self, user_id: uuid.UUID) -> UsageState:
        _, start, reset_at = self._window()
        tier = await self.tiers.tier_of(user_id)
        used = await self.counters.used(user_id, start)
        return UsageState(tier=tier, used=used, limit=self._ctx.settings.token_limit(tier), reset_at=reset_at)

    async def reserve(
        self, conn: asyncpg.Connection, user_id: uuid.UUID, amount: int, *, tier: str | None = None
    ) -> Reservation:
        """Hold ``amount`` tokens for one request, or raise ``LimitExceeded`` (nothing held).

        Runs on ``conn``, inside the caller's transaction (see ``Counters.reserve``); ``tier`` saves
        a query when the caller has just read it in that transaction."""
        now, start, reset_at = self._window()
        if tier is None:
            tier = await self.tiers.tier_of(user_id, conn)
        limit = self._ctx.settings.token_limit(tier)
        reservation = Reservation(uuid.uuid4(), user_id, amount)
        ok, used = await self.counters.reserve(conn, reservation, limit, start, now)
        if not ok:
            log.info("usage.limit_exceeded", user_id=str(user_id), used=used, limit=limit, requested=amount)
            raise LimitExceeded(UsageState(tier=tier, used=used, limit=limit, reset_at=reset_at), amount)
        return reservation

    async def release(self, reservation: Reservation) -> None:
        await self.counters.release(reservation)

    async def settle_in(self, conn: asyncpg.Connection, reservation: Reservation | None) -> None:
        """Call inside the transaction that writes the ledger row."""
        if reservation is not None:
            await self.counters.settle_in(conn, reservation)

    async def settled(self, user_id: uuid.UUID, reservation: Reservation | None, tokens: int) -> None:
        """After the ledger row committed: update the counters and tell the user's sockets.

        Never raises: the write it follows has committed, and the ledger stays the truth (a counter
        missed here is rebuilt from it when its window's key is missing)."""
        try:
            await self._settled(user_id, reservation, tokens)
        except Exception as exc:
            log.error("usage.settle_failed", user_id=str(user_id), tokens=tokens, error=repr(exc))

    async def _settled(self, user_id: uuid.UUID, reservation: Reservation | None, tokens: int) -> None:
        _, start, reset_at = self._window()
        used = await self.counters.settled(user_id, reservation, tokens, start)
        tier = await self.tiers.tier_of(user_id)
        limit = self._ctx.settings.token_limit(tier)
        events = self._ctx.events
        await events.push(
            [user_id], UsageUpdated(tier=tier, used=used, limit=limit, reset_at=reset_at), droppable=False
        )
        if limit <= 0:
            return
        before = used - tokens
        for threshold in WARNING_THRESHOLDS:
            if before * 100 < threshold * limit <= used * 100:
                warning = UsageWarning(
                    threshold=threshold, tier=tier, used=used, limit=limit, reset_at=reset_at
                )
                await events.push([user_id], warning, droppable=False)

    async def push_state(self, user_id: uuid.UUID) -> None:
        """After a tier change committed: the new limit, at once. Never raises (the change is done;
        a client that missed this asks ``usage.get``)."""
        try:
            await self._push_state(user_id)
        except Exception as exc:
            log.error("usage.push_failed", user_id=str(user_id), error=repr(exc))

    async def _push_state(self, user_id: uuid.UUID) -> None:
        state = await self.state(user_id)
        await self._ctx.events.push(
            [user_id],
            UsageUpdated(tier=state.tier, used=state.used, limit=state.limit, reset_at=state.reset_at),
            droppable=False,
        )

    async def history(
        self, user_id: uuid.UUID, start: datetime, end: datetime, group_by: str
    ) -> UsageHistoryResult:
        rows = await storage.usage_history(self._ctx.db.pool, user_id, start, end, group_by)
        return UsageHistoryResult(group_by=group_by, rows=rows)
