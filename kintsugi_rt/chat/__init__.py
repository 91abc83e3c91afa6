"""CHAT: AI chat on the socket — streaming answers, stop, branching history, search, token ledger."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from kintsugi_rt.chat import frames as m
from kintsugi_rt.chat.service import ERROR_CODES, ChatService
from kintsugi_rt.context import AppContext
from kintsugi_rt.modules import Module
from kintsugi_rt.socket.registry import (
    ServerEvent,
    SocketContext,
    SocketFeatures,
    SocketHandler,
    service_handler,
)


def _service(conn: SocketContext) -> ChatService:
    service = conn.app.services["chat"]
    assert isinstance(service, ChatService)
    return service


def _handler(method: Callable[[ChatService, SocketContext, Any], Awaitable[Any]]) -> Any:
    return service_handler("chat", method)


async def _start(ctx: AppContext) -> None:
    service = ChatService(ctx)
    ctx.services["chat"] = service
    await service.start()


async def _stop(ctx: AppContext) -> None:
    service = ctx.services.get("chat")
    if isinstance(service, ChatService):
        await service.stop()


async def _connected(conn: SocketContext) -> None:
    await _service(conn).on_connect(conn)


_CHAT = uuid.UUID("1c6f0a52-7d4b-4c1e-9b7a-5e2d8f3a9c01")
_MSG = uuid.UUID("8a3e1f00-2b6c-4d5e-8f90-1a2b3c4d5e6f")
_ASK = uuid.UUID("5d4c3b2a-1908-4776-8655-443322110099")
_AT = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
_INFO = m.ChatInfo(
    id=_CHAT,
    title="Trip to Lviv",
    model="gpt-4o-mini",
    system_prompt=None,
    active_leaf_id=_MSG,
    created_at=_AT,
    updated_at=_AT,
)
_USAGE = m.Usage(prompt_tokens=812, completion_tokens=164, source="provider")

_HANDLERS = (
    SocketHandler(m.ChatCreate, _handler(ChatService.create), m.ChatCreate(id="c1", title="Trip to Lviv")),
    SocketHandler(m.ChatList, _handler(ChatService.list_chats), m.ChatList(id="c2", limit=20)),
    SocketHandler(m.ChatGet, _handler(ChatService.get), m.ChatGet(id="c3", chat_id=_CHAT)),
    SocketHandler(m.ChatSwitch, _handler(ChatService.switch), m.ChatSwitch(id="c4", message_id=_MSG)),
    SocketHandler(
        m.ChatSend,
        _handler(ChatService.send),
        m.ChatSend(id="c5", chat_id=_CHAT, content="What should I see in Lviv in one day?"),
        {"user_message_id": str(_ASK), "message_id": str(_MSG)},
    ),
    SocketHandler(m.ChatStop, _handler(ChatService.stop_answer), m.ChatStop(id="c6", message_id=_MSG)),
    SocketHandler(
        m.ChatRegenerate,
        _handler(ChatService.regenerate),
        m.ChatRegenerate(id="c7", message_id=_MSG),
        {"message_id": "3f2e1d0c-4b5a-4697-8877-665544332211"},
    ),
    SocketHandler(
        m.ChatEdit,
        _handler(ChatService.edit),
        m.ChatEdit(id="c8", message_id=_ASK, content="And in two days?"),
    ),
    SocketHandler(
        m.ChatRename, _handler(ChatService.rename), m.ChatRename(id="c9", chat_id=_CHAT, title="Lviv")
    ),
    SocketHandler(m.ChatDelete, _handler(ChatService.delete), m.ChatDelete(id="c10", chat_id=_CHAT)),
    SocketHandler(
        m.ChatSearch,
        _handler(ChatService.search),
        m.ChatSearch(id="c11", query="Lviv coffee"),
        {
            "results": [
                {
                    "chat_id": str(_CHAT),
                    "chat_title": "Trip to Lviv",
                    "message_id": str(_MSG),
                    "snippet": "the best <b>coffee</b> in <b>Lviv</b>",
                    "created_at": _AT.isoformat(),
                }
            ]
        },
    ),
    SocketHandler(
        m.ChatModels,
        _handler(ChatService.models),
        m.ChatModels(id="c12"),
        {
            "models": [
                {
                    "id": "gpt-4o-mini",
                    "label": "GPT-4o mini",
                    "context_window": 128000,
                    "max_output": 16384,
                    "allowed": True,
                },
                {
                    "id": "gpt-4o",
                    "label": "GPT-4o",
                    "context_window": 128000,
                    "max_output": 16384,
                    "allowed": False,
                    "tier_required": "premium_starter",
                },
            ],
            "default": "gpt-4o-mini",
            "provider": "openai",
        },
    ),
)

_EVENTS = (
    ServerEvent(m.ChatCreated, m.ChatCreated(chat=_INFO), durable=True),
    ServerEvent(m.ChatUpdated, m.ChatUpdated(chat=_INFO), durable=True),
    ServerEvent(m.ChatDeleted, m.ChatDeleted(chat_id=_CHAT), durable=True),
    ServerEvent(
        m.ChatStarted,
        m.ChatStarted(chat_id=_CHAT, message_id=_MSG, parent_id=_ASK, model="gpt-4o-mini"),
        durable=True,
    ),
    ServerEvent(m.ChatDelta, m.ChatDelta(chat_id=_CHAT, message_id=_MSG, index=0, text="Start at Rynok")),
    ServerEvent(
        m.ChatSnapshot, m.ChatSnapshot(chat_id=_CHAT, message_id=_MSG, index=6, text="Start at Rynok Square")
    ),
    ServerEvent(
        m.ChatDone,
        m.ChatDone(
            chat_id=_CHAT, message_id=_MSG, finish_reason="stop", usage=_USAGE, content="Start at Rynok …"
        ),
        durable=True,
    ),
    ServerEvent(
        m.ChatError,
        m.ChatError(
            chat_id=_CHAT,
            message_id=_MSG,
            code="provider_error",
            message="The model provider failed.",
            content="Start at Rynok",
        ),
        durable=True,
    ),
)

module = Module(
    name="chat",
    on_startup=(_start,),
    on_shutdown=(_stop,),
    socket=SocketFeatures(
        handlers=_HANDLERS, events=_EVENTS, on_connect=(_connected,), error_codes=ERROR_CODES
    ),
)
