"""What a running node shares with every module: settings, clock, database, Redis, events."""

from __future__ import annotations

from dataclasses import dataclass, field

from redis.asyncio import Redis
from starlette.requests import HTTPConnection

from kintsugi_rt.clock import Clock
from kintsugi_rt.db.database import Database
from kintsugi_rt.ratelimit import RateLimiter
from kintsugi_rt.settings import Settings
from kintsugi_rt.socket.events import Events


@dataclass(slots=True)
class AppContext:
    settings: Settings
    clock: Clock
    db: Database
    redis: Redis | None
    rate_limiter: RateLimiter
    events: Events
    node_id: str
    # Long-lived objects modules create at start (e.g. ``"auth"``), looked up by name.
    services: dict[str, object] = field(default_factory=dict)
    # What is on or off on this node (e.g. ``{"chat": "offline-demo"}``), told to clients in ``hello``.
    features: dict[str, str] = field(default_factory=dict)


def get_context(conn: HTTPConnection) -> AppContext:
    ctx: AppContext = conn.app.state.ctx
    return ctx
