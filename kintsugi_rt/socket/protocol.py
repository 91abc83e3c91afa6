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
# What PostgreSQL's bigint holds: every integer a client sends is bounded by it (or tighter).
Int64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
Position = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]

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

    epoch: Annotated[str, msgspec.Meta(max_length=64)]
    pos: Position


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


class Renewed(msgspec.Struct):
    """The fields of the ``ok`` reply to ``auth`` on an open connection."""

    expires_at: int  # the new token's expiry, Unix seconds


class Error(ServerMessage, tag="error"):
    """Terminal failure reply (with ``id``), or a push about the connection itself (without). Its
    members are the REST error's (docs/rest.md): ``code``, ``message``, and when they apply ``fields``
    (field path -> what is wrong), ``details`` and ``retry_after_ms``."""

    code: str
    message: str
    id: str | None = None
    fields: dict[str, str] | None = None
    details: dict[str, Any] | None = None
    retry_after_ms: int | None = None  # on retryable errors (unavailable, rate_limited): when to retry


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
UNAVAILABLE = "unavailable"
SLOW_CONSUMER = "slow_consumer"
TOO_MANY_CONNECTIONS = "too_many_connections"

ERROR_CODES: dict[str, str] = {
    BAD_REQUEST: "The frame is malformed: not JSON/MessagePack, unknown type, a missing or ill-typed "
    "field, a value out of range, or a string with a NUL character (``details.field`` names it). "
    "The connection stays open.",
    UNAUTHORIZED: "The token is missing or not valid (also sent just before close 4401).",
    TOKEN_EXPIRED: "The access token expired without renewal; the server closes with 4401 next.",
    SESSION_REVOKED: "The login was ended (logout or logout-all); the server closes with 4401 next.",
    RATE_LIMITED: "Too many frames; the frame was not handled. Retry after ``retry_after_ms``; "
    "persisting closes the connection with 4429.",
    NOT_FOUND: "The resource does not exist or is not yours; never says which.",
    FORBIDDEN: "The request is understood but not allowed (e.g. renewing with another user's token).",
    INTERNAL_ERROR: "Something failed on our side; it is logged with the connection id.",
    UNAVAILABLE: "A dependency (database, Redis) is down or overloaded and nothing was changed; retry "
    "after ``retry_after_ms``. Also sent just before close 1013.",
    SLOW_CONSUMER: "The connection could not keep up with durable events; it is closed with 4008. Resume.",
    TOO_MANY_CONNECTIONS: "The user already has WS_MAX_SOCKETS_PER_USER sockets on this node; sent just "
    "before close 4409.",
}

# --- close codes -------------------------------------------------------------------------------

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_NO_STATUS = 1005
CLOSE_ABNORMAL = 1006
CLOSE_INVALID_DATA = 1007
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL_ERROR = 1011
CLOSE_SERVICE_RESTART = 1012
CLOSE_TRY_AGAIN_LATER = 1013
CLOSE_SLOW_CONSUMER = 4008
CLOSE_UNAUTHORIZED = 4401
CLOSE_AUTH_TIMEOUT = 4408
CLOSE_TOO_MANY_CONNECTIONS = 4409
CLOSE_RATE_LIMITED = 4429

CLOSE_CODES: dict[int, str] = {
    CLOSE_NORMAL: "Normal close.",
    CLOSE_ABNORMAL: "(Never sent; what a client sees when the connection drops without a close frame, "
    "e.g. a node was killed, or a client that stopped reading was cut off.) Reconnect with backoff, "
    "then resume.",
    CLOSE_INVALID_DATA: "A text frame was not valid UTF-8.",
    CLOSE_TOO_BIG: "A frame was larger than the limit (WS_MAX_FRAME_BYTES, 256 KiB by default).",
    CLOSE_INTERNAL_ERROR: "The connection failed on our side (logged); reconnect and resume.",
    CLOSE_SERVICE_RESTART: "The server is shutting down; reconnect (to another node) and resume.",
    CLOSE_TRY_AGAIN_LATER: "A dependency (database) is down: the connection could not be opened or go on. "
    "Reconnect with backoff (an ``unavailable`` error with ``retry_after_ms`` comes first) and resume.",
    CLOSE_SLOW_CONSUMER: "The outbound queue overflowed with durable events; reconnect and resume.",
    CLOSE_UNAUTHORIZED: "No valid token, the token expired unrenewed, or the login was ended.",
    CLOSE_AUTH_TIMEOUT: "No auth frame within 10 s of connecting.",
    CLOSE_TOO_MANY_CONNECTIONS: "The user has WS_MAX_SOCKETS_PER_USER (32) sockets open on this node "
    "already; this one was refused. Do not reconnect automatically: close another tab or device first.",
    CLOSE_RATE_LIMITED: "The client kept flooding frames after rate_limited errors.",
}


# The reason text of every close frame we send, beside its code: the same text for every close with
# that code (the ``error`` frame sent just before a close says more). At most 123 bytes of UTF-8, as
# RFC 6455 allows. Codes missing here are never sent by us (1006), or are sent by the WebSocket
# library itself with its own text (1007, 1009).
CLOSE_REASONS: dict[int, str] = {
    CLOSE_NORMAL: "normal close",
    CLOSE_INTERNAL_ERROR: "internal error",
    CLOSE_SERVICE_RESTART: "server shutting down",
    CLOSE_TRY_AGAIN_LATER: "try again later",
    CLOSE_SLOW_CONSUMER: "slow consumer",
    CLOSE_UNAUTHORIZED: "unauthorized",
    CLOSE_AUTH_TIMEOUT: "auth timeout",
    CLOSE_TOO_MANY_CONNECTIONS: "too many connections",
    CLOSE_RATE_LIMITED: "rate limited",
}
MAX_CLOSE_REASON_BYTES = 123


def close_reason(code: int) -> str:
    """The reason text sent with close ``code`` (empty for a code without one)."""
    return CLOSE_REASONS.get(code, "")


def close_label(code: int) -> str:
    """A metric label for a close code: one of a fixed set, whatever a client sends."""
    if code in CLOSE_CODES or 1000 <= code <= 1015:
        return str(code)
    return "other"
