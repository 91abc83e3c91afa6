"""What every module of a node shares: settings, clock, database, Redis, rate limits, events.

Services get this, plus their own typed dependencies, from the composition root (wiring.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from redis.asyncio import Redis

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
    # What is on or off on this node (e.g. ``{"chat": "offline-demo"}``), told to clients in ``hello``.
    features: dict[str, str] = field(default_factory=dict)
