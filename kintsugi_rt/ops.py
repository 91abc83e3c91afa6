"""Liveness and readiness probes."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from kintsugi_rt.context import AppContext
from kintsugi_rt.db.migrations import default_migrations_dir, load_migrations, pending_migrations
from kintsugi_rt.logs import get_logger
from kintsugi_rt.web import json_response

log = get_logger(__name__)


async def healthz(request: Request) -> Response:
    """The process is alive and serving; says nothing about its dependencies."""
    return json_response({"status": "ok"})


async def readyz(ctx: AppContext) -> Response:
    """Ready for traffic: database reachable and fully migrated, Redis reachable if configured."""
    checks: dict[str, Any] = {}
    try:
        async with ctx.db.pool.acquire(timeout=2) as conn:
            pending = await pending_migrations(conn, load_migrations(default_migrations_dir()))
        checks["database"] = "ok"
        checks["migrations"] = "ok" if not pending else {"pending": [m.name for m in pending]}
    except Exception as exc:
        log.warning("readyz.database_failed", error=repr(exc))
        checks["database"] = "unreachable"
        checks["migrations"] = "unknown"
    if ctx.redis is not None:
        try:
            await ctx.redis.ping()
            checks["redis"] = "ok"
        except Exception as exc:
            log.warning("readyz.redis_failed", error=repr(exc))
            checks["redis"] = "unreachable"
    ready = all(value == "ok" for value in checks.values())
    return json_response(
        {"status": "ready" if ready else "not_ready", "checks": checks}, 200 if ready else 503
    )


def routes(ctx: AppContext) -> list[BaseRoute]:
    async def ready(request: Request) -> Response:
        return await readyz(ctx)

    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", ready, methods=["GET"]),
    ]
