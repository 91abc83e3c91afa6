"""``/api/auth/*``: thin JSON endpoints over ``AuthService``."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from kintsugi_rt import errors
from kintsugi_rt.auth import service as codes
from kintsugi_rt.auth.messages import (
    LoginRequest,
    RefreshRequest,
    RegisterRequest,
    SessionsRevoked,
    TokenPair,
    User,
)
from kintsugi_rt.auth.service import AuthService, ClientInfo
from kintsugi_rt.web import ApiRoute, Reply, json_response, read_json

# Responses carrying tokens must not be kept by any cache (RFC 6749 section 5.1).
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_NO_STORE_DOC = {"Cache-Control": "`no-store`: no cache keeps the tokens.", "Pragma": "`no-cache`."}
_TAG = "auth"


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
            ApiRoute(
                "/api/auth/register",
                self.register,
                method="POST",
                name="auth_register",
                tag=_TAG,
                summary="Create an account and log in",
                description="Email, password (8-128 characters, not a common one) and display name; "
                "unknown fields are refused. Rate-limited per IP and per email (docs/auth.md).",
                request=RegisterRequest,
                replies={201: Reply("The account and its first token pair.", TokenPair, _NO_STORE_DOC)},
                errors={409: (codes.EMAIL_TAKEN,), 429: (errors.RATE_LIMITED,)},
            ),
            ApiRoute(
                "/api/auth/login",
                self.login,
                method="POST",
                name="auth_login",
                tag=_TAG,
                summary="Log in: a new token pair",
                description="A wrong password and an unknown email get the same answer, in the same time.",
                request=LoginRequest,
                replies={200: Reply("A new login's token pair.", TokenPair, _NO_STORE_DOC)},
                errors={401: (codes.INVALID_CREDENTIALS,), 429: (errors.RATE_LIMITED,)},
            ),
            ApiRoute(
                "/api/auth/refresh",
                self.refresh,
                method="POST",
                name="auth_refresh",
                tag=_TAG,
                summary="Rotate a refresh token: a new token pair",
                description="Each refresh token works once. Presenting a used one revokes the whole login "
                "(`refresh_token_reused`); send one refresh at a time.",
                request=RefreshRequest,
                replies={200: Reply("The login's new token pair.", TokenPair, _NO_STORE_DOC)},
                errors={
                    401: (
                        codes.INVALID_REFRESH_TOKEN,
                        codes.REFRESH_TOKEN_EXPIRED,
                        codes.REFRESH_TOKEN_REUSED,
                    )
                },
            ),
            ApiRoute(
                "/api/auth/logout",
                self.logout,
                method="POST",
                name="auth_logout",
                tag=_TAG,
                summary="End this login",
                description="Its tokens stop working at once and its sockets close with 4401.",
                auth="bearer",
                replies={204: Reply("Logged out.")},
            ),
            ApiRoute(
                "/api/auth/logout-all",
                self.logout_all,
                method="POST",
                name="auth_logout_all",
                tag=_TAG,
                summary="End every login of the user",
                auth="bearer",
                replies={200: Reply("How many logins were ended.", SessionsRevoked)},
            ),
            ApiRoute(
                "/api/auth/me",
                self.me,
                method="GET",
                name="auth_me",
                tag=_TAG,
                summary="The logged-in user",
                auth="bearer",
                replies={200: Reply("The user, with its tier.", User)},
            ),
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
        return json_response(SessionsRevoked(sessions_revoked=count))

    async def me(self, request: Request) -> Response:
        principal = await self.auth.require_principal(request)
        return json_response(principal.user)


def routes(auth: AuthService, *, max_body: int) -> list[BaseRoute]:
    return AuthRoutes(auth, max_body=max_body).routes()
