"""The one error shape of the REST API: ``{"error": {"code", "message", "fields"?}}``.

Codes are stable names clients may branch on; ``docs/auth.md`` lists them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec
from starlette.responses import Response


class ErrorBody(msgspec.Struct, omit_defaults=True):
    code: str
    message: str
    fields: dict[str, str] | None = None
    details: dict[str, Any] | None = None
    retry_after_ms: int | None = None


class ErrorEnvelope(msgspec.Struct):
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
TOKEN_EXPIRED = "token_expired"
NOT_FOUND = "not_found"
METHOD_NOT_ALLOWED = "method_not_allowed"
RATE_LIMITED = "rate_limited"
INTERNAL_ERROR = "internal_error"
UNAVAILABLE = "unavailable"
