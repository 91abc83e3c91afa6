"""``/api/auth/*``: thin JSON endpoints over ``AuthService``."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from kintsugi_rt.auth.messages import LoginRequest, RefreshRequest, RegisterRequest
from kintsugi_rt.auth.service import AuthService, ClientInfo
from kintsugi_rt.web import json_response, read_json

# Responses carrying tokens must not be kept by any cache (RFC 6749 section 5.1).
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def _client(request: Request) -> ClientInfo:
    return ClientInfo(
        ip=request.client.host if request.client else None,
        user_agent=(request.headers.get("user-agent") or None),
    )


class AuthRoutes:
    def __init__(self, auth: AuthService, *, max_body: int) -> None:
        self.auth = auth
        self.max_body = max_body

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/api/auth/register", self.register, methods=["POST"]),
            Route("/api/auth/login", self.login, methods=["POST"]),
            Route("/api/auth/refresh", self.refresh, methods=["POST"]),
            Route("/api/auth/logout", self.logout, methods=["POST"]),
            Route("/api/auth/logout-all", self.logout_all, methods=["POST"]),
            Route("/api/auth/me", self.me, methods=["GET"]),
        ]

    async def register(self, request: Request) -> Response:
        body = await read_json(request, RegisterRequest, self.max_body)
        pair = await self.auth.register(body, _client(request))
        return json_response(pair, status=201, headers=_NO_STORE)

    async def login(self, request: Request) -> Response:
        body = await read_json(request, LoginRequest, self.max_body)
        return json_response(await self.auth.login(body, _client(request)), headers=_NO_STORE)

    async def refresh(self, request: Request) -> Response:
        body = await read_json(request, RefreshRequest, self.max_body)
        return json_response(await self.auth.refresh(body.refresh_token), headers=_NO_STORE)

    async def logout(self, request: Request) -> Response:
        principal = await self.auth.require_principal(request)
        await self.auth.logout(principal)
        return Response(status_code=204)

    async def logout_all(self, request: Request) -> Response:
        principal = await self.auth.require_principal(request)
        count = await self.auth.logout_all(principal)
        return json_response({"sessions_revoked": count})

    async def me(self, request: Request) -> Response:
        principal = await self.auth.require_principal(request)
        return json_response(principal.user)


def routes(auth: AuthService, *, max_body: int) -> list[BaseRoute]:
    return AuthRoutes(auth, max_body=max_body).routes()
