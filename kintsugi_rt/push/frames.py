"""Web Push frames: the VAPID key a browser subscribes with, and its subscription."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from kintsugi_rt.socket.protocol import ClientMessage

# Push services' endpoints are a few hundred characters (FCM's are the longest, about 200).
MAX_ENDPOINT = 2048

Endpoint = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ENDPOINT)]
Key = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]


class PushKeys(msgspec.Struct):
    """As ``PushSubscription.toJSON().keys``: the browser's P-256 public key (65 bytes) and its auth
    secret (16 bytes), both base64url."""

    p256dh: Key
    auth: Key


# --- client frames ----------------------------------------------------------------------------


class PushConfigGet(ClientMessage, tag="push.config"):
    """Whether this server sends Web Push, and the VAPID public key to subscribe with
    (``pushManager.subscribe({userVisibleOnly: true, applicationServerKey: vapid_public_key})``)."""


class PushSubscribe(ClientMessage, tag="push.subscribe"):
    """Send pushes for new messages and incoming calls to this browser while none of your sockets is
    open: ``PushSubscription.toJSON()``'s ``endpoint`` and ``keys``. One subscription per login
    (session): subscribing again replaces this login's earlier one; an endpoint subscribed by another
    account moves to yours."""

    endpoint: Endpoint
    keys: PushKeys


class PushUnsubscribe(ClientMessage, tag="push.unsubscribe"):
    """Stop pushing to this endpoint (one of yours; an unknown one is no error)."""

    endpoint: Endpoint


# --- replies --------------------------------------------------------------------------------


class PushConfig(msgspec.Struct, omit_defaults=True):
    """The reply to ``push.config``. ``enabled`` false: production without VAPID keys (no key then)."""

    enabled: bool
    vapid_public_key: str | None = None


# --- what a push carries ----------------------------------------------------------------------

NoticeKind = Literal["message", "call", "missed_call"]


class PushNotice(msgspec.Struct):
    """The JSON a service worker receives (``event.data.json()``), encrypted for that browser alone.

    ``tag`` collapses notifications: the conversation's id for messages, ``call:<id>`` for a call (so a
    missed call replaces its ringing). ``url`` is the page to open on click."""

    kind: NoticeKind
    title: str
    body: str
    url: str
    tag: str
