"""Outermost HTTP layer: a request id on every log line, one access line, no traceback to clients."""

from __future__ import annotations

import contextvars
import re
import time
import uuid
from collections.abc import Mapping
from typing import Any

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kintsugi_rt import errors
from kintsugi_rt.logs import get_logger

log = get_logger("kintsugi_rt.http")

REQUEST_ID_HEADER = b"x-request-id"
_VALID_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,64}$")


def _request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == REQUEST_ID_HEADER and _VALID_REQUEST_ID.match(value):
            return str(value.decode())
    return uuid.uuid4().hex


def bind_request_id(scope: Scope) -> tuple[str, Mapping[str, contextvars.Token[Any]]]:
    """Give the request (or socket) its id, in its scope and on every log line; undo with
    ``structlog.contextvars.reset_contextvars(**tokens)``. Tokens rather than a ``with`` block:
    a socket's handler stays suspended for the socket's life, and so would the context manager."""
    request_id = _request_id(scope)
    scope.setdefault("state", {})["request_id"] = request_id
    return request_id, structlog.contextvars.bind_contextvars(request_id=request_id)


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        request_id, tokens = bind_request_id(scope)
        try:
            if scope["type"] == "websocket":
                await self.app(scope, receive, send)
            else:
                await self._http(scope, receive, send, request_id)
        finally:
            structlog.contextvars.reset_contextvars(**tokens)

    async def _http(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (REQUEST_ID_HEADER, request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("http.unhandled_error", method=scope["method"], path=scope["path"])
            if response_started:
                raise
            response = errors.error_response(
                500, errors.INTERNAL_ERROR, "Something went wrong on our side; it has been logged."
            )
            await response(scope, receive, send_with_id)
        finally:
            log.info(
                "http.request",
                method=scope["method"],
                path=scope["path"],
                status=status,
                duration_ms=round((time.perf_counter() - started) * 1000, 2),
            )
