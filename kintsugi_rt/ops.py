"""Liveness and readiness probes."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from kintsugi_rt.context import AppContext
from kintsugi_rt.db.migrations import default_migrations_dir, load_migrations, pending_migrations
from kintsugi_rt.logs import get_logger
from kintsugi_rt.web import ApiRoute, Reply, json_response

log = get_logger(__name__)


class Health(msgspec.Struct):
    status: Literal["ok"]


class Readiness(msgspec.Struct):
    """``checks``: ``database``, ``migrations`` and (with REDIS_URL) ``redis``, each ``"ok"`` or what is
    wrong (``"unreachable"``, ``"unknown"``, ``{"pending": [file names]}``)."""

    status: Literal["ready", "not_ready"]
    checks: Annotated[dict[str, Any], msgspec.Meta(description="Each dependency: `ok`, or what is wrong.")]


async def healthz(request: Request) -> Response:
    """The process is alive and serving; says nothing about its dependencies."""
    return json_response(Health(status="ok"))


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
        Readiness(status="ready" if ready else "not_ready", checks=checks), 200 if ready else 503
    )


def routes(ctx: AppContext) -> list[BaseRoute]:
    async def ready(request: Request) -> Response:
        return await readyz(ctx)

    return [
        ApiRoute(
            "/healthz",
            healthz,
            method="GET",
            name="healthz",
            tag="ops",
            summary="Liveness: the process serves",
            description="Says nothing about PostgreSQL or Redis; use /readyz for that.",
            replies={200: Reply("Alive.", Health)},
            may_be_unavailable=False,
        ),
        ApiRoute(
            "/readyz",
            ready,
            method="GET",
            name="readyz",
            tag="ops",
            summary="Readiness: database reachable and migrated, Redis reachable if configured",
            replies={
                200: Reply("Ready for traffic.", Readiness),
                503: Reply("Not ready; see `checks`.", Readiness),
            },
            may_be_unavailable=False,
        ),
    ]
