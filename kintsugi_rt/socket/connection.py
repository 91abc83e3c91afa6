"""One client's socket: its bounded outbound queue, its writer task and its place in its stream.

Everything sent to a client goes through the queue and is written by one task, so a slow client
only ever blocks its own writer. Durable events are checked against the last position delivered:
duplicates are skipped, and a gap is filled from PostgreSQL before the event that revealed it.

A connection that cannot go on is closed within seconds, never left open and silent: the writer
closes it when it fails (1013 when the database is down, 1011 otherwise), and when the close frame
itself cannot be written in time (a peer that stopped reading) the TCP connection is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Any

import msgspec
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from kintsugi_rt import metrics, outages
from kintsugi_rt.db.database import Database
from kintsugi_rt.logs import get_logger
from kintsugi_rt.socket import streams
from kintsugi_rt.socket.codec import Format, encode_json, json_to_msgpack, with_position
from kintsugi_rt.socket.protocol import (
    CLOSE_INTERNAL_ERROR,
    CLOSE_SLOW_CONSUMER,
    CLOSE_TRY_AGAIN_LATER,
    INTERNAL_ERROR,
    SLOW_CONSUMER,
    UNAVAILABLE,
    Error,
    Resume,
    Resumed,
    ResyncRequired,
    ServerMessage,
    close_label,
    close_reason,
)
from kintsugi_rt.socket.transport import TRANSPORT_KEY

log = get_logger(__name__)

_msgpack_encoder = msgspec.msgpack.Encoder()

# How long writing the close (and the error before it) may take before the TCP connection is dropped.
CLOSE_WRITE_SECONDS = 2.0
# How long the peer has to answer our close frame before the TCP connection is dropped.
CLOSE_HANDSHAKE_SECONDS = 5.0


@dataclass(slots=True)
class _Frame:
    data: bytes
    size: int


@dataclass(slots=True)
class _Durable:
    pos: int
    body: bytes  # in this connection's format, without "pos"
    size: int


@dataclass(slots=True)
class _ResumeRequest:
    message: Resume
    size: int = 0


@dataclass(slots=True)
class _Close:
    code: int
    error: Error | None
    size: int = 0


@dataclass(slots=True)
class _CatchUp:
    """Fill any gap up to ``upto`` (events the hub lost while this node was cut off from it)."""

    upto: int
    size: int = 0


_Item = _Frame | _Durable | _ResumeRequest | _Close | _CatchUp

_NO_TOPICS: frozenset[str] = frozenset()
_CONNECTED = WebSocketState.CONNECTED


class Connection:
    """The gateway's per-socket state; also the ``SocketContext`` handlers receive.

    Thousands of these sit idle on a node, so an idle one holds as little as it can: slots, no
    queue, task or topic set until one is needed, and no timer once the resume grace is over.
    """

    __slots__ = (
        "_abort_timer",
        "_db",
        "_held",
        "_limit",
        "_max_replay",
        "_queue",
        "_queued_bytes",
        "_topics",
        "_topics_changed",
        "_writer",
        "closing",
        "conn_id",
        "delivered",
        "epoch",
        "expiry",
        "fmt",
        "grace",
        "session_id",
        "start_pos",
        "user_id",
        "user_key",
        "websocket",
    )

    def __init__(
        self,
        websocket: WebSocket,
        fmt: Format,
        user_id: uuid.UUID,
        session_id: uuid.UUID,
        head: streams.StreamHead,
        topics_changed: Any,
        *,
        db: Database,
        queue_bytes: int,
        max_replay: int,
    ) -> None:
        self.websocket = websocket
        self._db = db  # replays and gap fills read the user's stream
        self.fmt = fmt
        self.conn_id = uuid.uuid4().hex
        self.user_id = user_id
        self.user_key = str(user_id)
        self.session_id = session_id
        self.epoch = head.epoch
        self.start_pos = head.pos  # positions up to here happened before this connection
        self.delivered = head.pos  # the last position written to this client, contiguous
        self._topics: set[str] | None = None
        self._topics_changed = topics_changed
        self._limit = queue_bytes
        self._max_replay = max_replay
        self._queue: deque[_Item] | None = None  # only while there is something to write
        self._queued_bytes = 0
        self._held: list[_Item] | None = []  # durable events waiting for the sync point
        self.closing = False
        self.expiry: asyncio.TimerHandle | None = None  # set by the gateway: the token's end
        self.grace: asyncio.TimerHandle | None = None  # set by the gateway: the resume grace's end
        self._writer: asyncio.Task[None] | None = None  # only while there is something to write
        self._abort_timer: asyncio.TimerHandle | None = None  # only once a close frame was sent

    # --- SocketContext ---------------------------------------------------------------------

    def push(self, message: ServerMessage) -> None:
        self.send_ephemeral(self.encode(message))

    def send(self, message: ServerMessage) -> None:
        self.send_control(self.encode(message))

    @property
    def topics(self) -> frozenset[str] | set[str]:
        return self._topics if self._topics is not None else _NO_TOPICS

    def subscribe(self, topic: str) -> None:
        if self._topics is None:
            self._topics = set()
        if topic not in self._topics:
            self._topics.add(topic)
            self._topics_changed(self, topic, True)

    def unsubscribe(self, topic: str) -> None:
        if self._topics is not None and topic in self._topics:
            self._topics.discard(topic)
            self._topics_changed(self, topic, False)

    # --- enqueueing (called from the reader and from hub delivery; never blocks) -------------

    def encode(self, message: ServerMessage | dict[str, Any]) -> bytes:
        if self.fmt is Format.JSON:
            return encode_json(message)
        return _msgpack_encoder.encode(message)

    def send_control(self, data: bytes) -> None:
        """Replies and connection notices: never dropped; overflowing them closes like a durable event."""
        if self.closing:
            return
        if self._queued_bytes + len(data) > self._limit:
            self.overflow()
            return
        self._put(_Frame(data, len(data)))

    def send_ephemeral(self, data: bytes) -> None:
        """Typing, presence and the like: dropped first once the queue is half full."""
        if self.closing:
            return
        if self._queued_bytes + len(data) > self._limit // 2:
            metrics.QUEUE_DROPS.inc()
            return
        self._put(_Frame(data, len(data)))

    def send_durable(self, pos: int, body: bytes) -> None:
        if self.closing or pos <= self.delivered:
            return
        if self._queued_bytes + len(body) > self._limit:
            self.overflow()
            return
        item = _Durable(pos, body, len(body))
        if self._held is not None:
            self._held.append(item)
            self._queued_bytes += item.size
        else:
            self._put(item)

    def catch_up(self, upto: int) -> None:
        """Make sure every durable event up to ``upto`` (committed) reaches this client."""
        if self.closing or upto <= self.delivered:
            return
        if self._held is not None:
            self._held.append(_CatchUp(upto))
        else:
            self._put(_CatchUp(upto))

    def request_resume(self, message: Resume) -> None:
        self._put(_ResumeRequest(message))
        self.sync()

    def sync(self) -> None:
        """Start writing durable events (after a resume request, if one came first)."""
        if self._held is None:
            return
        if self.grace is not None:  # its only job was this call
            self.grace.cancel()
            self.grace = None
        held, self._held = self._held, None
        if held:
            self._queue_of().extend(held)
        self._kick()

    @property
    def synced(self) -> bool:
        return self._held is None

    def close(self, code: int, error: Error | None = None) -> None:
        """Send ``error`` (if any) and close, after what is already queued."""
        if self.closing:
            return
        self.closing = True
        self._queue_of().append(_Close(code, error))
        self._kick()

    def overflow(self) -> None:
        """The client cannot keep up: drop its queue and close with 4008; it recovers by resuming."""
        if self.closing:
            return
        log.info("ws.slow_consumer", conn_id=self.conn_id, queued_bytes=self._queued_bytes)
        self.closing = True
        self._queue = None
        self._held = None
        self._queued_bytes = 0
        error = Error(code=SLOW_CONSUMER, message="Too far behind; reconnect and resume.")
        if self._writer is not None:
            self._writer.cancel()
        self._writer = asyncio.create_task(self._close_now(CLOSE_SLOW_CONSUMER, error))

    def _put(self, item: _Item) -> None:
        self._queue_of().append(item)
        self._queued_bytes += item.size
        self._kick()

    def _queue_of(self) -> deque[_Item]:
        if self._queue is None:
            self._queue = deque()
        return self._queue

    # --- the writer task -------------------------------------------------------------------

    def _kick(self) -> None:
        """Start a writer if none is running. It drains the queue and ends, so an idle socket holds
        no task at all (memory per idle socket matters at 5,000+ sockets a node)."""
        if self._queue and (self._writer is None or self._writer.done()):
            self._writer = asyncio.create_task(self._drain())

    async def stop(self) -> None:
        """The socket is gone: stop writing."""
        if self._abort_timer is not None:
            self._abort_timer.cancel()
            self._abort_timer = None
        task = self._writer
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _drain(self) -> None:
        try:
            while self._queue:
                item = self._queue.popleft()
                self._queued_bytes -= item.size
                if isinstance(item, _Frame):
                    await self._write(item.data, "frame")
                elif isinstance(item, _Durable):
                    await self._write_durable(item.pos, item.body)
                elif isinstance(item, _ResumeRequest):
                    await self._resume(item.message)
                elif isinstance(item, _CatchUp):
                    if item.upto > self.delivered:
                        await self._fill_gap(item.upto)
                else:
                    await self._close_now(item.code, item.error)
                    return
            # Drained: an idle socket keeps neither the queue nor this (finished) task.
            self._queue = None
            if self._writer is asyncio.current_task():
                self._writer = None
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self._failed(exc)

    async def _failed(self, exc: Exception) -> None:
        """The writer cannot go on. Whatever the cause, the socket is closed now, never left silent."""
        self.closing = True
        self._queue = None
        self._held = None
        self._queued_bytes = 0
        if isinstance(exc, WebSocketDisconnect) or self.websocket.application_state is not _CONNECTED:
            # The peer went away mid-write; the reader sees the disconnect. Drop the transport in case
            # the server has not noticed yet.
            log.info("ws.writer_stopped", conn_id=self.conn_id, error=repr(exc))
            self.abort("peer_gone")
            return
        if outages.is_outage(exc):
            log.warning("ws.writer_unavailable", conn_id=self.conn_id, error=repr(exc))
            error = Error(
                code=UNAVAILABLE,
                message="The server cannot reach its database; reconnect in a moment and resume.",
                retry_after_ms=outages.RETRY_AFTER_MS,
            )
            await self._close_now(CLOSE_TRY_AGAIN_LATER, error)
        else:
            log.error("ws.writer_failed", conn_id=self.conn_id, exc_info=exc)
            error = Error(
                code=INTERNAL_ERROR, message="Something went wrong on our side; reconnect and resume."
            )
            await self._close_now(CLOSE_INTERNAL_ERROR, error)

    async def _write(self, data: bytes, kind: str) -> None:
        if self.fmt is Format.JSON:
            await self.websocket.send({"type": "websocket.send", "text": data.decode()})
        else:
            await self.websocket.send({"type": "websocket.send", "bytes": data})
        metrics.FRAMES_OUT.labels(kind).inc()

    async def _write_durable(self, pos: int, body: bytes) -> None:
        if pos <= self.delivered:
            return
        if pos > self.delivered + 1:
            await self._fill_gap(pos - 1)
        await self._write(with_position(body, self.fmt, pos), "durable")
        self.delivered = pos

    async def _fill_gap(self, upto: int) -> None:
        rows = await streams.read_range(
            self._db.pool, self.user_id, self.delivered, upto, upto - self.delivered
        )
        metrics.STREAM_GAP_FILLS.inc(len(rows))
        if len(rows) != upto - self.delivered:
            # Trimmed away under us: only a resync can make the client whole.
            await self._write(
                self.encode(ResyncRequired(epoch=self.epoch, pos=upto, reason="gap_trimmed")), "frame"
            )
        else:
            for pos, body in rows:
                await self._write(with_position(self._format_body(body), self.fmt, pos), "durable")
        self.delivered = upto

    def _format_body(self, body_json: bytes) -> bytes:
        return body_json if self.fmt is Format.JSON else json_to_msgpack(body_json)

    async def _resume(self, request: Resume) -> None:
        pool = self._db.pool
        head = await streams.head(pool, self.user_id)
        # After the sync point, events past start_pos were already written live on this socket.
        upto = head.pos if self.delivered == self.start_pos else self.start_pos
        reason = None
        rows: list[tuple[int, bytes]] = []
        if request.epoch != head.epoch:
            reason = "epoch_changed"
        elif request.pos > head.pos:
            reason = "position_ahead"
        elif upto - request.pos > self._max_replay:
            reason = "beyond_window"
        elif request.pos < upto:
            rows = await streams.read_range(pool, self.user_id, request.pos, upto, upto - request.pos)
            if len(rows) != upto - request.pos:
                reason = "beyond_window"
        if reason is not None:
            self.delivered = max(self.delivered, head.pos)
            reply: ServerMessage = ResyncRequired(
                epoch=head.epoch, pos=self.delivered, reason=reason, id=request.id
            )
            await self._write(self.encode(reply), "frame")
            return
        for pos, body in rows:
            await self._write(with_position(self._format_body(body), self.fmt, pos), "durable")
        self.delivered = max(self.delivered, upto)
        await self._write(
            self.encode(Resumed(epoch=head.epoch, pos=self.delivered, replayed=len(rows), id=request.id)),
            "frame",
        )

    async def _close_now(self, code: int, error: Error | None) -> None:
        """Write ``error`` and the close frame; if that cannot happen in time, drop the connection."""
        try:
            async with asyncio.timeout(CLOSE_WRITE_SECONDS):
                if error is not None:
                    await self._write(self.encode(error), "frame")
                await self.websocket.close(code, close_reason(code))
        except Exception as exc:
            log.info("ws.close_failed", conn_id=self.conn_id, code=code, error=repr(exc))
            metrics.CLOSES.labels(close_label(code)).inc()
            self.abort("close_timeout" if isinstance(exc, TimeoutError) else "peer_gone")
            return
        metrics.CLOSES.labels(close_label(code)).inc()
        # The peer should answer our close frame; one that does not (it stopped reading) is cut off.
        self._abort_timer = asyncio.get_running_loop().call_later(
            CLOSE_HANDSHAKE_SECONDS, self.abort, "close_handshake"
        )

    def abort(self, reason: str) -> None:
        """Drop the TCP connection at once (no close frame). The reader then sees the disconnect."""
        self._abort_timer = None
        self.closing = True
        transport = self.websocket.scope.get(TRANSPORT_KEY)
        if transport is None:
            log.warning("ws.abort_unsupported", conn_id=self.conn_id, reason=reason)
            return
        log.info("ws.aborted", conn_id=self.conn_id, reason=reason)
        metrics.ABORTS.labels(reason).inc()
        transport.abort()
