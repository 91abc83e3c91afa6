"""One Web Push request (RFC 8030): the payload encrypted for one browser (RFC 8291, ``aes128gcm``,
by pywebpush), signed with our VAPID key (RFC 8292), POSTed to the browser's push service."""

from __future__ import annotations

import email.utils
import time
from dataclasses import dataclass
from typing import Literal

import httpx
from pywebpush import WebPusher

from kintsugi_rt.push.storage import Target
from kintsugi_rt.push.vapid import Vapid

Urgency = Literal["very-low", "low", "normal", "high"]

# Longest Retry-After we wait for before a retry (a push service asking for more gets the backoff).
MAX_RETRY_AFTER_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class Delivery:
    """How a push service should treat one notification (RFC 8030 §5.2-5.4)."""

    ttl_seconds: int
    urgency: Urgency
    topic: str | None = None  # replaces an undelivered push of the same topic (≤ 32 base64url chars)


def encrypt(target: Target, payload: bytes) -> bytes:
    """The payload as the ``aes128gcm`` body only that browser can read."""
    pusher = WebPusher({"endpoint": target.endpoint, "keys": {"p256dh": target.p256dh, "auth": target.auth}})
    encoded = pusher.encode(payload, "aes128gcm")
    body: bytes = encoded["body"]
    return body


async def post(
    http: httpx.AsyncClient, vapid: Vapid, target: Target, body: bytes, delivery: Delivery
) -> httpx.Response:
    headers = {
        "Authorization": vapid.authorization(target.endpoint),
        "TTL": str(delivery.ttl_seconds),
        "Urgency": delivery.urgency,
        "Content-Encoding": "aes128gcm",
        "Content-Type": "application/octet-stream",
    }
    if delivery.topic is not None:
        headers["Topic"] = delivery.topic
    return await http.post(target.endpoint, content=body, headers=headers)


def retry_after(response: httpx.Response) -> float | None:
    """The push service's ``Retry-After`` in seconds (a number or an HTTP date), capped; ``None``
    without one."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER_SECONDS)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return min(max(0.0, when.timestamp() - time.time()), MAX_RETRY_AFTER_SECONDS)
