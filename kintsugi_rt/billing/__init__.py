"""SUBSCRIPTION: tiers, token limits per window, live usage, Stripe checkout/portal/webhooks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from kintsugi_rt.billing import frames as m
from kintsugi_rt.billing.meter import MAX_HISTORY, UsageMeter
from kintsugi_rt.billing.routes import routes
from kintsugi_rt.billing.service import BillingService, webhook_secret_missing
from kintsugi_rt.context import AppContext
from kintsugi_rt.logs import get_logger
from kintsugi_rt.modules import Module
from kintsugi_rt.settings import Settings, SettingsError
from kintsugi_rt.socket.protocol import BAD_REQUEST
from kintsugi_rt.socket.registry import ServerEvent, SocketContext, SocketError, SocketFeatures, SocketHandler

log = get_logger(__name__)

TOKEN_LIMIT_EXCEEDED = "token_limit_exceeded"

ERROR_CODES = {
    TOKEN_LIMIT_EXCEEDED: "The request does not fit in this window's token limit; ``details`` holds "
    "limit, used, reset_at and tier. Nothing was sent upstream.",
    "tier_required": "The feature needs a higher tier; ``details.tier`` names it.",
}


def meter(ctx: AppContext) -> UsageMeter:
    found = ctx.services["usage"]
    assert isinstance(found, UsageMeter)
    return found


def check_webhook_secret(settings: Settings) -> None:
    """Stripe without its webhook secret takes payments but never learns of them (no tier ever
    changes): refused in production, a warning elsewhere. ``hello.features.billing_webhooks`` says
    ``"off"`` then."""
    if not webhook_secret_missing(settings):
        return
    if settings.is_production:
        raise SettingsError(
            "STRIPE_WEBHOOK_SECRET: required with STRIPE_SECRET_KEY in production "
            "(without it no webhook can be verified, so subscriptions never change tiers)"
        )
    log.warning(
        "billing.webhooks_off",
        variable="STRIPE_WEBHOOK_SECRET",
        reason="STRIPE_SECRET_KEY is set but STRIPE_WEBHOOK_SECRET is not: webhooks are refused "
        "and subscriptions will not change tiers",
    )


async def _start(ctx: AppContext) -> None:
    check_webhook_secret(ctx.settings)
    usage = UsageMeter(ctx)
    ctx.services["usage"] = usage
    ctx.services["billing"] = BillingService(ctx, usage)


async def _usage_get(conn: SocketContext, message: Any) -> Any:
    return await meter(conn.app).state(conn.user_id)


async def _usage_history(conn: SocketContext, message: Any) -> Any:
    assert isinstance(message, m.UsageHistory)
    start, end = message.from_, message.to
    if start.tzinfo is None or end.tzinfo is None:
        raise SocketError(BAD_REQUEST, "Give times with a timezone (e.g. ending in Z).", {"field": "from"})
    if not start < end or end - start > MAX_HISTORY:
        raise SocketError(BAD_REQUEST, "`from` must be before `to`, at most 366 days apart.", {"field": "to"})
    return await meter(conn.app).history(conn.user_id, start, end, message.group_by)


_RESET = datetime(2026, 11, 26, 18, 0, tzinfo=UTC)

module = Module(
    name="billing",
    routes=routes,
    on_startup=(_start,),
    socket=SocketFeatures(
        handlers=(
            SocketHandler(
                m.UsageGet,
                _usage_get,
                m.UsageGet(id="u1"),
                {"tier": "basic", "used": 41250, "limit": 100000, "reset_at": _RESET.isoformat()},
            ),
            SocketHandler(
                m.UsageHistory,
                _usage_history,
                m.UsageHistory(id="u2", from_=_RESET - timedelta(days=7), to=_RESET, group_by="day"),
                {
                    "group_by": "day",
                    "rows": [
                        {
                            "key": "2026-11-25",
                            "prompt_tokens": 9100,
                            "completion_tokens": 4200,
                            "total_tokens": 13300,
                            "requests": 21,
                        }
                    ],
                },
            ),
        ),
        events=(
            ServerEvent(
                m.UsageUpdated, m.UsageUpdated(tier="basic", used=41250, limit=100000, reset_at=_RESET)
            ),
            ServerEvent(
                m.UsageWarning,
                m.UsageWarning(threshold=80, tier="basic", used=80400, limit=100000, reset_at=_RESET),
            ),
            ServerEvent(
                m.SubscriptionUpdated,
                m.SubscriptionUpdated(
                    tier="premium_pro", status="active", current_period_end=_RESET + timedelta(days=30)
                ),
                durable=True,
            ),
        ),
        error_codes=ERROR_CODES,
    ),
)
