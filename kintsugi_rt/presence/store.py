"""Who is online: in-process for one node, or in Redis for many.

In Redis each socket is a member of its user's sorted set, scored by when it lapses; nodes refresh
their sockets' scores on a heartbeat. A node that dies stops refreshing, and any live node's sweep
finds the lapsed users and reports each one offline exactly once (the scripts are atomic).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Protocol

from redis.asyncio import Redis

from kintsugi_rt.clock import Clock


class PresenceStore(Protocol):
    async def connect(self, user: str, conn: str) -> bool:
        """Count a socket (or refresh it); ``True`` if the user was offline before."""
        ...

    async def disconnect(self, user: str, conn: str) -> bool:
        """Forget a socket; ``True`` if it was the user's last."""
        ...

    async def sweep(self) -> list[str]:
        """Users whose every socket has lapsed; each is reported once."""
        ...

    async def online(self, users: list[str]) -> set[str]: ...


class MemoryPresence:
    def __init__(self) -> None:
        self._sockets: defaultdict[str, set[str]] = defaultdict(set)

    async def connect(self, user: str, conn: str) -> bool:
        was_offline = not self._sockets[user]
        self._sockets[user].add(conn)
        return was_offline

    async def disconnect(self, user: str, conn: str) -> bool:
        sockets = self._sockets.get(user)
        if sockets is None or conn not in sockets:
            return False
        sockets.discard(conn)
        if sockets:
            return False
        del self._sockets[user]
        return True

    async def sweep(self) -> list[str]:
        return []  # one process: sockets never outlive it

    async def online(self, users: list[str]) -> set[str]:
        return {u for u in users if self._sockets.get(u)}


_CONNECT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
local before = redis.call('ZCARD', KEYS[1])
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('PEXPIREAT', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[2], 'GT', ARGV[2], ARGV[4])
if before == 0 then return 1 end
return 0
"""

_DISCONNECT = """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
if redis.call('ZCARD', KEYS[1]) == 0 then
  redis.call('ZREM', KEYS[2], ARGV[3])
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""

# Reads per-user keys it derives from the index: fine on one Redis, not on Redis Cluster.
_SWEEP = """
local users = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local gone = {}
for _, user in ipairs(users) do
  local key = ARGV[2] .. user
  redis.call('ZREMRANGEBYSCORE', key, '-inf', ARGV[1])
  local latest = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  if #latest == 0 then
    redis.call('ZREM', KEYS[1], user)
    redis.call('DEL', key)
    table.insert(gone, user)
  else
    redis.call('ZADD', KEYS[1], latest[2], user)
  end
end
return gone
"""


class RedisPresence:
    def __init__(self, redis: Redis, prefix: str, clock: Clock, ttl_seconds: float) -> None:
        self._redis = redis
        self._clock = clock
        self._ttl_ms = int(ttl_seconds * 1000)
        self._sockets_prefix = f"{prefix}presence:sockets:"
        self._index = f"{prefix}presence:users"
        self._connect = redis.register_script(_CONNECT)
        self._disconnect = redis.register_script(_DISCONNECT)
        self._sweep = redis.register_script(_SWEEP)

    def _now_ms(self) -> int:
        return int(self._clock.now().timestamp() * 1000)

    async def connect(self, user: str, conn: str) -> bool:
        now = self._now_ms()
        result = await self._connect(
            keys=[self._sockets_prefix + user, self._index], args=[conn, now + self._ttl_ms, now, user]
        )
        return bool(result)

    async def disconnect(self, user: str, conn: str) -> bool:
        result = await self._disconnect(
            keys=[self._sockets_prefix + user, self._index], args=[conn, self._now_ms(), user]
        )
        return bool(result)

    async def refresh(self, sockets: list[tuple[str, str]]) -> list[str]:
        """The heartbeat: re-arm many sockets in one round trip; users that had lapsed come back."""
        now = self._now_ms()
        async with self._redis.pipeline(transaction=False) as pipe:
            for user, conn in sockets:
                await self._connect(
                    keys=[self._sockets_prefix + user, self._index],
                    args=[conn, now + self._ttl_ms, now, user],
                    client=pipe,
                )
            results = await pipe.execute()
        return [user for (user, _), back in zip(sockets, results, strict=True) if back]

    async def sweep(self) -> list[str]:
        gone = await self._sweep(keys=[self._index], args=[self._now_ms(), self._sockets_prefix, 500])
        return [g.decode() if isinstance(g, bytes) else str(g) for g in gone]

    async def online(self, users: list[str]) -> set[str]:
        now = self._now_ms()
        async with self._redis.pipeline(transaction=False) as pipe:
            for user in users:
                pipe.zcount(self._sockets_prefix + user, now + 1, "+inf")
            counts = await pipe.execute()
        return {user for user, count in zip(users, counts, strict=True) if count}
