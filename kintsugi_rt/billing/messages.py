"""Billing's REST wire types (``/api/billing/*``), as msgspec types."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

PaidTier = Literal["premium_starter", "premium_pro", "premium_ultra", "unlimited"]
Tier = Literal["basic", "premium_starter", "premium_pro", "premium_ultra", "unlimited"]


class CheckoutRequest(msgspec.Struct, forbid_unknown_fields=True):
    tier: PaidTier


class CheckoutSession(msgspec.Struct):
    """A Stripe Checkout session: send the user to ``url``."""

    id: str
    url: str


class PortalSession(msgspec.Struct):
    """A Stripe Customer Portal session: send the user to ``url``."""

    url: str


class Subscription(msgspec.Struct):
    """The user's tier and subscription (``status: "none"`` without one)."""

    tier: Tier
    status: str
    current_period_end: datetime | None
    cancel_at_period_end: bool


class WebhookReceipt(msgspec.Struct):
    """A verified webhook: ``applied`` is false for events of other types, replays and stale snapshots."""

    received: bool
    applied: bool


# --- GET /api/billing/plans -----------------------------------------------------------------------


class PlanPrice(msgspec.Struct):
    """A tier's Stripe price, as Stripe holds it now (read with the price id the server is configured
    with, cached for BILLING_PLANS_CACHE_TTL)."""

    id: str
    currency: Annotated[str, msgspec.Meta(description="ISO 4217, lower case (`usd`).")]
    unit_amount: Annotated[
        int | None,
        msgspec.Meta(
            description="In the currency's smallest unit (cents); null for tiered or custom prices."
        ),
    ]
    interval: Annotated[
        str | None, msgspec.Meta(description="`day`, `week`, `month` or `year`; null for one-off prices.")
    ]
    interval_count: int | None


class PlanLimits(msgspec.Struct):
    """What a tier may do, from the server's settings."""

    token_limit: Annotated[
        int, msgspec.Meta(description="Chat tokens per window (prompt + completion); -1: no limit.")
    ]
    chat_models: Annotated[list[str], msgspec.Meta(description="Chat models this tier may use.")]
    media_max_bytes: Annotated[int, msgspec.Meta(description="Largest upload, in bytes.")]
    call_max_participants: int
    call_max_duration_seconds: int
    call_video: Annotated[bool, msgspec.Meta(description="Whether this tier may start video calls.")]


class Plan(msgspec.Struct):
    tier: Tier
    paid: bool
    purchasable: Annotated[
        bool, msgspec.Meta(description="`POST /api/billing/checkout` sells it here (billing on, price set).")
    ]
    price: PlanPrice | None
    limits: PlanLimits


class Plans(msgspec.Struct):
    """Every tier with its limits and price. No login needed."""

    billing: Annotated[
        Literal["stripe", "off"], msgspec.Meta(description="As `hello.features.billing` on the socket.")
    ]
    billing_off_reason: Annotated[
        str | None, msgspec.Meta(description="Why billing is off (null when it is on).")
    ]
    prices_available: Annotated[
        bool,
        msgspec.Meta(
            description="False when billing is off or Stripe could not be reached: every price is "
            "then null (the limits still hold)."
        ),
    ]
    window_seconds: Annotated[
        int, msgspec.Meta(description="Length of a token window (TOKEN_RESET_INTERVAL); same for all.")
    ]
    window_reset_at: Annotated[datetime, msgspec.Meta(tz=True, description="When the current window ends.")]
    tiers: list[Plan]
