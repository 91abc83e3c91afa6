"""``/api/billing/*``."""

from __future__ import annotations

from typing import Literal

import msgspec
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.routing import Route

from kintsugi_rt.auth.routes import require_principal
from kintsugi_rt.billing.service import BillingService
from kintsugi_rt.context import get_context
from kintsugi_rt.web import json_response, read_body, read_json

# Stripe's events are small; this leaves room for large invoices while refusing junk early.
MAX_WEBHOOK_BYTES = 512 * 1024


class CheckoutRequest(msgspec.Struct, forbid_unknown_fields=True):
    tier: Literal["premium_starter", "premium_pro", "premium_ultra", "unlimited"]


def billing(conn: HTTPConnection) -> BillingService:
    service = get_context(conn).services["billing"]
    assert isinstance(service, BillingService)
    return service


async def checkout(request: Request) -> Response:
    service = billing(request)
    service.require_api()
    principal = await require_principal(request)
    body = await read_json(request, CheckoutRequest, get_context(request).settings.max_request_body_bytes)
    return json_response(await service.checkout(principal.user, body.tier), status=201)


async def portal(request: Request) -> Response:
    service = billing(request)
    service.require_api()
    principal = await require_principal(request)
    return json_response(await service.portal(principal.user), status=201)


async def subscription(request: Request) -> Response:
    service = billing(request)
    service.require_api()
    principal = await require_principal(request)
    return json_response(await service.subscription(principal.user))


async def webhook(request: Request) -> Response:
    service = billing(request)
    service.require_api()
    payload = await read_body(request, MAX_WEBHOOK_BYTES)  # the raw bytes: the signature covers them
    return json_response(await service.webhook(payload, request.headers.get("stripe-signature")))


routes = [
    Route("/api/billing/checkout", checkout, methods=["POST"]),
    Route("/api/billing/portal", portal, methods=["POST"]),
    Route("/api/billing/subscription", subscription, methods=["GET"]),
    Route("/api/billing/webhook", webhook, methods=["POST"]),
]
