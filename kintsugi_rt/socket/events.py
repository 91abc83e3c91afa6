"""How any module sends to sockets: durable events to users' streams, ephemeral ones to users,
topics or one connection, and closing a user's or a login's sockets on every node."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

import asyncpg

from kintsugi_rt import metrics
from kintsugi_rt.socket import streams
from kintsugi_rt.socket.codec import encode_json
from kintsugi_rt.socket.hub import CLOSE, EVENT, Envelope, Hub
from kintsugi_rt.socket.protocol import ServerMessage
from kintsugi_rt.socket.streams import DurableDelivery


class Events:
    def __init__(self, hub: Hub, pool: asyncpg.Pool) -> None:
        self._hub = hub
        self._pool = pool

    async def emit(self, user_ids: Iterable[uuid.UUID], event: ServerMessage) -> DurableDelivery:
        """Append a durable event to each user's stream (its own transaction) and deliver it."""
        async with self._pool.acquire() as conn, conn.transaction():
            delivery = await streams.append(conn, list(user_ids), event)
        await self.publish_durable(delivery)
        return delivery

    async def publish_durable(self, delivery: DurableDelivery) -> None:
        """Deliver what ``streams.append`` wrote, once its transaction has committed."""
        if delivery.users:
            await self._publish(Envelope(EVENT, delivery.body, delivery.users, delivery.positions))

    async def push(self, user_ids: Iterable[uuid.UUID], event: ServerMessage) -> None:
        """An ephemeral event to every socket of these users; not stored, dropped under pressure."""
        users = [str(u) for u in user_ids]
        if users:
            await self._publish(Envelope(EVENT, encode_json(event), users, ephemeral=True))

    async def push_topic(self, topic: str, event: ServerMessage) -> None:
        await self._publish(Envelope(EVENT, encode_json(event), topic=topic, ephemeral=True))

    async def push_connection(self, conn_id: str, event: ServerMessage, *, ephemeral: bool = False) -> None:
        """To one socket (one device), on whichever node holds it."""
        await self._publish(Envelope(EVENT, encode_json(event), conn=conn_id, ephemeral=ephemeral))

    async def close_sockets(
        self, user_id: uuid.UUID, code: int, error_code: str, session_id: uuid.UUID | None = None
    ) -> None:
        """Close a user's sockets (or only one login's) on every node."""
        await self._publish(
            Envelope(
                CLOSE,
                users=[str(user_id)],
                session=str(session_id) if session_id else None,
                close_code=code,
                error_code=error_code,
            )
        )

    async def _publish(self, envelope: Envelope) -> None:
        metrics.HUB_PUBLISHED.labels(envelope.kind).inc()
        await self._hub.publish(envelope)
