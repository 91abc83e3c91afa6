"""The ASGI application: lifespan wiring, middleware, and every module's routes."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import asyncpg
import structlog
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, WebSocketRoute
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket

from kintsugi_rt import errors, metrics, ops, outages
from kintsugi_rt.auth.service import AuthService
from kintsugi_rt.clock import Clock, SystemClock
from kintsugi_rt.context import AppContext, get_context
from kintsugi_rt.db.database import Database
from kintsugi_rt.db.migrations import default_migrations_dir, load_migrations, pending_migrations
from kintsugi_rt.db.migrations import migrate as apply_all_migrations
from kintsugi_rt.errors import ApiError
from kintsugi_rt.logs import get_logger
from kintsugi_rt.middleware import RequestContextMiddleware, bind_request_id
from kintsugi_rt.modules import enabled_modules
from kintsugi_rt.ratelimit import MemoryRateLimiter, RateLimiter, RedisRateLimiter
from kintsugi_rt.settings import Settings
from kintsugi_rt.socket import streams
from kintsugi_rt.socket.events import Events
from kintsugi_rt.socket.gateway import Gateway
from kintsugi_rt.socket.hub import Hub, LocalHub, RedisHub
from kintsugi_rt.socket.local import LocalConnections
from kintsugi_rt.socket.protocol import CORE_CLIENT_MESSAGES
from kintsugi_rt.socket.registry import SocketRegistry
from kintsugi_rt.socket.transport import TRANSPORT_KEY, find_transport

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


async def _open_redis(settings: Settings) -> Redis | None:
    if settings.redis_url is None:
        return None
    # Wait for a free connection instead of failing when a burst (a disconnect storm) wants more, but
    # never longer than REDIS_TIMEOUT, like every command: an outage ends in `unavailable`, not a hang.
    # (The hub's pub/sub reads block without a timeout on purpose; see socket/hub.py.)
    timeout = settings.redis_timeout.total_seconds()
    pool = BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=settings.redis_max_connections,
        timeout=timeout,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        # One quick retry covers a pooled connection that died with a Redis restart; more would only
        # stretch an outage's error past the timeout above.
        retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.25), 1),
    )
    redis = Redis(connection_pool=pool)
    try:
        await redis.ping()
    except Exception as exc:
        await redis.aclose()
        raise RuntimeError(f"REDIS_URL: cannot reach Redis ({exc})") from exc
    return redis


_TRIM_EVERY_SECONDS = 600


async def _websocket(websocket: WebSocket) -> None:
    gateway = get_context(websocket).services["gateway"]
    assert isinstance(gateway, Gateway)
    await gateway.serve(websocket)


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

    def __init__(self, socket_route: WebSocketRoute, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._socket_route = socket_route

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
            await _websocket(WebSocket(scope, receive=receive, send=send))
        finally:
            structlog.contextvars.reset_contextvars(**tokens)


async def _trim_streams(ctx: AppContext) -> None:
    """Drop durable events past the retained window, on every node (deleting twice is harmless)."""
    while True:
        try:
            removed = await streams.trim(ctx.db.pool, ctx.clock.now() - ctx.settings.event_retention)
            if removed:
                log.info("streams.trimmed", events=removed)
        except Exception as exc:
            log.warning("streams.trim_failed", error=repr(exc))
        await asyncio.sleep(_TRIM_EVERY_SECONDS)


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def create_app(settings: Settings, clock: Clock | None = None) -> Starlette:
    modules = enabled_modules()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            db = await Database.open(settings)
            stack.push_async_callback(db.close)
            if settings.is_production:
                async with db.pool.acquire() as conn:
                    pending = await pending_migrations(conn, load_migrations(default_migrations_dir()))
                if pending:
                    log.error(
                        "migrations.pending", files=[m.name for m in pending], fix="run: kintsugi-rt migrate"
                    )
            else:
                await apply_all_migrations(db.dsn)
            redis = await _open_redis(settings)
            if redis is not None:
                stack.push_async_callback(redis.aclose)
            the_clock = clock or SystemClock()
            limiter: RateLimiter = (
                RedisRateLimiter(redis, settings.redis_key_prefix) if redis else MemoryRateLimiter(the_clock)
            )
            hub: Hub = RedisHub(redis, settings.redis_key_prefix) if redis else LocalHub()
            events = Events(hub, db.pool)
            local = LocalConnections(on_signal=events.deliver_signal)

            async def catch_up() -> None:
                await local.catch_up(db.pool)

            await hub.start(local.deliver, on_resubscribed=catch_up)
            stack.push_async_callback(hub.stop)
            stack.push_async_callback(events.stop)
            ctx = AppContext(
                settings=settings,
                clock=the_clock,
                db=db,
                redis=redis,
                rate_limiter=limiter,
                events=events,
                node_id=uuid.uuid4().hex[:12],
            )
            app.state.ctx = ctx
            for module in modules:
                for hook in module.on_startup:
                    await hook(ctx)
                for hook in reversed(module.on_shutdown):
                    stack.push_async_callback(hook, ctx)
            auth = ctx.services["auth"]
            assert isinstance(auth, AuthService)
            ctx.services["gateway"] = Gateway(ctx, registry, local, auth)
            if settings.is_production and not settings.metrics_token:
                log.warning(
                    "metrics.public", fix="set METRICS_TOKEN, or keep /metrics off the public network"
                )
            trimmer = asyncio.create_task(_trim_streams(ctx), name="stream-trim")
            stack.push_async_callback(_cancel, trimmer)
            log.info(
                "server.ready",
                environment=settings.environment,
                embedded_database=db.embedded is not None,
                redis=redis is not None,
                modules=[m.name for m in modules],
            )
            yield
            log.info("server.stopping")

    registry = SocketRegistry(CORE_CLIENT_MESSAGES, [m.socket for m in modules])
    socket_route = WebSocketRoute("/ws", _websocket)
    routes: list[BaseRoute] = [*ops.routes, *metrics.routes, socket_route]
    for module in modules:
        routes.extend(module.routes)

    return _App(
        socket_route,
        routes=routes,
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
