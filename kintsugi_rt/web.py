"""Small helpers for the thin JSON REST surface: capped body reading, typed decoding, JSON replies,
and ``ApiRoute``, a route that carries its own OpenAPI description (``kintsugi_rt/openapi.py``)."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import msgspec
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.routing import Route

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


# --- documented routes ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Body:
    """A body that is not a msgspec-described JSON value: its media type and a JSON Schema by hand
    (multipart uploads, file downloads, plain text, third parties' webhook events)."""

    media_type: str
    schema: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""


@dataclass(frozen=True, slots=True)
class Reply:
    """One documented answer of a route (success or a body of its own on another status).

    ``body`` is a type msgspec can describe (a Struct, a list of them...) sent as JSON, a ``Body`` for
    anything else, or ``None`` for an empty answer (204). ``headers`` maps a response header to what it
    says."""

    description: str
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Param:
    """A query or header parameter (path parameters come from the route's path by themselves; give one
    here only to describe it)."""

    name: str
    where: Literal["query", "header", "path"]
    description: str
    type: Any = str
    required: bool = False


Endpoint = Callable[[Request], Awaitable[Response]]


class ApiRoute(Route):
    """A REST route and its OpenAPI operation. Every REST route is one (a test checks that
    ``/openapi.json`` lists every route of the app).

    - ``name``: the operation id, unique in the API (``auth_register``, ``billing_plans``).
    - ``request``: the JSON body's type (decoded with ``read_json``), or a ``Body``; ``None``: no body.
      A JSON body adds ``bad_request``, ``payload_too_large``, ``unsupported_media_type`` and
      ``validation_failed`` to the errors by itself.
    - ``replies``: status -> ``Reply`` for what the route answers besides the error shape.
    - ``errors``: status -> the stable error codes (``kintsugi_rt/errors.py`` shape) the route itself
      raises. ``auth="bearer"`` adds the 401 codes of ``AuthService.require_principal``;
      ``may_be_unavailable`` (the default) adds 503 ``unavailable`` for routes that use PostgreSQL or
      Redis, and every route may answer 500 ``internal_error``.
    - ``auth``: the security scheme (``bearer``: a user's access token; ``metrics``: METRICS_TOKEN),
      ``auth_optional`` when the server may be configured not to ask for it.
    """

    def __init__(
        self,
        path: str,
        endpoint: Endpoint,
        *,
        method: str,
        name: str,
        tag: str,
        summary: str,
        replies: Mapping[int, Reply],
        description: str = "",
        request: Any = None,
        errors: Mapping[int, tuple[str, ...]] | None = None,
        params: tuple[Param, ...] = (),
        auth: Literal["bearer", "metrics"] | None = None,
        auth_optional: bool = False,
        may_be_unavailable: bool = True,
    ) -> None:
        super().__init__(path, endpoint, methods=[method], name=name)
        self.method = method.upper()
        self.tag = tag
        self.summary = summary
        self.description = description
        self.request = request
        self.replies = dict(replies)
        self.errors = dict(errors or {})
        self.params = params
        self.auth = auth
        self.auth_optional = auth_optional
        self.may_be_unavailable = may_be_unavailable
