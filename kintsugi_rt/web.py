"""Small helpers for the thin JSON REST surface: capped body reading, typed decoding, JSON replies."""

from __future__ import annotations

import re
from typing import Any, TypeVar

import msgspec
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response

from kintsugi_rt import errors
from kintsugi_rt.errors import ApiError
from kintsugi_rt.inputs import find_unstorable

T = TypeVar("T")

_FIELD_PATH = re.compile(r" - at `\$\.?([^`]*)`$")
_MISSING_FIELD = re.compile(r"missing required field `([^`]+)`")


def bearer_token(conn: HTTPConnection) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (REST, or a socket's upgrade request)."""
    header = conn.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        msgspec.json.encode(payload), status_code=status, media_type="application/json", headers=headers
    )


async def read_body(request: Request, max_bytes: int) -> bytes:
    """Read the body, refusing more than ``max_bytes`` before buffering it all."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise _too_large(max_bytes)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise _too_large(max_bytes)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(max_bytes: int) -> ApiError:
    return ApiError(413, errors.PAYLOAD_TOO_LARGE, f"Request body is larger than {max_bytes} bytes.")


def decode_json(body: bytes, type_: type[T]) -> T:
    """Decode and validate in one pass; a failure names the offending field."""
    if not body.strip():
        raise ApiError(400, errors.BAD_REQUEST, "Request body must be a JSON object.")
    try:
        decoded = msgspec.json.decode(body, type=type_)
    except msgspec.ValidationError as exc:
        field, message = describe_validation_error(exc)
        raise ApiError(
            422, errors.VALIDATION_FAILED, "Request body is not valid.", fields={field: message}
        ) from None
    except (msgspec.DecodeError, RecursionError):
        raise ApiError(400, errors.BAD_REQUEST, "Request body is not valid JSON.") from None
    problem = find_unstorable(decoded)
    if problem is not None:
        field, message = problem
        raise ApiError(422, errors.VALIDATION_FAILED, "Request body is not valid.", fields={field: message})
    return decoded


def describe_validation_error(exc: msgspec.ValidationError) -> tuple[str, str]:
    """Split msgspec's message into ``(field path, reason)``; ``$`` when it concerns the whole body."""
    text = str(exc)
    missing = _MISSING_FIELD.search(text)
    at = _FIELD_PATH.search(text)
    prefix = at.group(1) if at else ""
    if missing:
        field = f"{prefix}.{missing.group(1)}" if prefix else missing.group(1)
        return field, "This field is required."
    reason = _FIELD_PATH.sub("", text)
    return (prefix or "$"), reason


async def read_json(request: Request, type_: type[T], max_bytes: int) -> T:
    content_type = request.headers.get("content-type", "application/json")
    if "json" not in content_type.split(";")[0]:
        raise ApiError(415, errors.UNSUPPORTED_MEDIA_TYPE, "Send the body as application/json.")
    return decode_json(await read_body(request, max_bytes), type_)
