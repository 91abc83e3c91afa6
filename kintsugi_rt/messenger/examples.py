"""Example frames of the messenger, for docs/protocol.md."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from kintsugi_rt.messenger import frames as m
from kintsugi_rt.socket.registry import ServerEvent

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
        m.Member(user_id=_A, role="member", display_name="Ann", read_seq=42, handle="ann"),
        m.Member(user_id=_B, role="member", display_name="Bo", read_seq=41),
    ],
    last_message=_MESSAGE,
)

CREATE = m.ConversationCreate(id="m1", kind="direct", user_ids=[_B])
LIST = m.ConversationList(id="m2")
GET = m.ConversationGet(id="m3", conversation_id=_C)
ADD_MEMBERS = m.ConversationAddMembers(id="m4", conversation_id=_C, user_ids=[_B])
REMOVE_MEMBER = m.ConversationRemoveMember(id="m5", conversation_id=_C, user_id=_B)
LEAVE = m.ConversationLeave(id="m6", conversation_id=_C)
PROMOTE = m.ConversationPromote(id="m7", conversation_id=_C, user_id=_B, role="admin")
SYNC = m.ConversationSync(id="m8", since={str(_C): 40})
SEND = m.MessageSend(id="m9", conversation_id=_C, client_msg_id="c-7f3a", text="Kava o 5?")
EDIT = m.MessageEdit(id="m10", message_id=_M, text="Kava o 6?")
DELETE = m.MessageDelete(id="m11", message_id=_M, scope="everyone")
REACT = m.MessageReact(id="m12", message_id=_M, emoji="👍")
PIN = m.MessagePin(id="m13", message_id=_M)
FORWARD = m.MessageForward(id="m14", message_id=_M, conversation_id=_C, client_msg_id="c-8a01")
HISTORY = m.MessageHistory(id="m15", conversation_id=_C, before_seq=42, limit=50)
SEARCH = m.MessageSearch(id="m16", query="kava")
READ = m.MessageRead(id="m17", conversation_id=_C, seq=42)
TYPING = m.Typing(conversation_id=_C)
RECEIPTS = m.ReceiptsSet(id="m18", enabled=False)

EVENTS = (
    ServerEvent(m.MessageNew, m.MessageNew(message=_MESSAGE), durable=True),
    ServerEvent(m.MessageUpdated, m.MessageUpdated(message=_MESSAGE, change="reaction"), durable=True),
    ServerEvent(m.ReadReceipt, m.ReadReceipt(conversation_id=_C, user_id=_B, seq=42), durable=True),
    ServerEvent(m.ConversationUpdated, m.ConversationUpdated(conversation=_CONVERSATION), durable=True),
    ServerEvent(m.ConversationRemoved, m.ConversationRemoved(conversation_id=_C), durable=True),
    ServerEvent(m.TypingEvent, m.TypingEvent(conversation_id=_C, user_id=_A, expires_in_ms=6000)),
)
