"""Subscriptions: Checkout, the Customer Portal, and Stripe webhooks turned into tiers.

Webhooks are verified on the raw body, applied once (the event id is recorded in the transaction
that applies it), and order-proof: the subscription is re-fetched from Stripe rather than read from
the payload, and a snapshot older than the stored period is never applied.

Past-due policy: while Stripe retries a failed payment (``past_due``) the paid tier stays, and the
user is told (``attention: payment_failed``). When Stripe gives up (``unpaid``, ``canceled``,
``incomplete_expired``) or the subscription ends, the user is back on ``basic`` at once.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, cast

import stripe

from kintsugi_rt.auth.messages import User
from kintsugi_rt.auth.validation import normalize_email
from kintsugi_rt.billing import storage
from kintsugi_rt.billing.frames import SubscriptionUpdated
from kintsugi_rt.billing.messages import (
    CheckoutSession,
    PortalSession,
    Subscription,
    Tier,
    WebhookReceipt,
)
from kintsugi_rt.billing.meter import UsageMeter
from kintsugi_rt.billing.plans import PlanCatalogue
from kintsugi_rt.billing.stripe_api import (
    EventEnvelope,
    HandledEvent,
    InvalidEvent,
    StripeApi,
    SubscriptionSnapshot,
    decode_event,
)
from kintsugi_rt.context import AppContext
from kintsugi_rt.errors import ApiError
from kintsugi_rt.logs import get_logger
from kintsugi_rt.settings import TIERS, Settings
from kintsugi_rt.socket import streams

log = get_logger(__name__)

BILLING_DISABLED = "billing_disabled"
ALREADY_SUBSCRIBED = "already_subscribed"
NO_CUSTOMER = "no_customer"
INVALID_SIGNATURE = "invalid_signature"
INVALID_EVENT = "invalid_event"
WEBHOOKS_DISABLED = "billing_webhooks_disabled"
PROVIDER_ERROR = "billing_provider_error"

PAID_STATUSES = {"active", "trialing", "past_due"}
HANDLED_EVENTS = {
    "checkout.session.completed",
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "invoice.paid",
    "invoice.payment_failed",
    "invoice.payment_action_required",
}
_ATTENTION = {
    "invoice.payment_failed": "payment_failed",
    "invoice.payment_action_required": "payment_action_required",
}


def webhook_secret_missing(settings: Settings) -> bool:
    """Stripe is on (``STRIPE_SECRET_KEY``) but its webhooks cannot be verified, so none is applied."""
    return bool(settings.stripe_secret_key) and not (settings.stripe_webhook_secret or "").strip()


class BillingService:
    def __init__(self, ctx: AppContext, meter: UsageMeter) -> None:
        self.ctx = ctx
        self.meter = meter
        self.tiers = meter.tiers
        settings = ctx.settings
        self.api = StripeApi(settings) if settings.stripe_secret_key else None
        self.prices = settings.stripe_prices()  # price id -> tier
        self.webhooks = self.api is not None and not webhook_secret_missing(settings)
        self.plans = PlanCatalogue(ctx, self.api)
        ctx.features["billing"] = "stripe" if self.api else "off"
        ctx.features["billing_webhooks"] = "on" if self.webhooks else "off"

    def require_api(self) -> StripeApi:
        if self.api is None:
            raise ApiError(
                503, BILLING_DISABLED, "Billing is not configured on this server (STRIPE_SECRET_KEY)."
            )
        return self.api

    # --- REST -----------------------------------------------------------------------------------

    async def checkout(self, user: User, tier: str) -> CheckoutSession:
        api = self.require_api()
        price = next((p for p, t in self.prices.items() if t == tier), None)
        if price is None:
            raise ApiError(
                422,
                "validation_failed",
                "No such paid tier here.",
                fields={"tier": f"One of {self._paid_tiers()}."},
            )
        current = await storage.subscription_of(self.ctx.db.pool, user.id)
        if current is not None and current["status"] in PAID_STATUSES:
            raise ApiError(
                409, ALREADY_SUBSCRIBED, "You already have a subscription; change it in the portal."
            )
        customer = await self._customer(api, user)
        session_id, url = await self._call(api.checkout(customer, price, str(user.id)))
        log.info("billing.checkout_created", user_id=str(user.id), tier=tier, session_id=session_id)
        return CheckoutSession(id=session_id, url=url)

    async def portal(self, user: User) -> PortalSession:
        api = self.require_api()
        customer = await storage.customer_of(self.ctx.db.pool, user.id)
        if customer is None:
            raise ApiError(409, NO_CUSTOMER, "There is no billing account yet; subscribe first.")
        return PortalSession(url=await self._call(api.portal(customer)))

    async def subscription(self, user: User) -> Subscription:
        self.require_api()
        row = await storage.subscription_of(self.ctx.db.pool, user.id)
        tier = await self.tiers.tier_of(user.id)
        return Subscription(
            tier=cast(Tier, tier),
            status=row["status"] if row else "none",
            current_period_end=row["current_period_end"] if row else None,
            cancel_at_period_end=row["cancel_at_period_end"] if row else False,
        )

    def _paid_tiers(self) -> str:
        return ", ".join(t for t in TIERS if t in self.prices.values())

    async def _call(self, call: Any) -> Any:
        try:
            return await call
        except stripe.StripeError as exc:
            log.warning("billing.stripe_failed", error=repr(exc))
            raise ApiError(502, PROVIDER_ERROR, "The payment provider failed; try again.") from None

    async def _customer(self, api: StripeApi, user: User) -> str:
        """The user's one Stripe customer, created on first need."""
        async with self.ctx.db.pool.acquire() as conn, conn.transaction():
            await storage.lock_user(conn, user.id)  # one creator at a time
            existing = await storage.customer_of(conn, user.id)
            if existing is not None:
                return existing
            customer_id: str = await self._call(
                api.create_customer(user.email, user.display_name, str(user.id))
            )
            await storage.save_customer(conn, user.id, customer_id)
            return customer_id

    # --- webhooks --------------------------------------------------------------------------------

    async def webhook(self, payload: bytes, signature: str | None) -> WebhookReceipt:
        api = self.require_api()
        if not self.webhooks:
            raise ApiError(
                503, WEBHOOKS_DISABLED, "Webhooks are off on this server: STRIPE_WEBHOOK_SECRET is not set."
            )
        if not signature:
            raise ApiError(400, INVALID_SIGNATURE, "Missing Stripe-Signature header.")
        try:
            api.verify(payload, signature, time.time())
        except (stripe.SignatureVerificationError, ValueError):
            log.warning("billing.webhook_rejected")
            raise ApiError(
                400, INVALID_SIGNATURE, "The signature is not valid, or not within 300 s of now."
            ) from None
        try:
            envelope = decode_event(payload, EventEnvelope)
            if envelope.type not in HANDLED_EVENTS:
                return WebhookReceipt(received=True, applied=False)
            event = decode_event(payload, HandledEvent)
            sub_id = event.data.object.subscription_id()
        except InvalidEvent as exc:
            log.warning("billing.webhook_invalid", field=exc.field, reason=exc.reason)
            raise ApiError(
                400, INVALID_EVENT, "The event lacks what it needs.", fields={exc.field: exc.reason}
            ) from None
        snapshot = await self._call(api.subscription(sub_id)) if sub_id else None
        applied = await self._apply(event.id, event.type, event.data.object.customer_id(), snapshot)
        return WebhookReceipt(received=True, applied=applied)

    async def _apply(
        self, event_id: str, event_type: str, customer_id: str | None, snapshot: SubscriptionSnapshot | None
    ) -> bool:
        customer = snapshot.customer if snapshot else customer_id
        async with self.ctx.db.pool.acquire() as conn, conn.transaction():
            if not await storage.claim_event(conn, event_id, event_type):
                log.info("billing.event_replayed", event_id=event_id)
                return False
            user_id = await storage.user_of_customer(conn, str(customer)) if customer else None
            if user_id is None or snapshot is None:
                log.warning("billing.event_without_user", event_id=event_id, type=event_type)
                return False
            await storage.lock_user(conn, user_id)
            stored = await storage.subscription_of(conn, user_id)
            if stored is not None and stored["stripe_subscription_id"] == snapshot.id:
                if not storage.newer_or_same(stored["current_period_end"], snapshot.current_period_end):
                    log.info("billing.stale_snapshot_ignored", event_id=event_id)
                    return False
            elif (
                stored is not None
                and stored["status"] in PAID_STATUSES
                and snapshot.status not in PAID_STATUSES
            ):
                # An old, ended subscription must not override the one the user has now.
                log.info("billing.other_subscription_ignored", event_id=event_id)
                return False
            tier = self._tier_for(snapshot)
            await storage.save_subscription(conn, user_id, snapshot, tier)
            previous = await storage.set_tier(conn, user_id, tier)
            update = SubscriptionUpdated(
                tier=tier,
                status=snapshot.status,
                current_period_end=snapshot.current_period_end,
                cancel_at_period_end=snapshot.cancel_at_period_end,
                attention=_ATTENTION.get(event_type),
            )
            delivery = await streams.append(conn, [user_id], update)
        await self.ctx.events.publish_durable(delivery)
        if previous != tier:
            log.info("billing.tier_changed", user_id=str(user_id), old=previous, new=tier, event_id=event_id)
            await self.meter.push_state(user_id)
        return True

    def _tier_for(self, snapshot: SubscriptionSnapshot) -> str:
        if snapshot.status not in PAID_STATUSES or snapshot.price_id is None:
            return "basic"
        return self.prices.get(snapshot.price_id, "basic")


async def set_tier_by_hand(ctx: AppContext, email: str, tier: str) -> uuid.UUID:
    """``kintsugi-rt users set-tier``: for servers without Stripe, or support."""
    if tier not in TIERS:
        raise ValueError(f"unknown tier {tier!r}; one of {', '.join(TIERS)}")
    normalized = normalize_email(email)  # the form accounts are stored in
    if normalized is None:
        raise LookupError(f"no user with email {email!r}")
    async with ctx.db.pool.acquire() as conn, conn.transaction():
        user_id = await storage.user_by_email(conn, normalized)
        if user_id is None:
            raise LookupError(f"no user with email {email!r}")
        await storage.set_tier(conn, user_id, tier)
        delivery = await streams.append(conn, [user_id], SubscriptionUpdated(tier=tier, status="manual"))
    await ctx.events.publish_durable(delivery)
    return user_id
