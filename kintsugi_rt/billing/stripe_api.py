"""The Stripe calls we make, through the official SDK (async, over httpx), with a configurable base."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

import msgspec
import stripe

from kintsugi_rt.billing.messages import PlanPrice
from kintsugi_rt.settings import Settings
from kintsugi_rt.web import describe_validation_error

_Event = TypeVar("_Event", bound=msgspec.Struct)

# How far a webhook's signature time may be from ours, either way (Stripe's SDK checks only the past).
WEBHOOK_TOLERANCE_SECONDS = 300

# Stripe's ids are letters, digits and underscores (evt_…, cus_…, sub_…); the bound keeps anything else
# out of our tables and of the URLs we call.
StripeId = Annotated[str, msgspec.Meta(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9_]+$")]
EventType = Annotated[str, msgspec.Meta(min_length=1, max_length=255, pattern=r"^[a-z0-9_.]+$")]


class EventEnvelope(msgspec.Struct):
    """What every event must carry before we even look at its type."""

    id: StripeId
    type: EventType


class Expanded(msgspec.Struct):
    """An expanded reference (``{"id": …, …}``) where Stripe usually sends the bare id."""

    id: StripeId


Reference = StripeId | Expanded


class SubscriptionDetails(msgspec.Struct):
    subscription: Reference | None = None


class InvoiceParent(msgspec.Struct):
    subscription_details: SubscriptionDetails | None = None


class EventObject(msgspec.Struct, rename={"kind": "object"}):
    """The fields of ``data.object`` a handled event is read for (a checkout session, a subscription
    or an invoice); all else is ignored, and only re-fetched subscriptions are trusted."""

    kind: str | None = None
    id: StripeId | None = None
    customer: Reference | None = None
    subscription: Reference | None = None
    parent: InvoiceParent | None = None  # invoices in newer API versions

    def subscription_id(self) -> str | None:
        """The subscription the event is about, wherever this API version puts it."""
        if self.kind == "subscription":
            if self.id is None:
                raise InvalidEvent("data.object.id", "This field is required.")
            return self.id
        found = self.subscription
        if found is None and self.parent is not None and self.parent.subscription_details is not None:
            found = self.parent.subscription_details.subscription
        return _ref_id(found)

    def customer_id(self) -> str | None:
        return _ref_id(self.customer)


class EventData(msgspec.Struct):
    object: EventObject


class HandledEvent(msgspec.Struct):
    id: StripeId
    type: EventType
    data: EventData


def _ref_id(ref: Reference | None) -> str | None:
    return ref.id if isinstance(ref, Expanded) else ref


class InvalidEvent(ValueError):
    """A correctly signed event lacks what we read from it; ``field`` is the path, e.g. ``data.object``."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def decode_event(payload: bytes, type_: type[_Event]) -> _Event:
    """The payload as ``type_`` (``EventEnvelope`` or ``HandledEvent``); ``InvalidEvent`` names what is
    missing or malformed."""
    try:
        event = msgspec.json.decode(payload, type=type_)
    except msgspec.ValidationError as exc:
        raise InvalidEvent(*describe_validation_error(exc)) from None
    except msgspec.DecodeError:
        raise InvalidEvent("$", "The body is not valid JSON.") from None
    return event


class SignatureOutOfTolerance(ValueError):
    """A valid signature made too long ago, or too far in the future (a replay, or a forged clock)."""


def signed_at(header: str) -> int:
    """The ``t=`` timestamp of a ``Stripe-Signature`` header (``ValueError`` without one)."""
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        if key == "t":
            return int(value)
    raise ValueError("no timestamp in the Stripe-Signature header")


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

    async def price(self, price_id: str) -> PlanPrice:
        """A price as Stripe holds it now (``GET /v1/prices/{id}``)."""
        price = (await self._client.v1.prices.retrieve_async(price_id)).to_dict()
        recurring = price.get("recurring") or {}
        amount = price.get("unit_amount")
        count = recurring.get("interval_count")
        return PlanPrice(
            id=str(price["id"]),
            currency=str(price["currency"]),
            unit_amount=int(amount) if amount is not None else None,
            interval=recurring.get("interval"),
            interval_count=int(count) if count is not None else None,
        )

    def verify(self, payload: bytes, signature: str, now: float) -> None:
        """Raise ``stripe.SignatureVerificationError`` or a ``ValueError`` unless the signature is
        Stripe's and its time is within ``WEBHOOK_TOLERANCE_SECONDS`` of ``now``, before or after."""
        secret = self._settings.stripe_webhook_secret or ""
        stripe.WebhookSignature.verify_header(payload, signature, secret, tolerance=None)
        at = signed_at(signature)
        if abs(now - at) > WEBHOOK_TOLERANCE_SECONDS:
            raise SignatureOutOfTolerance(f"signed at {at}, now is {now:.0f}")
