"""How any module sends to sockets: durable events to users' streams, ephemeral ones to users,
topics or one connection, closing a user's or a login's sockets on every node, and signals that
reach a module on every node (e.g. "stop this generation", wherever it runs)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable

import asyncpg
import msgspec

from kintsugi_rt import metrics
from kintsugi_rt.logs import get_logger
from kintsugi_rt.socket import streams
from kintsugi_rt.socket.codec import encode_json
from kintsugi_rt.socket.hub import CLOSE, EVENT, SIGNAL, Envelope, Hub
from kintsugi_rt.socket.protocol import ServerMessage
from kintsugi_rt.socket.streams import DurableDelivery

log = get_logger(__name__)

SignalHandler = Callable[[bytes], None]


class Events:
    def __init__(self, hub: Hub, pool: asyncpg.Pool) -> None:
        self._hub = hub
        self._pool = pool
        self._signal_handlers: dict[str, SignalHandler] = {}

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

    async def push(
        self, user_ids: Iterable[uuid.UUID], event: ServerMessage, *, droppable: bool = True
    ) -> None:
        """A non-durable event to every socket of these users (not stored, not replayed).

        ``droppable`` events (typing, presence) are dropped first when a socket falls behind; others
        (a streaming answer's deltas) are never dropped: a socket that cannot take them is closed
        with 4008 and catches up on reconnect.
        """
        users = [str(u) for u in user_ids]
        if users:
            await self._publish(Envelope(EVENT, encode_json(event), users, ephemeral=droppable))

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

    def on_signal(self, name: str, handler: SignalHandler) -> None:
        """Run ``handler(payload)`` on every node when ``signal(name, …)`` is sent from any node."""
        self._signal_handlers[name] = handler

    async def signal(self, name: str, payload: msgspec.Struct) -> None:
        await self._publish(Envelope(SIGNAL, encode_json(payload), topic=name))

    def deliver_signal(self, envelope: Envelope) -> None:
        handler = self._signal_handlers.get(envelope.topic or "")
        if handler is None:
            return
        try:
            handler(envelope.body)
        except Exception:
            log.exception("events.signal_failed", signal=envelope.topic)

    async def _publish(self, envelope: Envelope) -> None:
        metrics.HUB_PUBLISHED.labels(envelope.kind).inc()
        await self._hub.publish(envelope)
