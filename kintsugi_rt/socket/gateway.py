"""``GET /ws``: authenticate, then read typed frames and route them to registered handlers.

The gateway owns the connection's life: the auth handshake, token renewal and expiry, frame rate
limits, decoding, replies, and the resume hand-off to the connection's writer. It knows no feature:
it resolves tokens with the ``authenticate`` callable it is given and dispatches by the ``type`` tag
to whatever the registry holds.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import datetime
from typing import Any, Protocol

import msgspec
from starlette.datastructures import QueryParams
from starlette.websockets import WebSocket

from kintsugi_rt import metrics, outages
from kintsugi_rt.clock import Clock
from kintsugi_rt.db.database import Database
from kintsugi_rt.errors import ApiError
from kintsugi_rt.inputs import find_unstorable
from kintsugi_rt.logs import get_logger
from kintsugi_rt.settings import Settings
from kintsugi_rt.socket import protocol, streams
from kintsugi_rt.socket.codec import Format, encode_json
from kintsugi_rt.socket.connection import Connection
from kintsugi_rt.socket.local import LocalConnections
from kintsugi_rt.socket.protocol import (
    Auth,
    ClientMessage,
    Error,
    Hello,
    Ping,
    Pong,
    Resume,
    close_label,
)
from kintsugi_rt.socket.registry import SocketError, SocketRegistry, message_type
from kintsugi_rt.web import bearer_token, describe_validation_error

log = get_logger(__name__)

_msgpack_encoder = msgspec.msgpack.Encoder()


class _IdPeek(msgspec.Struct):
    id: str | None = None


# What decoding hostile bytes can raise besides DecodeError: nesting deeper than the decoder's
# recursion limit, and invalid UTF-8 inside a MessagePack string.
_UNDECODABLE = (msgspec.DecodeError, msgspec.ValidationError, RecursionError, UnicodeDecodeError)
_MAX_REASON = 200
_REJECT_SECONDS = 2.0


class _Refused(Exception):
    """The connection is refused (after accept) with this close code and error."""

    def __init__(self, close_code: int, error_code: str, message: str) -> None:
        super().__init__(message)
        self.close_code = close_code
        self.error_code = error_code
        self.message = message


_peek_json = msgspec.json.Decoder(_IdPeek)
_peek_msgpack = msgspec.msgpack.Decoder(_IdPeek)


def _peek_id(data: bytes | str, binary: bool) -> str | None:
    """The request id of a frame that failed validation, so its error can still be matched."""
    try:
        found = _peek_msgpack.decode(data) if isinstance(data, bytes) else _peek_json.decode(data)
    except _UNDECODABLE:
        return None
    return found.id if found.id is not None and len(found.id) <= 64 else None


class _FrameBudget:
    """Token bucket: ``limit`` frames per ``window`` with bursts up to ``limit``.

    ``strikes`` counts refused frames until the client calms down (the bucket is half full again),
    so a steady flood just above the refill rate is closed too, not only a burst.
    """

    __slots__ = ("_capacity", "_rate", "_stamp", "_tokens", "strikes")

    def __init__(self, limit: int, window_seconds: float) -> None:
        self._capacity = float(limit)
        self._rate = limit / window_seconds
        self._tokens = float(limit)
        self._stamp = time.monotonic()
        self.strikes = 0

    def take(self) -> bool:
        now = time.monotonic()
        self._tokens = min(self._capacity, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now
        if self._tokens >= self._capacity / 2:
            self.strikes = 0
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        self.strikes += 1
        return False

    def retry_after_ms(self) -> int:
        """When the next frame will be allowed."""
        return max(1, int((1 - self._tokens) / self._rate * 1000) + 1)


class Identity(Protocol):
    """Who a token belongs to, as far as the socket cares."""

    @property
    def user_id(self) -> uuid.UUID: ...

    @property
    def session_id(self) -> uuid.UUID: ...

    @property
    def expires_at(self) -> datetime: ...


# Resolves an access token, or raises a 401 ``ApiError`` (its code and message go to the client).
Authenticate = Callable[[str], Awaitable[Identity]]


class Gateway:
    def __init__(
        self,
        *,
        settings: Settings,
        clock: Clock,
        db: Database,
        registry: SocketRegistry,
        local: LocalConnections,
        authenticate: Authenticate,
        features: dict[str, str],
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.db = db
        self.registry = registry
        self.local = local
        self.authenticate = authenticate
        self.features = features  # what is on or off on this node, told to clients in ``hello``

    # --- handshake ---------------------------------------------------------------------------

    async def serve(self, websocket: WebSocket) -> None:
        """The socket's whole life. This coroutine stays suspended for as long as the socket is open,
        so everything per socket is kept small: the handshake runs in ``_open`` and its locals (the
        token, the principal) are gone once it returns."""
        conn = await self._open(websocket)
        if conn is None:
            return
        try:
            for hook in self.registry.on_connect:
                await self._run_hook(hook, conn)
            await self._read_loop(conn)
        finally:
            if conn.grace is not None:
                conn.grace.cancel()
            if conn.expiry is not None:
                conn.expiry.cancel()
            self.local.remove(conn)
            for hook in self.registry.on_disconnect:
                await self._run_hook(hook, conn)
            await conn.stop()
            log.info("ws.disconnected", conn_id=conn.conn_id, user_id=conn.user_key)

    async def _open(self, websocket: WebSocket) -> Connection | None:
        """Accept, authenticate and register the connection; ``None`` if it was refused."""
        settings = self.settings
        requested = websocket.scope.get("subprotocols") or []
        fmt = Format.MSGPACK if protocol.SUBPROTOCOL_MSGPACK in requested else Format.JSON
        subprotocol = None
        if fmt is Format.MSGPACK:
            subprotocol = protocol.SUBPROTOCOL_MSGPACK
        elif protocol.SUBPROTOCOL_JSON in requested:
            subprotocol = protocol.SUBPROTOCOL_JSON
        await websocket.accept(subprotocol=subprotocol)

        # Not ``websocket.query_params``: that would stay cached on the socket for its whole life.
        token = QueryParams(websocket.scope["query_string"]).get("token") or bearer_token(websocket)
        auth_request_id: str | None = None
        if not token:
            try:
                message = await asyncio.wait_for(
                    websocket.receive(), timeout=settings.ws_auth_timeout.total_seconds()
                )
            except TimeoutError:
                await self._reject(
                    websocket, fmt, protocol.CLOSE_AUTH_TIMEOUT, "No auth frame within the time limit."
                )
                return None
            if message["type"] == "websocket.disconnect":
                return None
            frame = self._decode_quietly(message)
            if not isinstance(frame, Auth):
                await self._reject(
                    websocket, fmt, protocol.CLOSE_UNAUTHORIZED, "The first frame must be auth."
                )
                return None
            token, auth_request_id = frame.token, frame.id

        try:
            principal = await self.authenticate(token)
            return await self._connect(websocket, fmt, principal, auth_request_id)
        except ApiError as exc:
            await self._reject(websocket, fmt, protocol.CLOSE_UNAUTHORIZED, exc.message, exc.code)
        except _Refused as refused:
            await self._reject(websocket, fmt, refused.close_code, refused.message, refused.error_code)
        except Exception as exc:
            # Nothing is registered yet (``_connect`` adds the connection last), so refusing is enough.
            if outages.is_outage(exc):
                log.warning("ws.connect_unavailable", error=repr(exc))
                await self._reject(
                    websocket,
                    fmt,
                    protocol.CLOSE_TRY_AGAIN_LATER,
                    "The server cannot reach its database; try again in a moment.",
                    protocol.UNAVAILABLE,
                    retry_after_ms=outages.RETRY_AFTER_MS,
                )
            else:
                log.exception("ws.connect_failed")
                await self._reject(
                    websocket,
                    fmt,
                    protocol.CLOSE_INTERNAL_ERROR,
                    "Something went wrong on our side.",
                    protocol.INTERNAL_ERROR,
                )
        return None

    async def _reject(
        self,
        websocket: WebSocket,
        fmt: Format,
        code: int,
        message: str,
        error_code: str = protocol.UNAUTHORIZED,
        retry_after_ms: int | None = None,
    ) -> None:
        error = Error(code=error_code, message=message, retry_after_ms=retry_after_ms)
        data = encode_json(error) if fmt is Format.JSON else _msgpack_encoder.encode(error)
        try:
            async with asyncio.timeout(_REJECT_SECONDS):
                if fmt is Format.JSON:
                    await websocket.send_text(data.decode())
                else:
                    await websocket.send_bytes(data)
                await websocket.close(code, protocol.close_reason(code))
        except Exception as exc:
            log.info("ws.reject_failed", error=repr(exc))
        metrics.CLOSES.labels(close_label(code)).inc()

    def _decode_quietly(self, message: MutableMapping[str, Any]) -> ClientMessage | None:
        try:
            return self._decode(message)
        except _UNDECODABLE:
            return None

    def _decode(self, message: MutableMapping[str, Any]) -> ClientMessage:
        text = message.get("text")
        if text is not None:
            decoded: ClientMessage = self.registry.json_decoder.decode(text)
        else:
            decoded = self.registry.msgpack_decoder.decode(message.get("bytes") or b"")
        return decoded

    # --- the authenticated connection ----------------------------------------------------------

    async def _connect(
        self, websocket: WebSocket, fmt: Format, principal: Identity, auth_request_id: str | None
    ) -> Connection:
        settings = self.settings
        if len(self.local.by_user.get(str(principal.user_id), ())) >= settings.ws_max_sockets_per_user:
            log.info("ws.too_many_connections", user_id=str(principal.user_id))
            raise _Refused(
                protocol.CLOSE_TOO_MANY_CONNECTIONS,
                protocol.TOO_MANY_CONNECTIONS,
                f"You have {settings.ws_max_sockets_per_user} connections open already; "
                "close one (another tab or device) first.",
            )
        head = await streams.head(self.db.pool, principal.user_id)
        conn = Connection(
            websocket,
            fmt,
            principal.user_id,
            principal.session_id,
            head,
            self.local.topic_changed,
            db=self.db,
            queue_bytes=settings.ws_outbound_queue_bytes,
            max_replay=settings.ws_max_replay,
        )
        self.local.add(conn)
        log.info("ws.connected", format=fmt.value, conn_id=conn.conn_id, user_id=conn.user_key)
        conn.send_control(
            conn.encode(
                Hello(
                    conn_id=conn.conn_id,
                    user_id=principal.user_id,
                    epoch=head.epoch,
                    pos=head.pos,
                    expires_at=int(principal.expires_at.timestamp()),
                    protocol="json" if fmt is Format.JSON else "msgpack",
                    resume_grace_ms=int(settings.ws_resume_grace.total_seconds() * 1000),
                    features=self.features,
                )
            )
        )
        if auth_request_id is not None:
            conn.send_control(
                conn.encode(self._ok(auth_request_id, {"expires_at": int(principal.expires_at.timestamp())}))
            )
        conn.grace = asyncio.get_running_loop().call_later(
            settings.ws_resume_grace.total_seconds(), conn.sync
        )
        self._arm_expiry(conn, principal.expires_at)
        return conn

    async def _run_hook(self, hook: Any, conn: Connection) -> None:
        try:
            await hook(conn)
        except Exception as exc:
            name = getattr(hook, "__qualname__", repr(hook))
            if outages.is_outage(exc):
                log.warning("ws.hook_unavailable", hook=name, conn_id=conn.conn_id, error=repr(exc))
            else:
                log.exception("ws.hook_failed", hook=name, conn_id=conn.conn_id)

    def _arm_expiry(self, conn: Connection, expires_at: datetime) -> None:
        """A timer (not a task: cheaper per idle socket) that closes the socket when the token expires."""
        if conn.expiry is not None:
            conn.expiry.cancel()
        delay = max(0.0, (expires_at - self.clock.now()).total_seconds())
        conn.expiry = asyncio.get_running_loop().call_later(delay, self._expired, conn)

    @staticmethod
    def _expired(conn: Connection) -> None:
        log.info("ws.token_expired", conn_id=conn.conn_id)
        conn.close(
            protocol.CLOSE_UNAUTHORIZED,
            Error(
                code=protocol.TOKEN_EXPIRED,
                message="The access token expired; connect again with a fresh one.",
            ),
        )

    async def _read_loop(self, conn: Connection) -> None:
        rule = self.settings.ws_rate_limit
        budget = _FrameBudget(rule.limit, rule.window.total_seconds())
        websocket = conn.websocket
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                metrics.CLOSES.labels(close_label(message.get("code", protocol.CLOSE_NO_STATUS))).inc()
                return
            if conn.closing:
                continue
            if not budget.take():
                self._refuse_flood(conn, message, budget, rule.limit)
                continue
            await self._handle(conn, message)

    @staticmethod
    def _refuse_flood(
        conn: Connection, message: MutableMapping[str, Any], budget: _FrameBudget, limit: int
    ) -> None:
        """A frame over the rate limit gets its one reply (``rate_limited`` with its id), unhandled."""
        wait = budget.retry_after_ms()
        if budget.strikes > limit:
            conn.close(
                protocol.CLOSE_RATE_LIMITED,
                Error(code=protocol.RATE_LIMITED, message="Too many frames; closing.", retry_after_ms=wait),
            )
            return
        binary = message.get("text") is None
        raw = message.get("bytes") if binary else message.get("text")
        conn.send_control(
            conn.encode(
                Error(
                    code=protocol.RATE_LIMITED,
                    message="Too many frames; slow down.",
                    id=_peek_id(raw or b"", binary),
                    retry_after_ms=wait,
                )
            )
        )

    async def _handle(self, conn: Connection, message: MutableMapping[str, Any]) -> None:
        binary = message.get("text") is None
        try:
            frame = self._decode(message)
        except msgspec.ValidationError as exc:
            conn.sync()  # any frame but ``resume`` ends the resume grace, even a bad one
            field, reason = describe_validation_error(exc)
            reason = reason if len(reason) <= _MAX_REASON else reason[: _MAX_REASON - 1] + "…"
            raw = message.get("bytes") if binary else message.get("text")
            metrics.FRAMES_IN.labels("invalid").inc()
            self._reply_error(
                conn, _peek_id(raw or b"", binary), protocol.BAD_REQUEST, reason, {"field": field}
            )
            return
        except _UNDECODABLE:
            conn.sync()
            metrics.FRAMES_IN.labels("invalid").inc()
            kind = "MessagePack" if binary else "JSON"
            self._reply_error(conn, None, protocol.BAD_REQUEST, f"The frame is not valid {kind}.", None)
            return
        if isinstance(frame, Resume):
            metrics.FRAMES_IN.labels("resume").inc()
            conn.request_resume(frame)
            return
        # Any other frame ends the resume grace: held durable events go out before its reply.
        conn.sync()
        name = message_type(type(frame))
        metrics.FRAMES_IN.labels(name).inc()
        problem = find_unstorable(frame)
        if problem is not None:
            field, reason = problem
            self._reply_error(conn, frame.id, protocol.BAD_REQUEST, reason, {"field": field})
            return
        if isinstance(frame, Ping):
            conn.send_control(conn.encode(Pong(id=frame.id)))
        elif isinstance(frame, Auth):
            await self._renew(conn, frame)
        else:
            await self._dispatch(conn, name, frame)

    async def _renew(self, conn: Connection, frame: Auth) -> None:
        try:
            principal = await self.authenticate(frame.token)
        except ApiError as exc:
            self._reply_error(conn, frame.id, exc.code, exc.message, None)
            return
        except Exception as exc:
            self._reply_failure(conn, "auth", frame.id, exc)
            return
        if principal.user_id != conn.user_id:
            self._reply_error(conn, frame.id, protocol.FORBIDDEN, "That token belongs to another user.", None)
            return
        conn.session_id = principal.session_id
        self._arm_expiry(conn, principal.expires_at)
        if frame.id is not None:
            conn.send_control(
                conn.encode(
                    self._ok(frame.id, protocol.Renewed(expires_at=int(principal.expires_at.timestamp())))
                )
            )

    async def _dispatch(self, conn: Connection, name: str, frame: ClientMessage) -> None:
        handler = self.registry.handlers[name]
        try:
            result = await handler.handle(conn, frame)
        except SocketError as exc:
            self._reply_error(conn, frame.id, exc.code, exc.message, exc.details, exc.retry_after_ms)
            return
        except Exception as exc:
            self._reply_failure(conn, name, frame.id, exc)
            return
        if frame.id is not None:
            conn.send_control(conn.encode(self._ok(frame.id, result)))

    @staticmethod
    def _ok(request_id: str, result: Any) -> dict[str, Any]:
        fields = msgspec.to_builtins(result) if result is not None else {}
        return {"type": "ok", "id": request_id, **fields}

    @classmethod
    def _reply_failure(cls, conn: Connection, name: str, request_id: str | None, exc: Exception) -> None:
        """A handler failed: ``unavailable`` (retryable, one warning line) when a dependency is down,
        ``internal_error`` (logged with its traceback) otherwise."""
        if outages.is_outage(exc):
            log.warning("ws.handler_unavailable", type=name, conn_id=conn.conn_id, error=repr(exc))
            conn.send_control(
                conn.encode(
                    Error(
                        code=protocol.UNAVAILABLE,
                        message="A service we depend on is unavailable; nothing was changed. Retry soon.",
                        id=request_id,
                        retry_after_ms=outages.RETRY_AFTER_MS,
                    )
                )
            )
            return
        log.error("ws.handler_failed", type=name, conn_id=conn.conn_id, exc_info=exc)
        cls._reply_error(conn, request_id, protocol.INTERNAL_ERROR, "Something went wrong on our side.", None)

    @staticmethod
    def _reply_error(
        conn: Connection,
        request_id: str | None,
        code: str,
        message: str,
        details: dict[str, Any] | None,
        retry_after_ms: int | None = None,
    ) -> None:
        # ``details.field`` (the socket's older way to name the field at fault) also goes out as
        # ``fields``, the member REST errors use for it.
        field = details.get("field") if details else None
        fields = {field: message} if isinstance(field, str) else None
        error = Error(
            code=code,
            message=message,
            id=request_id,
            fields=fields,
            details=details,
            retry_after_ms=retry_after_ms,
        )
        conn.send_control(conn.encode(error))
