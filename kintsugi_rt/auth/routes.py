"""``/api/auth/*``: thin JSON endpoints over ``AuthService``."""

from __future__ import annotations

from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.routing import Route

from kintsugi_rt import errors
from kintsugi_rt.auth.messages import LoginRequest, RefreshRequest, RegisterRequest
from kintsugi_rt.auth.service import AuthService, ClientInfo, Principal
from kintsugi_rt.context import get_context
from kintsugi_rt.errors import ApiError
from kintsugi_rt.web import json_response, read_json


def auth_service(conn: HTTPConnection) -> AuthService:
    service = get_context(conn).services["auth"]
    assert isinstance(service, AuthService)
    return service


def bearer_token(conn: HTTPConnection) -> str | None:
    header = conn.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


async def require_principal(conn: HTTPConnection) -> Principal:
    """The caller behind ``Authorization: Bearer``; 401 otherwise. For any module's REST routes."""
    token = bearer_token(conn)
    if token is None:
        raise ApiError(
            401,
            errors.UNAUTHORIZED,
            "Send an access token as 'Authorization: Bearer <token>'.",
            headers={"WWW-Authenticate": 'Bearer realm="kintsugi"'},
        )
    return await auth_service(conn).authenticate(token)


# Responses carrying tokens must not be kept by any cache (RFC 6749 section 5.1).
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def _client(request: Request) -> ClientInfo:
    return ClientInfo(
        ip=request.client.host if request.client else None,
        user_agent=(request.headers.get("user-agent") or None),
    )


def _max_body(request: Request) -> int:
    return get_context(request).settings.max_request_body_bytes


async def register(request: Request) -> Response:
    body = await read_json(request, RegisterRequest, _max_body(request))
    pair = await auth_service(request).register(body, _client(request))
    return json_response(pair, status=201, headers=_NO_STORE)


async def login(request: Request) -> Response:
    body = await read_json(request, LoginRequest, _max_body(request))
    return json_response(await auth_service(request).login(body, _client(request)), headers=_NO_STORE)


async def refresh(request: Request) -> Response:
    body = await read_json(request, RefreshRequest, _max_body(request))
    return json_response(await auth_service(request).refresh(body.refresh_token), headers=_NO_STORE)


async def logout(request: Request) -> Response:
    principal = await require_principal(request)
    await auth_service(request).logout(principal)
    return Response(status_code=204)


async def logout_all(request: Request) -> Response:
    principal = await require_principal(request)
    count = await auth_service(request).logout_all(principal)
    return json_response({"sessions_revoked": count})


async def me(request: Request) -> Response:
    principal = await require_principal(request)
    return json_response(principal.user)


routes = [
    Route("/api/auth/register", register, methods=["POST"]),
    Route("/api/auth/login", login, methods=["POST"]),
    Route("/api/auth/refresh", refresh, methods=["POST"]),
    Route("/api/auth/logout", logout, methods=["POST"]),
    Route("/api/auth/logout-all", logout_all, methods=["POST"]),
    Route("/api/auth/me", me, methods=["GET"]),
]
