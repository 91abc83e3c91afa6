"""The ICE servers a device gets when it joins a call: STUN as configured, TURN with per-call credentials.

TURN credentials follow the *TURN REST API* scheme that coturn implements with ``use-auth-secret`` and
``static-auth-secret=<TURN_SECRET>`` (``man turnserver``, section "TURN REST API")::

    username   = "<expiry, unix seconds>:<user id>"
    credential = base64(HMAC-SHA1(key=TURN_SECRET, message=username))

coturn recomputes the HMAC from the username with the same secret and refuses the allocation once the
timestamp in the username is in the past, so the server never has to tell the TURN server about a call,
and a leaked credential is worth ``TURN_CREDENTIAL_TTL`` at most. The user id in the username lets
coturn's logs be read per user. Pure functions: no I/O, the time is an argument.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid
from dataclasses import dataclass
from datetime import datetime

from kintsugi_rt.calls.frames import IceServer
from kintsugi_rt.settings import Settings


@dataclass(frozen=True, slots=True)
class TurnCredentials:
    """One user's short-lived TURN username and password (``RTCIceServer.username`` / ``.credential``)."""

    username: str
    credential: str
    expires_at: datetime


def turn_configured(settings: Settings) -> bool:
    """Whether callers get a TURN relay: ``TURN_URLS`` and ``TURN_SECRET`` are both set."""
    return bool(settings.turn_urls and settings.turn_secret)


def turn_credentials(secret: str, user_id: uuid.UUID, expires_at: datetime) -> TurnCredentials:
    """The TURN REST API credentials of ``user_id`` valid until ``expires_at`` (timezone-aware).

    ``username = f"{int(expires_at.timestamp())}:{user_id}"`` and
    ``credential = base64(HMAC-SHA1(secret, username))``: what coturn checks with ``use-auth-secret``.
    """
    if expires_at.tzinfo is None:
        raise ValueError("expires_at must be timezone-aware")
    username = f"{int(expires_at.timestamp())}:{user_id}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return TurnCredentials(username, base64.b64encode(digest).decode("ascii"), expires_at)


def ice_servers(settings: Settings, user_id: uuid.UUID, now: datetime) -> list[IceServer]:
    """The ``iceServers`` for one device of ``user_id`` joining a call at ``now`` (timezone-aware).

    The STUN urls (``ICE_STUN_URLS``), if any, as one server without credentials; then, when TURN is
    configured (``TURN_URLS`` and ``TURN_SECRET``), the TURN urls as one server with credentials valid
    for ``TURN_CREDENTIAL_TTL`` from ``now``. Empty when neither is configured (host candidates only).
    """
    servers: list[IceServer] = []
    if settings.ice_stun_urls:
        servers.append(IceServer(urls=list(settings.ice_stun_urls)))
    if settings.turn_urls and settings.turn_secret:
        creds = turn_credentials(settings.turn_secret, user_id, now + settings.turn_credential_ttl)
        servers.append(
            IceServer(urls=list(settings.turn_urls), username=creds.username, credential=creds.credential)
        )
    return servers
