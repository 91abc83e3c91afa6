"""The one error shape, shared by the REST API and the socket.

``code`` (a stable name clients may branch on), ``message`` (for people), and when they apply
``fields`` (field path -> what is wrong with it), ``details`` (facts a client may act on: a limit, the
tier needed...) and ``retry_after_ms`` (retryable errors). REST answers ``{"error": {...}}``; the socket
sends the same members in its ``error`` frame, beside ``type`` and the request's ``id``
(``socket/protocol.py``; a test keeps the two in step). ``docs/rest.md`` describes it; the codes are
listed per route in ``/openapi.json`` and per frame in ``docs/protocol.md``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

import msgspec
from starlette.responses import Response

Code = Annotated[str, msgspec.Meta(description="Stable machine-readable name; branch on this.")]
Message = Annotated[str, msgspec.Meta(description="For people; may change between releases.")]
Fields = Annotated[
    dict[str, str],
    msgspec.Meta(
        description="The fields at fault: path (e.g. `email`, `data.object`, `$`) -> what is wrong."
    ),
]
Details = Annotated[
    dict[str, Any], msgspec.Meta(description="Facts about the error a client may act on (limits, tiers).")
]
RetryAfterMs = Annotated[
    int, msgspec.Meta(ge=0, description="On retryable errors (unavailable, rate_limited): when to retry.")
]


class ErrorBody(msgspec.Struct, omit_defaults=True):
    """The error shape shared by REST (inside ``error``) and the socket's ``error`` frame."""

    code: Code
    message: Message
    fields: Fields | None = None
    details: Details | None = None
    retry_after_ms: RetryAfterMs | None = None


class ErrorEnvelope(msgspec.Struct):
    """Every REST error: ``{"error": {"code", "message", "fields"?, "details"?, "retry_after_ms"?}}``."""

    error: ErrorBody


class ApiError(Exception):
    """Raised anywhere in a request; rendered as the documented error body."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        fields: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.details = dict(details) if details else None
        self.status = status
        self.code = code
        self.message = message
        self.fields = dict(fields) if fields else None
        self.headers = dict(headers) if headers else None


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    fields: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
    details: Mapping[str, Any] | None = None,
    retry_after_ms: int | None = None,
) -> Response:
    body = ErrorEnvelope(
        ErrorBody(
            code=code,
            message=message,
            fields=dict(fields) if fields else None,
            details=dict(details) if details else None,
            retry_after_ms=retry_after_ms,
        )
    )
    return Response(
        msgspec.json.encode(body), status_code=status, media_type="application/json", headers=headers
    )


def render_api_error(exc: ApiError) -> Response:
    return error_response(
        exc.status, exc.code, exc.message, fields=exc.fields, headers=exc.headers, details=exc.details
    )


# Codes shared by every module. Feature modules define their own next to their handlers.
BAD_REQUEST = "bad_request"
VALIDATION_FAILED = "validation_failed"
PAYLOAD_TOO_LARGE = "payload_too_large"
UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
UNAUTHORIZED = "unauthorized"
INVALID_TOKEN = "invalid_token"
TOKEN_EXPIRED = "token_expired"
SESSION_REVOKED = "session_revoked"
NOT_FOUND = "not_found"
METHOD_NOT_ALLOWED = "method_not_allowed"
RATE_LIMITED = "rate_limited"
INTERNAL_ERROR = "internal_error"
UNAVAILABLE = "unavailable"

# What a route behind ``Authorization: Bearer`` may answer with 401 (``AuthService.require_principal``).
BEARER_ERRORS = (UNAUTHORIZED, INVALID_TOKEN, TOKEN_EXPIRED, SESSION_REVOKED)
