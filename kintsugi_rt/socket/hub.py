"""The hub carries envelopes between nodes: in-process, or over Redis pub/sub.

An envelope holds one event encoded once (JSON bytes) and its addressees: users (with their stream
positions when durable), one connection, or a topic. Every node receives every envelope and hands it
to its local connections; a node with no addressee drops it after one dictionary lookup each. One
PUBLISH per event, whatever the number of recipients.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

import msgspec
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from kintsugi_rt.logs import get_logger

log = get_logger(__name__)

EVENT = "event"
CLOSE = "close"
SIGNAL = "signal"


class Envelope(msgspec.Struct, array_like=True, omit_defaults=True):
    kind: str
    body: bytes = b""
    users: list[str] = []
    positions: list[int] = []
    conn: str | None = None
    topic: str | None = None
    session: str | None = None
    ephemeral: bool = False
    close_code: int = 0
    error_code: str = ""
    published_at: float = 0.0


Deliver = Callable[[Envelope], None]
# Called after the hub was lost and is back: whatever was published meanwhile never arrived here.
Resubscribed = Callable[[], Awaitable[None]]


class Hub(Protocol):
    async def start(self, deliver: Deliver, on_resubscribed: Resubscribed | None = None) -> None: ...

    async def publish(self, envelope: Envelope) -> None: ...

    async def stop(self) -> None: ...


class LocalHub:
    """Single node: delivery is a function call."""

    def __init__(self) -> None:
        self._deliver: Deliver | None = None

    async def start(self, deliver: Deliver, on_resubscribed: Resubscribed | None = None) -> None:
        self._deliver = deliver  # never lost, so never resubscribed

    async def publish(self, envelope: Envelope) -> None:
        envelope.published_at = time.time()
        if self._deliver is not None:
            self._deliver(envelope)

    async def stop(self) -> None:
        self._deliver = None


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Envelope)


class RedisHub:
    """Many nodes: one pub/sub channel that every node subscribes to.

    A node's own envelopes come back through Redis too, so every delivery takes the same path.
    """

    def __init__(self, redis: Redis, prefix: str) -> None:
        self._redis = redis
        self._subscriber = _without_retries(redis)
        self._channel = f"{prefix}hub".encode()
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def start(self, deliver: Deliver, on_resubscribed: Resubscribed | None = None) -> None:
        self._task = asyncio.create_task(self._listen(deliver, on_resubscribed), name="hub-listener")
        await asyncio.wait_for(self._ready.wait(), timeout=10)

    async def publish(self, envelope: Envelope) -> None:
        envelope.published_at = time.time()
        await self._redis.publish(self._channel, _encoder.encode(envelope))

    async def _listen(self, deliver: Deliver, on_resubscribed: Resubscribed | None) -> None:
        while True:
            pubsub = self._subscriber.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self._channel)
                if self._ready.is_set():
                    log.info("hub.redis_back")
                    if on_resubscribed is not None:
                        await self._resync(on_resubscribed)
                self._ready.set()
                async for message in pubsub.listen():
                    try:
                        envelope = _decoder.decode(message["data"])
                    except msgspec.DecodeError:
                        log.warning("hub.bad_envelope")
                        continue
                    deliver(envelope)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Pub/sub does not replay what was sent while we were away; once back, every local
                # connection checks its stream for what it missed (docs/delivery.md).
                log.warning("hub.redis_lost", error=repr(exc))
                await asyncio.sleep(0.5)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    @staticmethod
    async def _resync(on_resubscribed: Resubscribed) -> None:
        try:
            await on_resubscribed()
        except Exception as exc:  # the next event of each user still reveals any gap
            log.warning("hub.resync_failed", error=repr(exc))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._subscriber.aclose()


def _without_retries(redis: Redis) -> Redis:
    """A client for the subscription alone: same server and timeouts, but no quiet reconnect.

    redis-py reconnects a lost subscription and re-subscribes by itself when its retry policy allows;
    whatever was published in between is then lost without anyone noticing. With retries off the loss
    reaches ``_listen``, which re-subscribes and has every local socket check its stream for it.
    """
    pool = redis.connection_pool
    kwargs = {**pool.connection_kwargs, "retry": Retry(NoBackoff(), 0)}
    return Redis(connection_pool=ConnectionPool(connection_class=pool.connection_class, **kwargs))
