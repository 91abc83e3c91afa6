"""Presence: online/offline and last seen, pushed only to those who may see it.

Presence is private to those related to a user: the users audience providers return (other modules
register them; the messenger's are the members of a shared conversation). They get every change, on
every socket, once (one envelope per change). ``presence.watch`` answers the current state of related
users and ``unknown`` for any other id, existing or not, so a stranger cannot learn whether an account
exists or when it was last seen; it subscribes to nothing, so a relation that ends (leaving a group)
ends the updates at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime

from kintsugi_rt.context import AppContext
from kintsugi_rt.logs import get_logger
from kintsugi_rt.presence import storage
from kintsugi_rt.presence.frames import (
    Presence,
    PresenceState,
    PresenceUnwatch,
    PresenceWatch,
    UserPresence,
)
from kintsugi_rt.presence.store import MemoryPresence, PresenceStore, RedisPresence
from kintsugi_rt.socket.registry import SocketContext

log = get_logger(__name__)

_HEARTBEAT_BATCH = 500

AudienceProvider = Callable[[uuid.UUID], Awaitable[set[uuid.UUID]]]


class PresenceService:
    def __init__(self, ctx: AppContext) -> None:
        self._ctx = ctx
        ttl = ctx.settings.presence_ttl.total_seconds()
        self.store: PresenceStore = (
            RedisPresence(ctx.redis, ctx.settings.redis_key_prefix, ctx.clock, ttl)
            if ctx.redis is not None
            else MemoryPresence()
        )
        self.audience_providers: list[AudienceProvider] = []
        self._local: dict[str, str] = {}  # conn_id -> user, the sockets this node vouches for
        self._tasks: list[asyncio.Task[None]] = []
        self._heartbeat_every = ttl / 3
        self._sweep_every = max(0.5, ttl / 6)

    async def start(self) -> None:
        if isinstance(self.store, RedisPresence):
            self._tasks = [
                asyncio.create_task(
                    self._every(self._heartbeat_every, self._heartbeat), name="presence-heartbeat"
                ),
                asyncio.create_task(self._every(self._sweep_every, self._sweep_once), name="presence-sweep"),
            ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        # Leave cleanly: this node's sockets are gone with it.
        for conn_id, user in list(self._local.items()):
            with contextlib.suppress(Exception):
                await self._went(user, conn_id)

    # --- socket lifecycle ------------------------------------------------------------------------

    async def on_connect(self, conn: SocketContext) -> None:
        user = str(conn.user_id)
        self._local[conn.conn_id] = user
        if await self.store.connect(user, conn.conn_id):
            await self._announce(conn.user_id, "online", None)

    async def on_disconnect(self, conn: SocketContext) -> None:
        user = self._local.get(conn.conn_id)
        if user is not None:
            await self._went(user, conn.conn_id)

    async def _went(self, user: str, conn_id: str) -> None:
        self._local.pop(conn_id, None)
        if await self.store.disconnect(user, conn_id):
            await self._offline(uuid.UUID(user))

    async def _offline(self, user_id: uuid.UUID) -> None:
        last_seen = await storage.set_last_seen(self._ctx.db.pool, user_id, self._ctx.clock.now())
        await self._announce(user_id, "offline", last_seen)

    async def _announce(self, user_id: uuid.UUID, status: str, last_seen: datetime | None) -> None:
        event = Presence(
            user_id=user_id, status="online" if status == "online" else "offline", last_seen=last_seen
        )
        audience = await self.audience(user_id)
        audience.discard(user_id)
        if audience:
            await self._ctx.events.push(audience, event)

    async def audience(self, user_id: uuid.UUID) -> set[uuid.UUID]:
        """The users who may see ``user_id``'s presence (the relation is symmetric)."""
        audience: set[uuid.UUID] = set()
        for provider in self.audience_providers:
            audience |= await provider(user_id)
        return audience

    # --- Redis upkeep ----------------------------------------------------------------------------

    async def _every(self, seconds: float, job: Callable[[], Awaitable[None]]) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await job()
            except Exception as exc:
                log.warning("presence.upkeep_failed", job=job.__name__, error=repr(exc))

    async def _heartbeat(self) -> None:
        assert isinstance(self.store, RedisPresence)
        sockets = [(user, conn_id) for conn_id, user in self._local.items()]
        for chunk in range(0, len(sockets), _HEARTBEAT_BATCH):
            for user in await self.store.refresh(sockets[chunk : chunk + _HEARTBEAT_BATCH]):
                await self._announce(uuid.UUID(user), "online", None)  # lapsed and swept meanwhile

    async def _sweep_once(self) -> None:
        for user in await self.store.sweep():
            log.info("presence.lapsed", user_id=user)
            await self._offline(uuid.UUID(user))

    # --- queries and handlers ------------------------------------------------------------------

    async def states(self, user_ids: list[uuid.UUID]) -> list[UserPresence]:
        rows = await storage.last_seen_of(self._ctx.db.pool, user_ids)
        online = await self.store.online([str(user_id) for user_id, _ in rows])
        return [
            UserPresence(user_id=user_id, status="online", last_seen=None)
            if str(user_id) in online
            else UserPresence(user_id=user_id, status="offline", last_seen=last_seen)
            for user_id, last_seen in rows
        ]

    async def watch(self, conn: SocketContext, message: PresenceWatch) -> PresenceState:
        users = list(dict.fromkeys(message.user_ids))
        allowed = await self.audience(conn.user_id) | {conn.user_id}
        visible = {state.user_id: state for state in await self.states([u for u in users if u in allowed])}
        return PresenceState(
            users=[visible.get(u) or UserPresence(user_id=u, status="unknown") for u in users]
        )

    async def unwatch(self, conn: SocketContext, message: PresenceUnwatch) -> None:
        """Kept for older clients: ``presence.watch`` no longer subscribes, so there is nothing to undo."""
