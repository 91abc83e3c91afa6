"""MESSENGER: direct and group conversations on the socket."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from kintsugi_rt.context import AppContext
from kintsugi_rt.media import access_checks
from kintsugi_rt.messenger import frames as m
from kintsugi_rt.messenger import storage
from kintsugi_rt.messenger.service import ERROR_CODES, MessengerService
from kintsugi_rt.modules import Module
from kintsugi_rt.presence.service import PresenceService
from kintsugi_rt.socket.registry import (
    ServerEvent,
    SocketContext,
    SocketFeatures,
    SocketHandler,
    service_handler,
)


async def _can_see_media(ctx: AppContext, user_id: uuid.UUID, media_id: uuid.UUID) -> bool:
    return await storage.can_see_media(ctx.db.pool, user_id, media_id)


def _handler(method: Callable[[MessengerService, SocketContext, Any], Awaitable[Any]]) -> Any:
    return service_handler("messenger", method)


async def _start(ctx: AppContext) -> None:
    service = MessengerService(ctx)
    ctx.services["messenger"] = service
    access_checks(ctx).append(_can_see_media)  # GET /api/media/{id} for the conversation's members
    presence = ctx.services.get("presence")
    if isinstance(presence, PresenceService):
        presence.audience_providers.append(service.audience)  # who shares a conversation sees presence


_C = uuid.UUID("0b7c5a1e-3f2d-4e8a-9c6b-2d1e0f9a8b7c")
_A = uuid.UUID("6f1c2b1e-8d1a-4c55-9a51-2f7c0e1b9a10")
_B = uuid.UUID("2b0f6c1e-5d0a-4a4e-9a1c-3f1f8f0e7a21")
_M = uuid.UUID("9e8d7c6b-5a4f-4e3d-8c2b-1a0f9e8d7c6b")
_AT = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
_MESSAGE = m.Message(
    id=_M,
    conversation_id=_C,
    seq=42,
    sender_id=_A,
    client_msg_id="c-7f3a",
    created_at=_AT,
    text="Kava o 5?",
    reactions=[m.Reaction(emoji="👍", user_ids=[_B])],
)
_CONVERSATION = m.Conversation(
    id=_C,
    kind="direct",
    last_seq=42,
    read_seq=41,
    unread=1,
    created_at=_AT,
    members=[
        m.Member(user_id=_A, role="member", display_name="Ann", read_seq=42),
        m.Member(user_id=_B, role="member", display_name="Bo", read_seq=41),
    ],
    last_message=_MESSAGE,
)

_HANDLERS = (
    SocketHandler(
        m.ConversationCreate,
        _handler(MessengerService.create),
        m.ConversationCreate(id="m1", kind="direct", user_ids=[_B]),
    ),
    SocketHandler(
        m.ConversationList, _handler(MessengerService.list_conversations), m.ConversationList(id="m2")
    ),
    SocketHandler(
        m.ConversationGet, _handler(MessengerService.get), m.ConversationGet(id="m3", conversation_id=_C)
    ),
    SocketHandler(
        m.ConversationAddMembers,
        _handler(MessengerService.add_members),
        m.ConversationAddMembers(id="m4", conversation_id=_C, user_ids=[_B]),
    ),
    SocketHandler(
        m.ConversationRemoveMember,
        _handler(MessengerService.remove_member),
        m.ConversationRemoveMember(id="m5", conversation_id=_C, user_id=_B),
    ),
    SocketHandler(
        m.ConversationLeave,
        _handler(MessengerService.leave),
        m.ConversationLeave(id="m6", conversation_id=_C),
    ),
    SocketHandler(
        m.ConversationPromote,
        _handler(MessengerService.promote),
        m.ConversationPromote(id="m7", conversation_id=_C, user_id=_B, role="admin"),
    ),
    SocketHandler(
        m.ConversationSync, _handler(MessengerService.sync), m.ConversationSync(id="m8", since={str(_C): 40})
    ),
    SocketHandler(
        m.MessageSend,
        _handler(MessengerService.send),
        m.MessageSend(id="m9", conversation_id=_C, client_msg_id="c-7f3a", text="Kava o 5?"),
    ),
    SocketHandler(
        m.MessageEdit,
        _handler(MessengerService.edit),
        m.MessageEdit(id="m10", message_id=_M, text="Kava o 6?"),
    ),
    SocketHandler(
        m.MessageDelete,
        _handler(MessengerService.delete),
        m.MessageDelete(id="m11", message_id=_M, scope="everyone"),
    ),
    SocketHandler(
        m.MessageReact, _handler(MessengerService.react), m.MessageReact(id="m12", message_id=_M, emoji="👍")
    ),
    SocketHandler(m.MessagePin, _handler(MessengerService.pin), m.MessagePin(id="m13", message_id=_M)),
    SocketHandler(
        m.MessageForward,
        _handler(MessengerService.forward),
        m.MessageForward(id="m14", message_id=_M, conversation_id=_C, client_msg_id="c-8a01"),
    ),
    SocketHandler(
        m.MessageHistory,
        _handler(MessengerService.history),
        m.MessageHistory(id="m15", conversation_id=_C, before_seq=42, limit=50),
    ),
    SocketHandler(
        m.MessageSearch, _handler(MessengerService.search), m.MessageSearch(id="m16", query="kava")
    ),
    SocketHandler(
        m.MessageRead, _handler(MessengerService.read), m.MessageRead(id="m17", conversation_id=_C, seq=42)
    ),
    SocketHandler(m.Typing, _handler(MessengerService.typing), m.Typing(conversation_id=_C)),
    SocketHandler(m.ReceiptsSet, _handler(MessengerService.receipts), m.ReceiptsSet(id="m18", enabled=False)),
)

_EVENTS = (
    ServerEvent(m.MessageNew, m.MessageNew(message=_MESSAGE), durable=True),
    ServerEvent(m.MessageUpdated, m.MessageUpdated(message=_MESSAGE, change="reaction"), durable=True),
    ServerEvent(m.ReadReceipt, m.ReadReceipt(conversation_id=_C, user_id=_B, seq=42), durable=True),
    ServerEvent(m.ConversationUpdated, m.ConversationUpdated(conversation=_CONVERSATION), durable=True),
    ServerEvent(m.ConversationRemoved, m.ConversationRemoved(conversation_id=_C), durable=True),
    ServerEvent(m.TypingEvent, m.TypingEvent(conversation_id=_C, user_id=_A, expires_in_ms=6000)),
)

module = Module(
    name="messenger",
    on_startup=(_start,),
    socket=SocketFeatures(handlers=_HANDLERS, events=_EVENTS, error_codes=ERROR_CODES),
)
