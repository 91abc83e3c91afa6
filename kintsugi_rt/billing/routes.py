"""``/api/billing/*``."""

from __future__ import annotations

from typing import Literal

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from kintsugi_rt.auth import AuthService
from kintsugi_rt.billing.service import BillingService
from kintsugi_rt.web import json_response, read_body, read_json

# Stripe's events are small; this leaves room for large invoices while refusing junk early.
MAX_WEBHOOK_BYTES = 512 * 1024


class CheckoutRequest(msgspec.Struct, forbid_unknown_fields=True):
    tier: Literal["premium_starter", "premium_pro", "premium_ultra", "unlimited"]


class BillingRoutes:
    def __init__(self, billing: BillingService, auth: AuthService, *, max_body: int) -> None:
        self.billing = billing
        self.auth = auth
        self.max_body = max_body

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/api/billing/checkout", self.checkout, methods=["POST"]),
            Route("/api/billing/portal", self.portal, methods=["POST"]),
            Route("/api/billing/subscription", self.subscription, methods=["GET"]),
            Route("/api/billing/webhook", self.webhook, methods=["POST"]),
        ]

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
