"""``/api/billing/*``."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from kintsugi_rt import errors
from kintsugi_rt.auth import AuthService
from kintsugi_rt.billing import service as codes
from kintsugi_rt.billing.messages import (
    CheckoutRequest,
    CheckoutSession,
    Plans,
    PortalSession,
    Subscription,
    WebhookReceipt,
)
from kintsugi_rt.billing.service import BillingService
from kintsugi_rt.web import ApiRoute, Body, Param, Reply, json_response, read_body, read_json

# Stripe's events are small; this leaves room for large invoices while refusing junk early.
MAX_WEBHOOK_BYTES = 512 * 1024
# Browsers and CDNs may keep the plans this long (the server caches Stripe's prices longer).
_PLANS_CACHE_CONTROL = "public, max-age=60"
_TAG = "billing"
_OFF = (codes.BILLING_DISABLED,)
_PROVIDER = (codes.PROVIDER_ERROR,)


class BillingRoutes:
    def __init__(self, billing: BillingService, auth: AuthService, *, max_body: int) -> None:
        self.billing = billing
        self.auth = auth
        self.max_body = max_body

    def routes(self) -> list[BaseRoute]:
        return [
            ApiRoute(
                "/api/billing/plans",
                self.plans,
                method="GET",
                name="billing_plans",
                tag=_TAG,
                summary="Every tier: its limits and its price",
                description="No login needed. Limits come from the server's settings; prices from Stripe "
                "for the configured price ids (cached for BILLING_PLANS_CACHE_TTL). Without Stripe, or "
                "while it cannot be reached, prices are null and `prices_available` is false.",
                replies={200: Reply("The plans.", Plans, {"Cache-Control": f"`{_PLANS_CACHE_CONTROL}`."})},
                may_be_unavailable=False,
            ),
            ApiRoute(
                "/api/billing/checkout",
                self.checkout,
                method="POST",
                name="billing_checkout",
                tag=_TAG,
                summary="Start a Stripe Checkout for a paid tier",
                description="The tier changes when Stripe's webhook says the subscription is paid; the "
                "user's sockets get `subscription.updated`.",
                auth="bearer",
                request=CheckoutRequest,
                replies={201: Reply("The Checkout session; send the user to its `url`.", CheckoutSession)},
                errors={409: (codes.ALREADY_SUBSCRIBED,), 502: _PROVIDER, 503: _OFF},
            ),
            ApiRoute(
                "/api/billing/portal",
                self.portal,
                method="POST",
                name="billing_portal",
                tag=_TAG,
                summary="Open the Stripe Customer Portal (change plan, card, cancel)",
                auth="bearer",
                replies={201: Reply("The portal session; send the user to its `url`.", PortalSession)},
                errors={409: (codes.NO_CUSTOMER,), 502: _PROVIDER, 503: _OFF},
            ),
            ApiRoute(
                "/api/billing/subscription",
                self.subscription,
                method="GET",
                name="billing_subscription",
                tag=_TAG,
                summary="The user's tier and subscription",
                auth="bearer",
                replies={200: Reply("The subscription (`status: none` without one).", Subscription)},
                errors={503: _OFF},
            ),
            ApiRoute(
                "/api/billing/webhook",
                self.webhook,
                method="POST",
                name="billing_webhook",
                tag=_TAG,
                summary="Stripe's webhook events (for Stripe, not for clients)",
                description="Verified on the raw body with STRIPE_WEBHOOK_SECRET (300 s tolerance both "
                "ways), applied once, order-proof (docs/billing.md).",
                request=Body(
                    "application/json",
                    {"type": "object", "description": "A Stripe Event object."},
                    "A Stripe Event, signed in `Stripe-Signature`.",
                ),
                params=(
                    Param("Stripe-Signature", "header", "Stripe's signature of the body.", required=True),
                ),
                replies={
                    200: Reply("Received (and applied, unless a replay or of another type).", WebhookReceipt)
                },
                errors={
                    400: (codes.INVALID_SIGNATURE, codes.INVALID_EVENT),
                    413: (errors.PAYLOAD_TOO_LARGE,),
                    502: _PROVIDER,
                    503: (codes.BILLING_DISABLED, codes.WEBHOOKS_DISABLED),
                },
            ),
        ]

    async def plans(self, request: Request) -> Response:
        plans = await self.billing.plans.plans()
        return json_response(plans, headers={"Cache-Control": _PLANS_CACHE_CONTROL})

    async def checkout(self, request: Request) -> Response:
        self.billing.require_api()
        principal = await self.auth.require_principal(request)
        body = await read_json(request, CheckoutRequest, self.max_body)
        return json_response(await self.billing.checkout(principal.user, body.tier), status=201)

    async def portal(self, request: Request) -> Response:
        self.billing.require_api()
        principal = await self.auth.require_principal(request)
        return json_response(await self.billing.portal(principal.user), status=201)

    async def subscription(self, request: Request) -> Response:
        self.billing.require_api()
        principal = await self.auth.require_principal(request)
        return json_response(await self.billing.subscription(principal.user))

    async def webhook(self, request: Request) -> Response:
        self.billing.require_api()
        payload = await read_body(request, MAX_WEBHOOK_BYTES)  # the raw bytes: the signature covers them
        return json_response(await self.billing.webhook(payload, request.headers.get("stripe-signature")))


def routes(billing: BillingService, auth: AuthService, *, max_body: int) -> list[BaseRoute]:
    return BillingRoutes(billing, auth, max_body=max_body).routes()
