"""Messenger frames."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

import msgspec

from kintsugi_rt.socket.protocol import ClientMessage, ServerMessage

# Seqs are PostgreSQL bigints: a larger number is refused by the decoder (``bad_request`` naming the
# field), never passed on to fail in the database.
BIGINT_MAX = 2**63 - 1

UserIds = Annotated[list[uuid.UUID], msgspec.Meta(min_length=1, max_length=1000)]
Title = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
ClientMsgId = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
# At most 32 characters here; that it is exactly one emoji is checked by the handler (``is_one_emoji``).
Emoji = Annotated[str, msgspec.Meta(min_length=1, max_length=32)]
Limit = Annotated[int, msgspec.Meta(ge=1, le=200)]
Seq = Annotated[int, msgspec.Meta(ge=0, le=BIGINT_MAX)]
Role = Literal["owner", "admin", "member"]

# --- client frames ----------------------------------------------------------------------------


class ConversationCreate(ClientMessage, tag="conversation.create"):
    """A direct conversation (exactly one other user; creating it again returns the same one) or a group."""

    kind: Literal["direct", "group"]
    user_ids: UserIds
    title: Title | None = None


class ConversationList(ClientMessage, tag="conversation.list"):
    """The user's conversations, latest activity first, with last message, unread count and members."""


class ConversationGet(ClientMessage, tag="conversation.get"):
    conversation_id: uuid.UUID


class ConversationAddMembers(ClientMessage, tag="conversation.add_members"):
    """Group admins add members (up to MESSENGER_MAX_MEMBERS)."""

    conversation_id: uuid.UUID
    user_ids: UserIds


class ConversationRemoveMember(ClientMessage, tag="conversation.remove_member"):
    """Group admins remove a member (not the owner)."""

    conversation_id: uuid.UUID
    user_id: uuid.UUID


class ConversationLeave(ClientMessage, tag="conversation.leave"):
    """Leave a group; an owner who leaves hands ownership to the longest-standing admin or member."""

    conversation_id: uuid.UUID


class ConversationPromote(ClientMessage, tag="conversation.promote"):
    """The owner sets a member's role (admin or member)."""

    conversation_id: uuid.UUID
    user_id: uuid.UUID
    role: Literal["admin", "member"]


class ConversationSync(ClientMessage, tag="conversation.sync"):
    """Catch up beyond the resume window: per conversation, messages after the seq you hold."""

    since: dict[str, Seq] = {}
    limit: Limit = 100


class MessageSend(ClientMessage, tag="message.send"):
    """Send text and/or attachments (ids from ``POST /api/media``; a voice message is an audio
    attachment). Idempotent on ``client_msg_id`` within the conversation: a retry returns the stored
    message, never a duplicate."""

    conversation_id: uuid.UUID
    client_msg_id: ClientMsgId
    text: str | None = None
    attachments: Annotated[list[uuid.UUID], msgspec.Meta(max_length=10)] = []
    reply_to: uuid.UUID | None = None


class MessageEdit(ClientMessage, tag="message.edit"):
    """The author edits within MESSENGER_EDIT_WINDOW; earlier versions are kept."""

    message_id: uuid.UUID
    text: str


class MessageDelete(ClientMessage, tag="message.delete"):
    """``me``: hide it for yourself. ``everyone``: the author within the window, or a group admin;
    a tombstone stays."""

    message_id: uuid.UUID
    scope: Literal["me", "everyone"]


class MessageReact(ClientMessage, tag="message.react"):
    """Toggle a reaction: exactly one emoji (ZWJ sequences, skin tones, flags and keycaps included)."""

    message_id: uuid.UUID
    emoji: Emoji


class MessagePin(ClientMessage, tag="message.pin"):
    message_id: uuid.UUID
    pinned: bool = True


class MessageForward(ClientMessage, tag="message.forward"):
    """Forward a message you can see into another conversation of yours (idempotent on
    ``client_msg_id`` within that conversation)."""

    message_id: uuid.UUID
    conversation_id: uuid.UUID
    client_msg_id: ClientMsgId


class MessageHistory(ClientMessage, tag="message.history"):
    """Messages by seq: the newest ``limit`` before ``before_seq``, or the oldest after ``after_seq``."""

    conversation_id: uuid.UUID
    before_seq: Seq | None = None
    after_seq: Seq | None = None
    limit: Limit = 50


class MessageSearch(ClientMessage, tag="message.search"):
    """Full-text search over the conversations you belong to (or one of them)."""

    query: Annotated[str, msgspec.Meta(min_length=1, max_length=500)]
    conversation_id: uuid.UUID | None = None
    limit: Limit = 20


class MessageRead(ClientMessage, tag="message.read"):
    """Everything up to ``seq`` is read (a high-water mark: it never moves back)."""

    conversation_id: uuid.UUID
    seq: Seq


class Typing(ClientMessage, tag="typing"):
    """You are typing; others see it for about 6 s. Throttled; not sent in large groups."""

    conversation_id: uuid.UUID


class ReceiptsSet(ClientMessage, tag="receipts.set"):
    """Turn your read receipts off (others do not learn what you read) or on."""

    enabled: bool


# --- shapes -------------------------------------------------------------------------------------


class Reaction(msgspec.Struct):
    emoji: str
    user_ids: list[uuid.UUID]


class Attachment(msgspec.Struct, omit_defaults=True):
    """A file sent with the message. ``url`` (and ``thumbnail_url`` for an image that has one) load it
    without a token (``<img src>``, ``<audio>``, ``<video>``; relative to the server) until
    ``expires_at``; after that, or in an event replayed later, get fresh ones with ``media.links``.
    ``GET /api/media/{id}`` with the access token works too (members of the conversation only)."""

    id: uuid.UUID
    kind: str
    content_type: str
    size: int
    filename: str | None = None
    width: int | None = None
    height: int | None = None
    duration_ms: int | None = None
    url: str | None = None
    thumbnail_url: str | None = None
    expires_at: datetime | None = None


class CallEntry(msgspec.Struct, omit_defaults=True):
    """A call in the timeline: ``missed`` (nobody answered), ``declined``, ``busy``, ``cancelled``,
    ``completed`` (with its duration) or ``failed``."""

    call_id: uuid.UUID
    media: Literal["audio", "video"]
    outcome: Literal["completed", "missed", "declined", "busy", "cancelled", "failed"]
    duration_s: int = 0


class ToolUse(msgspec.Struct):
    tool: str
    status: Literal["ok", "error"]


class MessageAgent(msgspec.Struct):
    """The agent that wrote the message (its ``sender_id`` is null), and the tools it used for it."""

    agent_id: uuid.UUID
    name: str
    handle: str
    tools_used: list[ToolUse] = []


class ConversationAgent(msgspec.Struct):
    """An agent in the conversation: a mention of ``@handle`` (or any message in its 1:1) makes it
    answer; ``added_by`` (its owner) pays."""

    agent_id: uuid.UUID
    name: str
    handle: str
    added_by: uuid.UUID


class Message(msgspec.Struct, omit_defaults=True):
    id: uuid.UUID
    conversation_id: uuid.UUID
    seq: int
    sender_id: uuid.UUID | None
    client_msg_id: str
    created_at: datetime
    text: str | None = None
    reply_to: uuid.UUID | None = None
    forwarded_from: uuid.UUID | None = None
    edited_at: datetime | None = None
    deleted: bool = False
    pinned: bool = False
    reactions: list[Reaction] = []
    attachments: list[Attachment] = []
    call: CallEntry | None = None  # a call's entry (sent by the calls module; no text)
    agent: MessageAgent | None = None  # written by an agent in the conversation


class Member(msgspec.Struct):
    user_id: uuid.UUID
    role: Role
    display_name: str
    read_seq: int | None = None  # only when that member shares receipts
    handle: str | None = None  # their @handle (without the '@'), if they chose one
    avatar_media_id: uuid.UUID | None = None  # their avatar: GET /api/media/{id}


class Conversation(msgspec.Struct, omit_defaults=True):
    id: uuid.UUID
    kind: Literal["direct", "group"]
    members: list[Member]
    last_seq: int
    read_seq: int
    unread: int
    created_at: datetime
    title: str | None = None
    last_message: Message | None = None
    agents: list[ConversationAgent] = []


class ConversationRef(msgspec.Struct):
    conversation: Conversation


class ConversationPage(msgspec.Struct):
    conversations: list[Conversation]


class MessageRef(msgspec.Struct):
    message: Message


class MessagePage(msgspec.Struct):
    messages: list[Message]
    has_more: bool


class SyncResult(msgspec.Struct):
    conversations: list[Conversation]
    messages: list[Message]


# --- server frames ---------------------------------------------------------------------------


class MessageNew(ServerMessage, tag="message.new"):
    message: Message


class MessageUpdated(ServerMessage, tag="message.updated"):
    """A message changed; ``message`` is its whole new state (edited, deleted, reaction, pinned…)."""

    message: Message
    change: Literal["edited", "deleted", "reaction", "pinned", "unpinned"]


class ReadReceipt(ServerMessage, tag="message.read"):
    """``user_id`` has read ``conversation_id`` up to ``seq``."""

    conversation_id: uuid.UUID
    user_id: uuid.UUID
    seq: int


class ConversationUpdated(ServerMessage, tag="conversation.updated"):
    """Created, members, roles or agents changed, or you joined it."""

    conversation: Conversation


class ConversationRemoved(ServerMessage, tag="conversation.removed"):
    """You left or were removed."""

    conversation_id: uuid.UUID


class TypingEvent(ServerMessage, tag="typing"):
    """Someone is typing (ephemeral: lasts ``expires_in_ms`` unless repeated)."""

    conversation_id: uuid.UUID
    user_id: uuid.UUID
    expires_in_ms: int
