"""SUBSCRIPTION: tiers, token limits per window, live usage, Stripe checkout/portal/webhooks."""

from __future__ import annotations

from kintsugi_rt.billing import examples as ex
from kintsugi_rt.billing import frames as f
from kintsugi_rt.billing.meter import MAX_HISTORY, UsageMeter
from kintsugi_rt.billing.routes import routes
from kintsugi_rt.billing.service import BillingService, webhook_secret_missing
from kintsugi_rt.billing.tiers import TIER_REQUIRED, Tiers
from kintsugi_rt.billing.usage import UsageState
from kintsugi_rt.logs import get_logger
from kintsugi_rt.settings import Settings, SettingsError
from kintsugi_rt.socket.protocol import BAD_REQUEST
from kintsugi_rt.socket.registry import SocketContext, SocketError, SocketFeatures, SocketHandler

__all__ = ["BillingService", "Tiers", "UsageMeter", "check_webhook_secret", "routes", "socket_features"]

log = get_logger(__name__)

TOKEN_LIMIT_EXCEEDED = "token_limit_exceeded"

ERROR_CODES = {
    TOKEN_LIMIT_EXCEEDED: "The request does not fit in this window's token limit; ``details`` holds "
    "limit, used, reset_at and tier. Nothing was sent upstream.",
    TIER_REQUIRED: "The model needs a higher subscription tier; ``details.tier`` names it.",
}


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


def socket_features(usage: UsageMeter) -> SocketFeatures:
    """The usage frames, bound to ``usage``."""

    async def usage_get(conn: SocketContext, message: f.UsageGet) -> UsageState:
        return await usage.state(conn.user_id)

    async def usage_history(conn: SocketContext, message: f.UsageHistory) -> f.UsageHistoryResult:
        start, end = message.from_, message.to
        if start.tzinfo is None or end.tzinfo is None:
            raise SocketError(
                BAD_REQUEST, "Give times with a timezone (e.g. ending in Z).", {"field": "from"}
            )
        if not start < end or end - start > MAX_HISTORY:
            raise SocketError(
                BAD_REQUEST, "`from` must be before `to`, at most 366 days apart.", {"field": "to"}
            )
        return await usage.history(conn.user_id, start, end, message.group_by)

    return SocketFeatures(
        handlers=(
            SocketHandler(f.UsageGet, usage_get, ex.USAGE_GET, ex.USAGE_GET_RESULT),
            SocketHandler(f.UsageHistory, usage_history, ex.USAGE_HISTORY, ex.USAGE_HISTORY_RESULT),
        ),
        events=ex.EVENTS,
        error_codes=ERROR_CODES,
    )
