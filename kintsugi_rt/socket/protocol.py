"""The socket protocol's own frames, codes and base types.

Every frame is a msgspec Struct tagged by its ``type`` field. Client frames derive from
``ClientMessage`` (they may carry an ``id`` and then get exactly one terminal reply), server pushes
from ``ServerMessage``. Feature modules declare their frames the same way, next to their handlers.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import msgspec

RequestId = Annotated[str, msgspec.Meta(max_length=64)]

SUBPROTOCOL_MSGPACK = "kintsugi.msgpack"
SUBPROTOCOL_JSON = "kintsugi.json"


class ClientMessage(msgspec.Struct, tag_field="type", kw_only=True):
    """A frame from a client. Unknown fields are ignored, so newer clients keep working."""

    id: RequestId | None = None


class ServerMessage(msgspec.Struct, tag_field="type", kw_only=True, omit_defaults=True):
    """A frame the server pushes. ``pos`` is set on durable events (see docs/delivery.md)."""


# --- client frames of the gateway itself ----------------------------------------------------


class Auth(ClientMessage, tag="auth"):
    """First frame when no token came with the upgrade request; later, to renew before expiry."""

    token: str


class Ping(ClientMessage, tag="ping"):
    """Application-level liveness check; answered with ``pong``."""


class Resume(ClientMessage, tag="resume"):
    """Replay every durable event after ``pos`` of stream ``epoch`` (both from ``hello`` or events)."""

    epoch: str
    pos: Annotated[int, msgspec.Meta(ge=0)]


CORE_CLIENT_MESSAGES: tuple[type[ClientMessage], ...] = (Auth, Ping, Resume)


# --- server frames of the gateway itself ----------------------------------------------------


class Hello(ServerMessage, tag="hello"):
    """Sent once the connection is authenticated."""

    conn_id: str
    user_id: uuid.UUID
    epoch: str
    pos: int
    expires_at: int
    protocol: str
    resume_grace_ms: int
    features: dict[str, str]


class Ok(ServerMessage, tag="ok"):
    """Terminal success reply to a request that carried ``id``; the result's fields sit beside it."""

    id: str


class Error(ServerMessage, tag="error"):
    """Terminal failure reply (with ``id``), or a push about the connection itself (without)."""

    code: str
    message: str
    id: str | None = None
    details: dict[str, Any] | None = None


class Pong(ServerMessage, tag="pong"):
    """The answer to ``ping``."""

    id: str | None = None


class Resumed(ServerMessage, tag="resumed"):
    """Replay finished: every durable event up to ``pos`` has been sent."""

    epoch: str
    pos: int
    replayed: int
    id: str | None = None


class ResyncRequired(ServerMessage, tag="resync_required"):
    """The gap cannot be replayed (beyond the retained window, or another epoch): refetch state."""

    epoch: str
    pos: int
    reason: str
    id: str | None = None


# --- error codes (stable names) ----------------------------------------------------------------

BAD_REQUEST = "bad_request"
UNAUTHORIZED = "unauthorized"
TOKEN_EXPIRED = "token_expired"
SESSION_REVOKED = "session_revoked"
RATE_LIMITED = "rate_limited"
NOT_FOUND = "not_found"
FORBIDDEN = "forbidden"
INTERNAL_ERROR = "internal_error"
SLOW_CONSUMER = "slow_consumer"

ERROR_CODES: dict[str, str] = {
    BAD_REQUEST: "The frame is malformed: not JSON/MessagePack, unknown type, or a missing or "
    "ill-typed field (``details.field`` names it). The connection stays open.",
    UNAUTHORIZED: "The token is missing or not valid (also sent just before close 4401).",
    TOKEN_EXPIRED: "The access token expired without renewal; the server closes with 4401 next.",
    SESSION_REVOKED: "The login was ended (logout or logout-all); the server closes with 4401 next.",
    RATE_LIMITED: "Too many frames; slow down. Persisting closes the connection with 4429.",
    NOT_FOUND: "The resource does not exist or is not yours; never says which.",
    FORBIDDEN: "The request is understood but not allowed (e.g. renewing with another user's token).",
    INTERNAL_ERROR: "Something failed on our side; it is logged with the connection id.",
    SLOW_CONSUMER: "The connection could not keep up with durable events; it is closed with 4008. Resume.",
}

# --- close codes -------------------------------------------------------------------------------

CLOSE_NORMAL = 1000
CLOSE_SERVICE_RESTART = 1012
CLOSE_TOO_BIG = 1009
CLOSE_SLOW_CONSUMER = 4008
CLOSE_UNAUTHORIZED = 4401
CLOSE_AUTH_TIMEOUT = 4408
CLOSE_RATE_LIMITED = 4429

CLOSE_CODES: dict[int, str] = {
    CLOSE_NORMAL: "Normal close.",
    CLOSE_SERVICE_RESTART: "The server is shutting down; reconnect (to another node) and resume.",
    CLOSE_TOO_BIG: "A frame was larger than the limit (WS_MAX_FRAME_BYTES, 256 KiB by default).",
    CLOSE_SLOW_CONSUMER: "The outbound queue overflowed with durable events; reconnect and resume.",
    CLOSE_UNAUTHORIZED: "No valid token, the token expired unrenewed, or the login was ended.",
    CLOSE_AUTH_TIMEOUT: "No auth frame within 10 s of connecting.",
    CLOSE_RATE_LIMITED: "The client kept flooding frames after rate_limited errors.",
}
