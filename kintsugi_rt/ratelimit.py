"""Fixed-window rate limits: in-process, or shared by every node through Redis.

A window opens at the first hit of a key and lasts ``rule.window``; hits beyond ``rule.limit`` in it
are refused with the seconds left until it closes (the ``Retry-After`` a client should wait).
"""

from __future__ import annotations

import hashlib
import math
from typing import Protocol

from redis.asyncio import Redis

from kintsugi_rt.clock import Clock
from kintsugi_rt.settings import RateLimit


class RateLimiter(Protocol):
    async def hit(self, scope: str, key: str, rule: RateLimit) -> float | None:
        """Count one event; return ``None`` if allowed, else seconds to wait."""
        ...


def _digest(key: str) -> str:
    # Keys are often email addresses: keep them out of Redis and memory dumps.
    return hashlib.sha256(key.encode()).hexdigest()[:32]


class MemoryRateLimiter:
    _SWEEP_AT = 10_000

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._windows: dict[str, tuple[int, float]] = {}

    async def hit(self, scope: str, key: str, rule: RateLimit) -> float | None:
        now = self._clock.monotonic()
        if len(self._windows) >= self._SWEEP_AT:
            self._windows = {k: v for k, v in self._windows.items() if v[1] > now}
        name = f"{scope}:{_digest(key)}"
        count, closes_at = self._windows.get(name, (0, 0.0))
        if closes_at <= now:
            count, closes_at = 0, now + rule.window.total_seconds()
        count += 1
        self._windows[name] = (count, closes_at)
        if count > rule.limit:
            return closes_at - now
        return None


# INCR and set the expiry on the first hit, atomically; return the count and milliseconds left.
_HIT_SCRIPT = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {count, ttl}
"""


class RedisRateLimiter:
    def __init__(self, redis: Redis, prefix: str) -> None:
        self._script = redis.register_script(_HIT_SCRIPT)
        self._prefix = prefix

    async def hit(self, scope: str, key: str, rule: RateLimit) -> float | None:
        window_ms = math.ceil(rule.window.total_seconds() * 1000)
        name = f"{self._prefix}rl:{scope}:{_digest(key)}"
        count, ttl_ms = await self._script(keys=[name], args=[window_ms])
        if int(count) > rule.limit:
            return int(ttl_ms) / 1000
        return None
