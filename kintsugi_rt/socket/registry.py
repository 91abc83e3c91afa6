"""Where feature modules declare their socket frames and handlers.

The gateway builds one decoder over every registered client frame, so a frame is decoded and
validated in one pass, and routes it to its handler. It knows no feature by name.
"""

from __future__ import annotations

import inspect
import types
import typing
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, Union

import msgspec

from kintsugi_rt.inputs import unbounded_ints
from kintsugi_rt.socket.protocol import ClientMessage, ServerMessage


class SocketError(Exception):
    """Raised by a handler; becomes the request's ``error`` reply. The connection stays open."""

    def __init__(
        self,
        code: str,
        message: str,
        details: dict[str, Any] | None = None,
        *,
        retry_after_ms: int | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details
        self.retry_after_ms = retry_after_ms  # on retryable errors: the error frame's own member


class SocketContext(Protocol):
    """What a handler knows about the connection it serves; the gateway's ``Connection`` is one."""

    conn_id: str
    user_id: uuid.UUID
    session_id: uuid.UUID

    def push(self, message: ServerMessage) -> None:
        """Send an ephemeral frame to this connection only (dropped first under back-pressure)."""

    def send(self, message: ServerMessage) -> None:
        """Send a frame to this connection only; never dropped (overflow closes the socket with 4008)."""

    def subscribe(self, topic: str) -> None:
        """Receive events published to ``topic`` (e.g. one user's presence) on this connection."""

    def unsubscribe(self, topic: str) -> None:
        """Stop receiving ``topic``."""


# What a handler returns: the fields of the request's ``ok`` reply (a Struct), or None for a bare ``ok``.
# Its return annotation is the reply's documented type, so it must name one Struct class or None.
Result = msgspec.Struct | None
# Usually a bound method of the module's service: ``SocketHandler(ChatCreate, chat.create, example)``.
Handler = Callable[[SocketContext, Any], Awaitable[Result]]
LifecycleHook = Callable[[SocketContext], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class SocketHandler:
    """One client frame type, its handler, and an example frame for docs/protocol.md.

    The handler's return annotation (a Struct class, or None) is the type of the ``ok`` reply's
    fields; ``result_example`` is an example of those fields (checked against it by the tests).
    """

    message: type[ClientMessage]
    handle: Handler
    example: ClientMessage
    result_example: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class ServerEvent:
    """A frame a module pushes; ``durable`` ones carry ``pos`` and are replayed on resume."""

    message: type[ServerMessage]
    example: ServerMessage
    durable: bool = False


@dataclass(frozen=True, slots=True)
class SocketFeatures:
    """A module's socket surface."""

    handlers: Sequence[SocketHandler] = ()
    events: Sequence[ServerEvent] = ()
    on_connect: Sequence[LifecycleHook] = ()
    on_disconnect: Sequence[LifecycleHook] = ()
    error_codes: Mapping[str, str] = field(default_factory=dict)  # code -> meaning, for docs/protocol.md


def message_type(cls: type[msgspec.Struct]) -> str:
    tag = cls.__struct_config__.tag
    assert isinstance(tag, str), f"{cls.__name__} needs a tag"
    return tag


# The reply frame's own fields: a result may not have fields of these names.
_OK_FIELDS = frozenset({"type", "id"})


def reply_type(handler: SocketHandler) -> type[msgspec.Struct] | None:
    """The type of the fields a handler's ``ok`` reply carries: its return annotation.

    A Struct class (untagged, without ``type`` or ``id`` fields, which the ``ok`` frame has itself)
    or None; anything else (no annotation, a dict, a union) is refused, so no frame can reach the
    wire without a documented reply.
    """
    name = message_type(handler.message)
    function: Any = handler.handle
    function = getattr(function, "__func__", function)  # a bound method: its function
    if not inspect.isfunction(function):
        function = type(function).__call__  # a callable object
    try:
        hints = typing.get_type_hints(function)
    except Exception as exc:
        raise ValueError(f"{name}: cannot read the return annotation of its handler ({exc})") from exc
    if "return" not in hints:
        raise ValueError(f"{name}: its handler needs a return annotation (a msgspec Struct or None)")
    result = hints["return"]
    if result is None or result is types.NoneType:
        return None
    if not (isinstance(result, type) and issubclass(result, msgspec.Struct)):
        raise ValueError(
            f"{name}: its handler returns {result!r}; annotate it with one msgspec Struct class "
            "(the ok reply's fields) or None"
        )
    if result.__struct_config__.tag is not None or result.__struct_config__.array_like:
        raise ValueError(f"{name}: its result {result.__name__} must be an untagged, object-like Struct")
    clash = _OK_FIELDS.intersection(result.__struct_encode_fields__)
    if clash:
        raise ValueError(
            f"{name}: its result {result.__name__} has fields {sorted(clash)}, which the ok frame "
            "carries itself"
        )
    return result


class SocketRegistry:
    def __init__(
        self, core_messages: Sequence[type[ClientMessage]], features: Sequence[SocketFeatures]
    ) -> None:
        self.handlers: dict[str, SocketHandler] = {}
        # Each request's ok-reply fields (None: a bare ``ok``), from its handler's return annotation.
        self.replies: dict[str, type[msgspec.Struct] | None] = {}
        self.events: list[ServerEvent] = []
        self.on_connect: list[LifecycleHook] = []
        self.on_disconnect: list[LifecycleHook] = []
        self.error_codes: dict[str, str] = {}
        names = {message_type(cls) for cls in core_messages}
        for feature in features:
            for handler in feature.handlers:
                name = message_type(handler.message)
                if name in names:
                    raise ValueError(f"socket message type {name!r} is registered twice")
                names.add(name)
                self.handlers[name] = handler
                self.replies[name] = reply_type(handler)
            self.events.extend(feature.events)
            self.on_connect.extend(feature.on_connect)
            self.on_disconnect.extend(feature.on_disconnect)
            self.error_codes.update(feature.error_codes)
        self.client_types: tuple[type[ClientMessage], ...] = (
            *core_messages,
            *(h.message for h in self.handlers.values()),
        )
        for cls in self.client_types:
            # A huge number must be refused by the decoder, naming its field, not by PostgreSQL.
            unbounded = unbounded_ints(cls)
            if unbounded:
                raise ValueError(
                    f"{message_type(cls)}: integer fields {unbounded} need bounds within bigint "
                    "(msgspec.Meta(ge=..., le=...))"
                )
        union: Any = Union[self.client_types]  # noqa: UP007 - a runtime union of classes
        self.json_decoder = msgspec.json.Decoder(union)
        self.msgpack_decoder = msgspec.msgpack.Decoder(union)
