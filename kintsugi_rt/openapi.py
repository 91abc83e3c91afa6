"""``GET /openapi.json``: the REST API described (OpenAPI 3.1) from its routes and their msgspec types.

Every REST route is a ``web.ApiRoute`` that names its method, body type, replies, error codes and
security; ``document`` turns a node's routes into the OpenAPI document, the schemas coming from
``msgspec.json.schema_components``. ``kintsugi-rt openapi`` prints the same document without starting
anything (``docs/openapi.json``; a test fails when that file is stale, and another when a route of the
app is missing from the document).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from http import HTTPStatus
from typing import Any

import msgspec
from starlette.convertors import Convertor, FloatConvertor, IntegerConvertor, UUIDConvertor
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from kintsugi_rt import errors
from kintsugi_rt.errors import ErrorEnvelope
from kintsugi_rt.web import ApiRoute, Body, Reply

OPENAPI_PATH = "/openapi.json"
OPENAPI_VERSION = "3.1.0"
_REF = "#/components/schemas/{name}"

SECURITY_SCHEMES: dict[str, dict[str, str]] = {
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "A user's access token (`access_token` of register, login or refresh). It lasts "
        "JWT_ACCESS_EXPIRY (15 min); refresh it with `POST /api/auth/refresh`.",
    },
    "metrics": {
        "type": "http",
        "scheme": "bearer",
        "description": "METRICS_TOKEN, when the server sets one (recommended in production).",
    },
}

# What every JSON body may be refused with (``web.read_json``), and what these statuses carry.
_JSON_BODY_ERRORS: dict[int, tuple[str, ...]] = {
    400: (errors.BAD_REQUEST,),
    413: (errors.PAYLOAD_TOO_LARGE,),
    415: (errors.UNSUPPORTED_MEDIA_TYPE,),
    422: (errors.VALIDATION_FAILED,),
}
_ERROR_HEADERS: dict[int, dict[str, str]] = {
    401: {"WWW-Authenticate": "`Bearer realm=...`, as RFC 6750 asks."},
    429: {"Retry-After": "Seconds to wait before trying again."},
    503: {"Retry-After": "Seconds to wait before retrying (with `unavailable`)."},
}

_DESCRIPTION = (
    "The REST surface of a Kintsugi RT node: accounts, billing, media, probes and webhooks. Real-time "
    "traffic goes over one WebSocket per client at `GET /ws` (docs/protocol.md). Every error answers "
    '`{"error": {"code", "message", "fields"?, "details"?, "retry_after_ms"?}}` - the same '
    "members as the socket's `error` frame; each operation lists its codes under `x-error-codes`. "
    "See docs/rest.md."
)


def render(document_: dict[str, Any]) -> str:
    """The document as ``docs/openapi.json`` holds it (and ``kintsugi-rt openapi`` prints it)."""
    return json.dumps(document_, indent=2, ensure_ascii=False) + "\n"


def document(routes: Iterable[BaseRoute], *, version: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``routes`` (the ``ApiRoute`` ones; the socket route is not REST)."""
    api_routes = [route for route in routes if isinstance(route, ApiRoute)]
    names = [route.name for route in api_routes]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"operation ids used twice: {', '.join(duplicates)}")
    types = _collect_types(api_routes)
    schemas, components = msgspec.json.schema_components(types, ref_template=_REF)
    schema_of = _SchemaIndex(types, schemas)
    paths: dict[str, dict[str, Any]] = {}
    tags: list[str] = []
    for route in api_routes:
        operation = _operation(route, schema_of)
        paths.setdefault(route.path_format, {})[route.method.lower()] = operation
        if route.tag not in tags:
            tags.append(route.tag)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": "Kintsugi RT REST API", "version": version, "description": _DESCRIPTION},
        "tags": [{"name": tag} for tag in tags],
        "paths": paths,
        "components": {"schemas": dict(sorted(components.items())), "securitySchemes": SECURITY_SCHEMES},
    }


def route(routes: Callable[[], Sequence[BaseRoute]], *, version: str) -> ApiRoute:
    """``GET /openapi.json`` over ``routes()`` (called once, at the first request; include this one)."""
    cached: list[bytes] = []

    async def openapi(request: Request) -> Response:
        if not cached:
            cached.append(render(document(routes(), version=version)).encode())
        return Response(cached[0], media_type="application/json", headers={"Cache-Control": "no-cache"})

    return ApiRoute(
        OPENAPI_PATH,
        openapi,
        method="GET",
        name="openapi",
        tag="meta",
        summary="This document: the REST API in OpenAPI 3.1",
        replies={200: Reply("The OpenAPI document.", Body("application/json", {"type": "object"}))},
        may_be_unavailable=False,
    )


# --- building blocks -------------------------------------------------------------------------------


class _SchemaIndex:
    """The schema msgspec made for each collected type (types may be unhashable, hence a list)."""

    def __init__(self, types: list[Any], schemas: tuple[dict[str, Any], ...]) -> None:
        self._pairs = list(zip(types, schemas, strict=True))

    def __call__(self, type_: Any) -> dict[str, Any]:
        for known, schema in self._pairs:
            if known == type_:
                return schema
        raise KeyError(type_)


def _collect_types(routes: Iterable[ApiRoute]) -> list[Any]:
    found: list[Any] = [ErrorEnvelope]

    def add(type_: Any) -> None:
        if type_ is not None and not isinstance(type_, Body) and type_ not in found:
            found.append(type_)

    for api_route in routes:
        add(api_route.request)
        for reply in api_route.replies.values():
            add(reply.body)
        for param in api_route.params:
            add(param.type)
    return found


def _content(body: Any, schema_of: _SchemaIndex) -> dict[str, Any]:
    if isinstance(body, Body):
        media: dict[str, Any] = {"schema": dict(body.schema)}
        return {body.media_type: media}
    return {"application/json": {"schema": schema_of(body)}}


def _operation(api_route: ApiRoute, schema_of: _SchemaIndex) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": api_route.name,
        "tags": [api_route.tag],
        "summary": api_route.summary,
    }
    if api_route.description:
        operation["description"] = api_route.description
    parameters = _parameters(api_route, schema_of)
    if parameters:
        operation["parameters"] = parameters
    if api_route.request is not None:
        body: dict[str, Any] = {"required": True, "content": _content(api_route.request, schema_of)}
        if isinstance(api_route.request, Body) and api_route.request.description:
            body["description"] = api_route.request.description
        operation["requestBody"] = body
    responses: dict[str, Any] = {}
    for status, reply in sorted(api_route.replies.items()):
        responses[str(status)] = _reply(reply, schema_of)
    for status, codes in sorted(_errors_of(api_route).items()):
        if str(status) in responses:
            raise ValueError(f"{api_route.name}: status {status} is both a reply and an error")
        responses[str(status)] = _error_reply(status, codes)
    operation["responses"] = dict(sorted(responses.items()))
    if api_route.auth is not None:
        security: list[dict[str, list[str]]] = [{api_route.auth: []}]
        operation["security"] = [{}, *security] if api_route.auth_optional else security
    return operation


def _reply(reply: Reply, schema_of: _SchemaIndex) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": reply.description}
    if reply.headers:
        answer["headers"] = {
            name: {"description": text, "schema": {"type": "string"}} for name, text in reply.headers.items()
        }
    if reply.body is not None:
        answer["content"] = _content(reply.body, schema_of)
    return answer


def _errors_of(api_route: ApiRoute) -> dict[int, tuple[str, ...]]:
    """The route's own error codes, and those its kind of route may answer with by construction."""
    merged: dict[int, list[str]] = {}

    def add(status: int, codes: Iterable[str]) -> None:
        listed = merged.setdefault(status, [])
        listed.extend(code for code in codes if code not in listed)

    if api_route.auth == "bearer":
        add(401, errors.BEARER_ERRORS)
    if api_route.request is not None and not isinstance(api_route.request, Body):
        for status, codes in _JSON_BODY_ERRORS.items():
            add(status, codes)
    for status, codes in api_route.errors.items():
        add(status, codes)
    if api_route.may_be_unavailable:
        add(503, (errors.UNAVAILABLE,))
    add(500, (errors.INTERNAL_ERROR,))
    return {status: tuple(codes) for status, codes in merged.items()}


def _error_reply(status: int, codes: tuple[str, ...]) -> dict[str, Any]:
    phrase = HTTPStatus(status).phrase
    answer: dict[str, Any] = {
        "description": f"{phrase}: " + ", ".join(f"`{code}`" for code in codes),
        "content": {"application/json": {"schema": {"$ref": _REF.format(name="ErrorEnvelope")}}},
        "x-error-codes": list(codes),
    }
    headers = _ERROR_HEADERS.get(status)
    if headers:
        answer["headers"] = {
            name: {"description": text, "schema": {"type": "string"}} for name, text in headers.items()
        }
    return answer


def _parameters(api_route: ApiRoute, schema_of: _SchemaIndex) -> list[dict[str, Any]]:
    declared = {(param.where, param.name): param for param in api_route.params}
    out: list[dict[str, Any]] = []
    for name, convertor in api_route.param_convertors.items():
        param = declared.pop(("path", name), None)
        entry: dict[str, Any] = {"name": name, "in": "path", "required": True}
        if param is not None:
            entry["description"] = param.description
            entry["schema"] = schema_of(param.type)
        else:
            entry["schema"] = _path_schema(convertor)
        out.append(entry)
    for (where, name), param in declared.items():
        if where == "path":
            raise ValueError(f"{api_route.name}: no path parameter {name!r} in {api_route.path}")
        out.append(
            {
                "name": name,
                "in": where,
                "required": param.required,
                "description": param.description,
                "schema": schema_of(param.type),
            }
        )
    return out


def _path_schema(convertor: Convertor[Any]) -> dict[str, str]:
    if isinstance(convertor, UUIDConvertor):
        return {"type": "string", "format": "uuid"}
    if isinstance(convertor, IntegerConvertor):
        return {"type": "integer"}
    if isinstance(convertor, FloatConvertor):
        return {"type": "number"}
    return {"type": "string"}
