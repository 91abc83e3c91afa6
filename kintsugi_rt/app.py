"""The ASGI application: Starlette around one node's services (built in wiring.py), with middleware
and the error handlers of the REST surface."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import asyncpg
import structlog
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, WebSocketRoute
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket

from kintsugi_rt import __version__, errors, openapi, outages, webapp
from kintsugi_rt.clock import Clock
from kintsugi_rt.errors import ApiError
from kintsugi_rt.logs import get_logger
from kintsugi_rt.middleware import RequestContextMiddleware, bind_request_id
from kintsugi_rt.settings import Settings
from kintsugi_rt.socket.gateway import Gateway
from kintsugi_rt.socket.transport import TRANSPORT_KEY, find_transport
from kintsugi_rt.wiring import Services, build_services

log = get_logger(__name__)

_HTTP_CODES = {404: errors.NOT_FOUND, 405: errors.METHOD_NOT_ALLOWED}


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return errors.render_api_error(exc)


async def _outage(request: Request, exc: Exception) -> Response:
    """A dependency is down: 503 with Retry-After, one warning line, no traceback."""
    if not outages.is_outage(exc):
        raise exc  # not an outage after all (an InterfaceError or OSError of another kind)
    log.warning("http.unavailable", method=request.method, path=request.url.path, error=repr(exc))
    seconds = max(1, outages.RETRY_AFTER_MS // 1000)
    return errors.error_response(
        503,
        errors.UNAVAILABLE,
        "A service we depend on is unavailable; nothing was changed. Retry soon.",
        headers={"Retry-After": str(seconds)},
        retry_after_ms=outages.RETRY_AFTER_MS,
    )


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, errors.BAD_REQUEST)
    return errors.error_response(exc.status_code, code, str(exc.detail), headers=exc.headers)


class _App(Starlette):
    """Starlette, except that a socket on ``/ws`` goes straight to its route.

    On a WebSocket the HTTP layers do nothing but pass it on (error pages and CORS are HTTP-only;
    the router just matches the path), yet each layer's coroutine, and the exception-handler
    wrappers around the route, would stay suspended for as long as the socket is open: about 4 KB
    per idle socket, 5,000+ sockets a node. The socket still gets what those layers give it: its
    request id (in ``scope["state"]`` and on log lines) and ``scope["app"]``. The app's exception
    handlers are HTTP responses; the gateway closes sockets with its own codes, and anything that
    still escapes it is logged by uvicorn, which closes the socket (1011). Middleware added to the
    app later does not apply to ``/ws``.
    """

    def __init__(self, socket_route: WebSocketRoute, gateway: Gateway, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._socket_route = socket_route
        self._gateway = gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            match, child_scope = self._socket_route.matches(scope)
            if match is Match.FULL:
                scope["app"] = self
                scope.setdefault("router", self.router)
                scope.update(child_scope)
                await self._socket(scope, receive, send)
                return
        await super().__call__(scope, receive, send)

    async def _socket(self, scope: Scope, receive: Receive, send: Send) -> None:
        _, tokens = bind_request_id(scope)
        scope[TRANSPORT_KEY] = find_transport(send)
        try:
            # Not through the route's own wrappers either, for the same reason.
            await self._gateway.serve(WebSocket(scope, receive=receive, send=send))
        finally:
            structlog.contextvars.reset_contextvars(**tokens)


def rest_routes(services: Services) -> list[BaseRoute]:
    """Every REST route of a node: the services' and ``GET /openapi.json``, which describes them all."""
    routes = services.routes()
    routes.append(openapi.route(lambda: routes, version=__version__))
    return routes


def openapi_document(services: Services) -> dict[str, Any]:
    """The node's OpenAPI document (``GET /openapi.json``, ``kintsugi-rt openapi``)."""
    return openapi.document(rest_routes(services), version=__version__)


def create_app(settings: Settings, clock: Clock | None = None) -> Starlette:
    """The node's services (wiring.py, the composition root) behind Starlette's routing."""
    services = build_services(settings, clock)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            await services.start(stack)
            log.info(
                "server.ready",
                environment=settings.environment,
                embedded_database=services.ctx.db.embedded is not None,
                redis=services.ctx.redis is not None,
            )
            yield
            log.info("server.stopping")

    gateway = services.gateway
    socket_route = WebSocketRoute("/ws", gateway.serve)
    app = _App(
        socket_route,
        gateway,
        routes=[*rest_routes(services), socket_route],
        lifespan=lifespan,
        middleware=[
            Middleware(RequestContextMiddleware),
            Middleware(
                CORSMiddleware,
                allow_origins=list(settings.cors_origins),
                allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
                allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
                expose_headers=["X-Request-ID", "Retry-After"],
                allow_credentials=False,
            ),
        ],
        exception_handlers={
            ApiError: _api_error,
            HTTPException: _http_error,
            **dict.fromkeys((*outages.OUTAGE_ERRORS, asyncpg.InterfaceError, OSError), _outage),
        },
    )
    # The web app (web/dist) answers what no route matched at all, not even by path: its files, and
    # index.html for its pages; server paths keep their JSON 404 (kintsugi_rt/webapp.py).
    app.router.default = webapp.WebApp(settings, fallback=app.router.default)
    app.state.services = services  # for tests and operators' tooling; the code itself never looks here
    return app


def services_of(app: Starlette) -> Services:
    """The services behind an app made by ``create_app``."""
    found: Services = app.state.services
    return found
