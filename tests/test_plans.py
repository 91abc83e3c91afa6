"""``GET /api/billing/plans``: tiers, limits from the settings, prices from (the fake) Stripe, cached."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest

from kintsugi_rt.billing.plans import BILLING_OFF_REASON, FAILURE_TTL
from kintsugi_rt.clock import ManualClock
from kintsugi_rt.settings import TIERS, Settings
from tests.fake_stripe import FakeStripe
from tests.support import free_port, serve_node

PRICES = {
    "STRIPE_PRICE_PREMIUM_STARTER": "price_starter",
    "STRIPE_PRICE_PREMIUM_PRO": "price_pro",
    "STRIPE_PRICE_PREMIUM_ULTRA": "price_ultra",
    "STRIPE_PRICE_UNLIMITED": "price_unlimited",
}
AMOUNTS = {"price_starter": 500, "price_pro": 1500, "price_ultra": 3000, "price_unlimited": 9900}


@pytest.fixture
async def stripe_fake() -> AsyncIterator[tuple[FakeStripe, str]]:
    fake = FakeStripe()
    for price_id, amount in AMOUNTS.items():
        fake.add_price(price_id, amount, interval="year" if price_id == "price_unlimited" else "month")
    base_url = await fake.start()
    yield fake, base_url
    await fake.stop()


async def get_plans(url: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        response = await http.get("/api/billing/plans")  # no Authorization: anyone may look
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "public, max-age=60"
    plans: dict[str, Any] = response.json()
    return plans


def by_tier(plans: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {plan["tier"]: plan for plan in plans["tiers"]}


async def test_without_stripe_the_plans_say_billing_is_off_and_why(
    settings_for: Callable[..., Settings],
) -> None:
    settings = settings_for(
        BASIC_TOKEN_LIMIT="1234",
        CALL_MAX_PARTICIPANTS_BASIC="3",
        CALL_VIDEO_BASIC="false",
        MEDIA_MAX_BYTES_PREMIUM="2000000",
        TOKEN_RESET_INTERVAL="2h",
    )
    async with serve_node(settings) as node:
        plans = await get_plans(node.url)
    assert plans["billing"] == "off" and plans["billing_off_reason"] == BILLING_OFF_REASON
    assert plans["prices_available"] is False
    assert plans["window_seconds"] == 7200
    assert [plan["tier"] for plan in plans["tiers"]] == list(TIERS)
    tiers = by_tier(plans)
    assert all(plan["price"] is None and plan["purchasable"] is False for plan in plans["tiers"])
    basic, pro = tiers["basic"], tiers["premium_pro"]
    assert basic["paid"] is False and pro["paid"] is True
    assert basic["limits"] == {
        "token_limit": 1234,
        "chat_models": ["offline-demo"],  # no OPENAI_API_KEY outside production: the demo model
        "media_max_bytes": settings.media_max_bytes_basic,
        "call_max_participants": 3,
        "call_max_duration_seconds": 3600,
        "call_video": False,
    }
    assert pro["limits"]["token_limit"] == settings.premium_pro_token_limit
    assert pro["limits"]["media_max_bytes"] == 2_000_000
    assert pro["limits"]["call_video"] is True
    assert tiers["unlimited"]["limits"]["token_limit"] == -1


async def test_prices_come_from_stripe_once_per_ttl(
    settings_for: Callable[..., Settings], stripe_fake: tuple[FakeStripe, str]
) -> None:
    fake, base_url = stripe_fake
    clock = ManualClock()
    settings = settings_for(
        STRIPE_SECRET_KEY=fake.api_key,
        STRIPE_WEBHOOK_SECRET=fake.webhook_secret,
        STRIPE_API_BASE=base_url,
        BILLING_PLANS_CACHE_TTL="10m",
        OPENAI_API_KEY="sk-unused",  # the configured catalogue (CHAT_MODELS), gated per tier
        **PRICES,
    )
    async with serve_node(settings, clock=clock) as node:
        first = await get_plans(node.url)
        assert first["billing"] == "stripe" and first["billing_off_reason"] is None
        assert first["prices_available"] is True
        tiers = by_tier(first)
        assert tiers["basic"]["price"] is None and tiers["basic"]["purchasable"] is False
        assert tiers["premium_pro"]["purchasable"] is True
        assert tiers["premium_pro"]["price"] == {
            "id": "price_pro",
            "currency": "usd",
            "unit_amount": 1500,
            "interval": "month",
            "interval_count": 1,
        }
        assert tiers["unlimited"]["price"]["interval"] == "year"
        assert tiers["basic"]["limits"]["chat_models"] == ["gpt-4o-mini"]
        assert tiers["premium_pro"]["limits"]["chat_models"] == ["gpt-4o-mini", "gpt-4o", "gpt-4.1"]
        assert fake.price_reads() == 4

        fake.prices["price_pro"]["unit_amount"] = 1700  # Stripe changes; the cache does not know yet
        assert await get_plans(node.url) == first
        assert fake.price_reads() == 4  # within the TTL: not asked again

        clock.advance(timedelta(minutes=11))
        later = await get_plans(node.url)
        assert by_tier(later)["premium_pro"]["price"]["unit_amount"] == 1700
        assert fake.price_reads() == 8


async def test_with_stripe_down_the_plans_still_answer_without_prices(
    settings_for: Callable[..., Settings],
) -> None:
    clock = ManualClock()
    fake = FakeStripe()
    for price_id, amount in AMOUNTS.items():
        fake.add_price(price_id, amount)
    port = free_port()  # nothing listens there until the fake starts on it
    settings = settings_for(
        STRIPE_SECRET_KEY=fake.api_key,
        STRIPE_WEBHOOK_SECRET=fake.webhook_secret,
        STRIPE_API_BASE=f"http://127.0.0.1:{port}",
        **PRICES,
    )
    async with serve_node(settings, clock=clock) as node:
        down = await get_plans(node.url)
        assert down["billing"] == "stripe" and down["prices_available"] is False
        assert all(plan["price"] is None for plan in down["tiers"])
        assert by_tier(down)["premium_pro"]["purchasable"] is True  # checkout still exists
        assert by_tier(down)["premium_pro"]["limits"]["token_limit"] == settings.premium_pro_token_limit

        await fake.start(port=port)  # Stripe is back
        try:
            assert (await get_plans(node.url))["prices_available"] is False  # the failure is kept a while
            assert fake.price_reads() == 0
            clock.advance(FAILURE_TTL + timedelta(seconds=1))
            back = await get_plans(node.url)
            assert back["prices_available"] is True
            assert by_tier(back)["premium_starter"]["price"]["unit_amount"] == 500
        finally:
            await fake.stop()


async def test_an_unknown_price_id_leaves_that_price_out(
    settings_for: Callable[..., Settings], stripe_fake: tuple[FakeStripe, str]
) -> None:
    fake, base_url = stripe_fake
    settings = settings_for(
        STRIPE_SECRET_KEY=fake.api_key,
        STRIPE_WEBHOOK_SECRET=fake.webhook_secret,
        STRIPE_API_BASE=base_url,
        **{**PRICES, "STRIPE_PRICE_PREMIUM_ULTRA": "price_gone"},
    )
    async with serve_node(settings) as node:
        plans = await get_plans(node.url)
    tiers = by_tier(plans)
    assert plans["prices_available"] is False
    assert tiers["premium_ultra"]["price"] is None
    assert tiers["premium_pro"]["price"]["unit_amount"] == 1500
