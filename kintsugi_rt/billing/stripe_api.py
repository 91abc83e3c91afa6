"""The Stripe calls we make, through the official SDK (async, over httpx), with a configurable base."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import stripe

from kintsugi_rt.settings import Settings


@dataclass(frozen=True, slots=True)
class SubscriptionSnapshot:
    """A subscription as Stripe holds it now (re-fetched; webhook payloads are never trusted)."""

    id: str
    customer: str
    status: str
    price_id: str | None
    current_period_end: datetime | None
    cancel_at_period_end: bool


def _period_end(sub: Any) -> int | None:
    # Newer API versions keep the period on each item; older ones on the subscription itself.
    items = sub["items"]["data"] if sub.get("items") else []
    if items and items[0].get("current_period_end"):
        return int(items[0]["current_period_end"])
    value = sub.get("current_period_end")
    return int(value) if value else None


class StripeApi:
    def __init__(self, settings: Settings) -> None:
        assert settings.stripe_secret_key
        self._client = stripe.StripeClient(
            settings.stripe_secret_key,
            base_addresses={"api": settings.stripe_api_base} if settings.stripe_api_base else None,
            http_client=stripe.HTTPXClient(),
            max_network_retries=2,
        )
        self._settings = settings

    async def create_customer(self, email: str, name: str, user_id: str) -> str:
        customer = await self._client.v1.customers.create_async(
            params={"email": email, "name": name, "metadata": {"user_id": user_id}}
        )
        return str(customer.id)

    async def checkout(self, customer_id: str, price_id: str, user_id: str) -> tuple[str, str]:
        session = await self._client.v1.checkout.sessions.create_async(
            params={
                "mode": "subscription",
                "customer": customer_id,
                "line_items": [{"price": price_id, "quantity": 1}],
                "success_url": self._settings.billing_success_url,
                "cancel_url": self._settings.billing_cancel_url,
                "client_reference_id": user_id,
                "subscription_data": {"metadata": {"user_id": user_id}},
            }
        )
        return str(session.id), str(session.url)

    async def portal(self, customer_id: str) -> str:
        session = await self._client.v1.billing_portal.sessions.create_async(
            params={"customer": customer_id, "return_url": self._settings.billing_portal_return_url}
        )
        return str(session.url)

    async def subscription(self, subscription_id: str) -> SubscriptionSnapshot:
        sub = (await self._client.v1.subscriptions.retrieve_async(subscription_id)).to_dict()
        items = sub["items"]["data"] if sub.get("items") else []
        period_end = _period_end(sub)
        customer = sub["customer"]
        return SubscriptionSnapshot(
            id=sub["id"],
            customer=customer if isinstance(customer, str) else customer["id"],
            status=sub["status"],
            price_id=items[0]["price"]["id"] if items else None,
            current_period_end=datetime.fromtimestamp(period_end, UTC) if period_end else None,
            cancel_at_period_end=bool(sub.get("cancel_at_period_end")),
        )

    def verify(self, payload: bytes, signature: str) -> dict[str, Any]:
        """The event, if the signature is Stripe's and at most 300 s old; raises otherwise."""
        secret = self._settings.stripe_webhook_secret or ""
        event = stripe.Webhook.construct_event(payload, signature, secret, tolerance=300)
        data: dict[str, Any] = event.to_dict()
        return data
