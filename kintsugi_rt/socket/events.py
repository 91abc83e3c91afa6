"""How any module sends to sockets: durable events to users' streams, ephemeral ones to users,
topics or one connection, closing a user's or a login's sockets on every node, and signals that
reach a module on every node (e.g. "stop this generation", wherever it runs).

Publishing never raises. Callers publish after their transaction committed, and a committed write
must never be reported as failed (docs/delivery.md). When the hub cannot take an envelope (Redis is
down), durable events, closes and signals wait in a bounded buffer and are republished, in order, once
it is back; recipients skip what they already have by position, and a connection that missed one
anyway fills the gap from its stream. Ephemeral events are dropped and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import deque
from collections.abc import Callable, Iterable

import msgspec

from kintsugi_rt import metrics
from kintsugi_rt.db.database import Database
from kintsugi_rt.logs import get_logger
from kintsugi_rt.socket import streams
from kintsugi_rt.socket.codec import encode_json
from kintsugi_rt.socket.hub import CLOSE, EVENT, SIGNAL, Envelope, Hub
from kintsugi_rt.socket.protocol import ServerMessage
from kintsugi_rt.socket.streams import DurableDelivery

log = get_logger(__name__)

SignalHandler = Callable[[bytes], None]

# Envelopes kept while the hub is down; beyond this the oldest go (their durable events stay in the
# streams, so recipients still catch up by gap fill or resume).
MAX_DEFERRED = 10_000
_RETRY_FIRST_SECONDS = 0.2
_RETRY_MAX_SECONDS = 2.0


class Events:
    def __init__(self, hub: Hub, db: Database, *, max_deferred: int = MAX_DEFERRED) -> None:
        self._hub = hub
        self._db = db
        self._signal_handlers: dict[str, SignalHandler] = {}
        self._deferred: deque[Envelope] = deque(maxlen=max_deferred)
        self._retrier: asyncio.Task[None] | None = None
        self._hub_down = False

    @property
    def deferred(self) -> int:
        """Envelopes waiting for the hub to come back."""
        return len(self._deferred)

    async def emit(self, user_ids: Iterable[uuid.UUID], event: ServerMessage) -> DurableDelivery:
        """Append a durable event to each user's stream (its own transaction) and deliver it."""
        async with self._db.pool.acquire() as conn, conn.transaction():
            delivery = await streams.append(conn, list(user_ids), event)
        await self.publish_durable(delivery)
        return delivery

    async def publish_durable(self, delivery: DurableDelivery) -> None:
        """Deliver what ``streams.append`` wrote, once its transaction has committed. Never raises."""
        if delivery.users:
            await self._publish_reliably(Envelope(EVENT, delivery.body, delivery.users, delivery.positions))

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
            await self._publish_or_drop(Envelope(EVENT, encode_json(event), users, ephemeral=droppable))

    async def push_topic(self, topic: str, event: ServerMessage) -> None:
        await self._publish_or_drop(Envelope(EVENT, encode_json(event), topic=topic, ephemeral=True))

    async def push_connection(self, conn_id: str, event: ServerMessage, *, ephemeral: bool = False) -> None:
        """To one socket (one device), on whichever node holds it."""
        await self._publish_or_drop(Envelope(EVENT, encode_json(event), conn=conn_id, ephemeral=ephemeral))

    async def close_sockets(
        self, user_id: uuid.UUID, code: int, error_code: str, session_id: uuid.UUID | None = None
    ) -> None:
        """Close a user's sockets (or only one login's) on every node. Never raises."""
        await self._publish_reliably(
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
        """Never raises: delivered late (once the hub is back) rather than not at all."""
        await self._publish_reliably(Envelope(SIGNAL, encode_json(payload), topic=name))

    def deliver_signal(self, envelope: Envelope) -> None:
        handler = self._signal_handlers.get(envelope.topic or "")
        if handler is None:
            return
        try:
            handler(envelope.body)
        except Exception:
            log.exception("events.signal_failed", signal=envelope.topic)

    # --- publishing ------------------------------------------------------------------------------

    async def _publish_reliably(self, envelope: Envelope) -> None:
        if not self._deferred and await self._try_publish(envelope):
            return
        # The hub is down (or envelopes are already waiting: keep their order, and don't make every
        # request wait for a timeout of its own while it is).
        self._defer(envelope)

    async def _publish_or_drop(self, envelope: Envelope) -> None:
        if self._deferred or not await self._try_publish(envelope):
            metrics.HUB_DROPPED.labels(envelope.kind).inc()

    async def _try_publish(self, envelope: Envelope) -> bool:
        try:
            await self._hub.publish(envelope)
        except Exception as exc:
            metrics.HUB_PUBLISH_FAILURES.inc()
            if not self._hub_down:  # one line per outage, not per event
                self._hub_down = True
                log.warning("events.hub_unavailable", error=repr(exc))
            return False
        if self._hub_down:
            self._hub_down = False
            log.info("events.hub_back")
        metrics.HUB_PUBLISHED.labels(envelope.kind).inc()
        return True

    def _defer(self, envelope: Envelope) -> None:
        if len(self._deferred) == self._deferred.maxlen:
            metrics.HUB_DROPPED.labels(self._deferred[0].kind).inc()
        self._deferred.append(envelope)
        metrics.HUB_DEFERRED.inc()
        if self._retrier is None or self._retrier.done():
            self._retrier = asyncio.create_task(self._republish(), name="events-republish")

    async def _republish(self) -> None:
        """Retry the oldest deferred envelope with backoff until the hub takes it, then the rest."""
        delay = _RETRY_FIRST_SECONDS
        sent = 0
        while self._deferred:
            envelope = self._deferred[0]
            if await self._try_publish(envelope):
                if self._deferred and self._deferred[0] is envelope:
                    self._deferred.popleft()
                sent += 1
                delay = _RETRY_FIRST_SECONDS
                continue
            await asyncio.sleep(delay)
            delay = min(delay * 2, _RETRY_MAX_SECONDS)
        log.info("events.republished", envelopes=sent)

    async def stop(self) -> None:
        """Stop retrying (at shutdown); what is still deferred stays in the streams."""
        if self._retrier is not None:
            self._retrier.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retrier
