"""Example frames and replies of the chat module, for docs/protocol.md."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from kintsugi_rt.chat import frames as m
from kintsugi_rt.socket.registry import ServerEvent

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

CREATE = m.ChatCreate(id="c1", title="Trip to Lviv")
LIST = m.ChatList(id="c2", limit=20)
GET = m.ChatGet(id="c3", chat_id=_CHAT)
SWITCH = m.ChatSwitch(id="c4", message_id=_MSG)
SEND = m.ChatSend(id="c5", chat_id=_CHAT, content="What should I see in Lviv in one day?")
SEND_RESULT: dict[str, Any] = {"user_message_id": str(_ASK), "message_id": str(_MSG)}
STOP = m.ChatStop(id="c6", message_id=_MSG)
REGENERATE = m.ChatRegenerate(id="c7", message_id=_MSG)
REGENERATE_RESULT: dict[str, Any] = {"message_id": "3f2e1d0c-4b5a-4697-8877-665544332211"}
EDIT = m.ChatEdit(id="c8", message_id=_ASK, content="And in two days?")
RENAME = m.ChatRename(id="c9", chat_id=_CHAT, title="Lviv")
DELETE = m.ChatDelete(id="c10", chat_id=_CHAT)
SEARCH = m.ChatSearch(id="c11", query="Lviv coffee")
SEARCH_RESULT: dict[str, Any] = {
    "results": [
        {
            "chat_id": str(_CHAT),
            "chat_title": "Trip to Lviv",
            "message_id": str(_MSG),
            "snippet": "the best <b>coffee</b> in <b>Lviv</b>",
            "created_at": _AT.isoformat(),
        }
    ]
}
MODELS = m.ChatModels(id="c12")
MODELS_RESULT: dict[str, Any] = {
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
}

EVENTS = (
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
