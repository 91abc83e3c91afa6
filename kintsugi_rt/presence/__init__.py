"""PRESENCE: who is online, across nodes, told only to those who may see it."""

from __future__ import annotations

import uuid
from typing import Any

from kintsugi_rt.context import AppContext
from kintsugi_rt.modules import Module
from kintsugi_rt.presence.frames import Presence, PresenceUnwatch, PresenceWatch
from kintsugi_rt.presence.service import PresenceService
from kintsugi_rt.socket.registry import ServerEvent, SocketContext, SocketFeatures, SocketHandler


def _service(conn: SocketContext) -> PresenceService:
    service = conn.app.services["presence"]
    assert isinstance(service, PresenceService)
    return service


async def _start(ctx: AppContext) -> None:
    service = PresenceService(ctx)
    ctx.services["presence"] = service
    await service.start()


async def _stop(ctx: AppContext) -> None:
    service = ctx.services.get("presence")
    if isinstance(service, PresenceService):
        await service.stop()


async def _watch(conn: SocketContext, message: Any) -> Any:
    return await _service(conn).watch(conn, message)


async def _unwatch(conn: SocketContext, message: Any) -> Any:
    return await _service(conn).unwatch(conn, message)


async def _connected(conn: SocketContext) -> None:
    await _service(conn).on_connect(conn)


async def _disconnected(conn: SocketContext) -> None:
    await _service(conn).on_disconnect(conn)


_EXAMPLE_USER = uuid.UUID("6f1c2b1e-8d1a-4c55-9a51-2f7c0e1b9a10")

module = Module(
    name="presence",
    on_startup=(_start,),
    on_shutdown=(_stop,),
    socket=SocketFeatures(
        handlers=(
            SocketHandler(
                PresenceWatch,
                _watch,
                PresenceWatch(id="w1", user_ids=[_EXAMPLE_USER]),
                {"users": [{"user_id": str(_EXAMPLE_USER), "status": "online"}]},
            ),
            SocketHandler(PresenceUnwatch, _unwatch, PresenceUnwatch(id="w2", user_ids=[_EXAMPLE_USER])),
        ),
        events=(ServerEvent(Presence, Presence(user_id=_EXAMPLE_USER, status="online")),),
        on_connect=(_connected,),
        on_disconnect=(_disconnected,),
    ),
)
