"""``GET /api/billing/plans``: every tier, what it may do (from the settings) and what it costs (from
Stripe, for the configured price ids).

Prices are read from Stripe at most once per BILLING_PLANS_CACHE_TTL (one read at a time, however many
requests wait for it). When Stripe cannot be reached the plans still answer, with every price null and
``prices_available: false``; that answer is kept for a short while (``FAILURE_TTL``) so a Stripe
outage does not slow every request down, then Stripe is asked again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from typing import cast

import stripe

from kintsugi_rt.billing.messages import Plan, PlanLimits, PlanPrice, Plans, Tier
from kintsugi_rt.billing.stripe_api import StripeApi
from kintsugi_rt.billing.usage import window_start
from kintsugi_rt.context import AppContext
from kintsugi_rt.logs import get_logger
from kintsugi_rt.settings import TIERS, Settings

log = get_logger(__name__)

# How long a failed read of the prices is kept before Stripe is asked again (at most the TTL).
FAILURE_TTL = timedelta(seconds=30)
# The longest one price read may take (the SDK's own timeout is 80 s, with retries).
PRICE_TIMEOUT_SECONDS = 5.0

BILLING_OFF_REASON = (
    "STRIPE_SECRET_KEY is not set on this server: nothing is sold here, and tiers are set by an "
    "operator (kintsugi-rt users set-tier)."
)

# Which chat models a tier may use; the composition root hands in the chat catalogue's answer.
ModelsForTier = Callable[[str], list[str]]


def limits_of(settings: Settings, tier: str, chat_models: list[str]) -> PlanLimits:
    """What ``tier`` may do, from the same settings the modules enforce (any paid tier counts as
    premium for media and calls)."""
    paid = tier != "basic"
    duration = settings.call_max_duration_premium if paid else settings.call_max_duration_basic
    return PlanLimits(
        token_limit=settings.token_limit(tier),
        chat_models=chat_models,
        media_max_bytes=settings.media_max_bytes_premium if paid else settings.media_max_bytes_basic,
        call_max_participants=(
            settings.call_max_participants_premium if paid else settings.call_max_participants_basic
        ),
        call_max_duration_seconds=int(duration.total_seconds()),
        call_video=paid or settings.call_video_basic,
    )


class PlanCatalogue:
    """The plans answer, with Stripe's prices cached per node."""

    def __init__(self, ctx: AppContext, api: StripeApi | None) -> None:
        self._ctx = ctx
        self._api = api
        settings = ctx.settings
        self._price_ids = {tier: price for price, tier in settings.stripe_prices().items()}  # tier -> id
        self._ttl = settings.billing_plans_cache_ttl
        self._models_for: ModelsForTier = lambda tier: []
        self._prices: dict[str, PlanPrice | None] = {}
        self._complete = False  # every configured price was read
        self._fresh_until: float | None = None  # monotonic
        self._lock = asyncio.Lock()

    def offer_models(self, models_for: ModelsForTier) -> None:
        """Which chat models each tier may use (the chat catalogue's, bound in wiring.py)."""
        self._models_for = models_for

    async def plans(self) -> Plans:
        settings, clock = self._ctx.settings, self._ctx.clock
        prices, complete = await self._current_prices()
        start = window_start(clock.now(), settings.token_reset_interval)
        tiers = [
            Plan(
                tier=cast(Tier, tier),
                paid=tier != "basic",
                purchasable=self._api is not None and tier in self._price_ids,
                price=prices.get(tier),
                limits=limits_of(settings, tier, self._models_for(tier)),
            )
            for tier in TIERS
        ]
        return Plans(
            billing="stripe" if self._api is not None else "off",
            billing_off_reason=None if self._api is not None else BILLING_OFF_REASON,
            prices_available=self._api is not None and complete,
            window_seconds=int(settings.token_reset_interval.total_seconds()),
            window_reset_at=start + settings.token_reset_interval,
            tiers=tiers,
        )

    async def _current_prices(self) -> tuple[dict[str, PlanPrice | None], bool]:
        if self._api is None:
            return {}, False
        clock = self._ctx.clock
        if self._fresh_until is not None and clock.monotonic() < self._fresh_until:
            return self._prices, self._complete
        async with self._lock:  # one read at a time; those who waited get its result
            if self._fresh_until is None or clock.monotonic() >= self._fresh_until:
                await self._read_prices(self._api)
        return self._prices, self._complete

    async def _read_prices(self, api: StripeApi) -> None:
        tiers = list(self._price_ids)
        results = await asyncio.gather(*(self._read_one(api, self._price_ids[t]) for t in tiers))
        self._prices = dict(zip(tiers, results, strict=True))
        self._complete = all(price is not None for price in results)
        keep = self._ttl if self._complete else min(self._ttl, FAILURE_TTL)
        self._fresh_until = self._ctx.clock.monotonic() + keep.total_seconds()
        log.info("billing.prices_read", prices=len(tiers), complete=self._complete)

    @staticmethod
    async def _read_one(api: StripeApi, price_id: str) -> PlanPrice | None:
        try:
            async with asyncio.timeout(PRICE_TIMEOUT_SECONDS):
                return await api.price(price_id)
        except (stripe.StripeError, TimeoutError) as exc:
            log.warning("billing.price_unavailable", price_id=price_id, error=repr(exc))
            return None
