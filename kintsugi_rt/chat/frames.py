"""AI chat frames. Requests carry ``chat.*`` types; the server streams ``chat.delta`` and ends with
``chat.done`` or ``chat.error``; changes other devices must learn of are durable events."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

import msgspec

from kintsugi_rt.socket.protocol import ClientMessage, ServerMessage

Title = Annotated[str, msgspec.Meta(max_length=200)]
SystemPrompt = Annotated[str, msgspec.Meta(max_length=20_000)]
Query = Annotated[str, msgspec.Meta(min_length=1, max_length=500)]
Limit = Annotated[int, msgspec.Meta(ge=1, le=100)]
Content = Annotated[str, msgspec.Meta(min_length=1)]
# A ``chat.list`` cursor as the server writes it: "<updated_at in UTC, ISO 8601>|<chat id>". Only a UTC
# time is accepted, so no offset can carry the time out of PostgreSQL's range.
Cursor = Annotated[
    str,
    msgspec.Meta(
        max_length=80,
        pattern=r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?\+00:00\|[0-9a-f]{8}-[0-9a-f]{4}-"
        r"[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$",
    ),
]
Status = Literal["complete", "streaming", "stopped", "error"]

# --- client frames ----------------------------------------------------------------------------


class ChatCreate(ClientMessage, tag="chat.create"):
    """Start a chat; model defaults to CHAT_DEFAULT_MODEL (or offline-demo with no provider key)."""

    model: str | None = None
    title: Title | None = None
    system_prompt: SystemPrompt | None = None


class ChatList(ClientMessage, tag="chat.list"):
    """The user's chats, most recently active first; pass ``next_cursor`` back as ``before``."""

    before: Cursor | None = None
    limit: Limit = 20


class ChatGet(ClientMessage, tag="chat.get"):
    """The active branch, newest ``limit`` messages before ``before``, with each message's siblings."""

    chat_id: uuid.UUID
    before: uuid.UUID | None = None
    limit: Limit = 50


class ChatSwitch(ClientMessage, tag="chat.switch"):
    """Make the branch through this message active (its newest descendant becomes the leaf)."""

    message_id: uuid.UUID


class ChatSend(ClientMessage, tag="chat.send"):
    """Ask the model; the answer streams as ``chat.delta`` frames to all the user's sockets."""

    chat_id: uuid.UUID
    content: Content
    parent_id: uuid.UUID | None = None


class ChatStop(ClientMessage, tag="chat.stop"):
    """Stop a streaming answer now (whichever node runs it); what was generated is kept and billed."""

    message_id: uuid.UUID


class ChatRegenerate(ClientMessage, tag="chat.regenerate"):
    """Answer again: a new assistant message beside this one."""

    message_id: uuid.UUID


class ChatEdit(ClientMessage, tag="chat.edit"):
    """Edit a user message: a new sibling with this content, and a fresh answer to it."""

    message_id: uuid.UUID
    content: Content


class ChatRename(ClientMessage, tag="chat.rename"):
    chat_id: uuid.UUID
    title: Title


class ChatDelete(ClientMessage, tag="chat.delete"):
    """Delete a chat and its messages (a streaming answer in it is stopped first)."""

    chat_id: uuid.UUID


class ChatSearch(ClientMessage, tag="chat.search"):
    """Full-text search over the user's own chat titles and messages."""

    query: Query
    limit: Limit = 20


class ChatModels(ClientMessage, tag="chat.models"):
    """The model catalogue, each marked with whether this user's tier may use it."""


# --- shapes -------------------------------------------------------------------------------------


class ChatInfo(msgspec.Struct):
    id: uuid.UUID
    title: str
    model: str
    system_prompt: str | None
    active_leaf_id: uuid.UUID | None
    created_at: datetime
    updated_at: datetime


class MessageInfo(msgspec.Struct, omit_defaults=True):
    id: uuid.UUID
    parent_id: uuid.UUID | None
    role: Literal["user", "assistant"]
    content: str
    status: Status
    created_at: datetime
    model: str | None = None
    finish_reason: str | None = None
    error_code: str | None = None
    siblings: list[uuid.UUID] = []  # this message and its siblings, oldest first: the branch switcher


class ChatView(msgspec.Struct):
    chat: ChatInfo
    messages: list[MessageInfo]
    has_more: bool


class ChatPage(msgspec.Struct):
    chats: list[ChatInfo]
    next_cursor: str | None


class ChatRef(msgspec.Struct):
    chat: ChatInfo


class SendResult(msgspec.Struct):
    user_message_id: uuid.UUID
    message_id: uuid.UUID


class RegenerateResult(msgspec.Struct):
    message_id: uuid.UUID


class SearchHit(msgspec.Struct):
    chat_id: uuid.UUID
    chat_title: str
    message_id: uuid.UUID | None
    snippet: str
    created_at: datetime


class SearchResult(msgspec.Struct):
    results: list[SearchHit]


class ModelInfo(msgspec.Struct, omit_defaults=True):
    id: str
    label: str
    context_window: int
    max_output: int
    allowed: bool
    tier_required: str | None = None


class ModelList(msgspec.Struct):
    models: list[ModelInfo]
    default: str | None
    provider: str


class Usage(msgspec.Struct):
    prompt_tokens: int
    completion_tokens: int
    source: Literal["provider", "estimated"]


# --- server frames ---------------------------------------------------------------------------


class ChatCreated(ServerMessage, tag="chat.created"):
    """A chat was created (on any of the user's devices)."""

    chat: ChatInfo


class ChatUpdated(ServerMessage, tag="chat.updated"):
    """A chat's title (renamed, or generated after the first exchange) or active branch changed."""

    chat: ChatInfo


class ChatDeleted(ServerMessage, tag="chat.deleted"):
    chat_id: uuid.UUID


class ChatStarted(ServerMessage, tag="chat.started"):
    """A user message was stored and an answer (``message_id``) started streaming."""

    chat_id: uuid.UUID
    message_id: uuid.UUID
    parent_id: uuid.UUID
    model: str
    user_message: MessageInfo | None = None


class ChatDelta(ServerMessage, tag="chat.delta"):
    """The next piece of a streaming answer; ``index`` counts pieces from 0 (not durable, never dropped)."""

    chat_id: uuid.UUID
    message_id: uuid.UUID
    index: int
    text: str


class ChatSnapshot(ServerMessage, tag="chat.snapshot"):
    """On connect, for each answer still streaming: its text through piece ``index``; deltas follow."""

    chat_id: uuid.UUID
    message_id: uuid.UUID
    index: int
    text: str


class ChatDone(ServerMessage, tag="chat.done"):
    """The answer ended (``finish_reason``: stop, length, stopped); ``content`` is the full text."""

    chat_id: uuid.UUID
    message_id: uuid.UUID
    finish_reason: str
    usage: Usage
    content: str


class ChatError(ServerMessage, tag="chat.error"):
    """The answer failed; ``content`` keeps whatever was generated before the failure."""

    chat_id: uuid.UUID
    message_id: uuid.UUID
    code: str
    message: str
    content: str
