"""The messenger: conversations, messages, reactions, receipts and typing, all on the socket.

Every change is a durable event in each member's stream (so it reaches every device on every node
and is replayed on resume); typing is ephemeral. A user who is not a member learns nothing: every
request about a conversation or message they cannot see answers ``not_found``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Protocol

import asyncpg
import emoji

from kintsugi_rt.context import AppContext
from kintsugi_rt.logs import get_logger
from kintsugi_rt.messenger import storage
from kintsugi_rt.messenger.frames import (
    CallEntry,
    Conversation,
    ConversationAddMembers,
    ConversationAgent,
    ConversationCreate,
    ConversationGet,
    ConversationLeave,
    ConversationPage,
    ConversationPromote,
    ConversationRef,
    ConversationRemoved,
    ConversationRemoveMember,
    ConversationSync,
    ConversationUpdated,
    Message,
    MessageAgent,
    MessageDelete,
    MessageEdit,
    MessageForward,
    MessageHistory,
    MessageNew,
    MessagePage,
    MessagePin,
    MessageReact,
    MessageRead,
    MessageRef,
    MessageSearch,
    MessageSend,
    MessageUpdated,
    ReadReceipt,
    ReceiptsSet,
    SyncResult,
    Typing,
    TypingEvent,
)
from kintsugi_rt.socket import streams
from kintsugi_rt.socket.protocol import BAD_REQUEST, FORBIDDEN, NOT_FOUND, ServerMessage
from kintsugi_rt.socket.registry import SocketContext, SocketError

log = get_logger(__name__)

TEXT_TOO_LONG = "text_too_long"
EDIT_WINDOW_PASSED = "edit_window_passed"
DELETE_WINDOW_PASSED = "delete_window_passed"
TOO_MANY_MEMBERS = "too_many_members"

ERROR_CODES = {
    TEXT_TOO_LONG: "The message is longer than MESSENGER_MAX_TEXT characters (or empty).",
    EDIT_WINDOW_PASSED: "Messages can be edited only within MESSENGER_EDIT_WINDOW of sending.",
    DELETE_WINDOW_PASSED: "The author can delete for everyone only within MESSENGER_DELETE_WINDOW.",
    TOO_MANY_MEMBERS: "The group would exceed MESSENGER_MAX_MEMBERS.",
}

TYPING_TTL_MS = 6000
# A run of an agent in a conversation still marked going after this long was left by a node that died.
_AGENT_RUN_STALE = timedelta(minutes=15)
TYPING_THROTTLE_SECONDS = 3.0


class AttachmentLinks(Protocol):
    """Signed URLs of one attachment (media's ``MediaLinks`` is one)."""

    @property
    def url(self) -> str: ...

    @property
    def thumbnail_url(self) -> str | None: ...

    @property
    def expires_at(self) -> datetime: ...


LinkAttachments = Callable[
    [Sequence[uuid.UUID], storage.Executor], Awaitable[Mapping[uuid.UUID, AttachmentLinks]]
]
"""``(media_ids, db) -> {media_id: links}``: signed URLs of the files (given by the composition root;
queried on ``db``, the messenger's connection, so a transaction never waits for a second one)."""


NewMessageHook = Callable[[Message, Sequence[uuid.UUID]], None]
"""``(message, the conversation's members)``, called after the message's commit; it must return at once
(Web Push queues it), and what it raises is logged, never answered."""


def _not_found() -> SocketError:
    return SocketError(NOT_FOUND, "No such conversation or message.")


def is_one_emoji(text: str) -> bool:
    """Exactly one emoji: one grapheme cluster the Unicode emoji data knows, including ZWJ sequences
    (👨‍👩‍👧), skin tones (👍🏽), flags (🇺🇦) and keycaps (1️⃣); not two, not text, not a lone joiner."""
    return emoji.is_emoji(text)


class MessengerService:
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self.settings = ctx.settings
        self._typing_sent: dict[tuple[str, uuid.UUID], float] = {}
        # Signed URLs for attachments (wiring.py: media's links_many); without it they carry none.
        self.attachment_links: LinkAttachments | None = None
        # Told of every new message after its commit (wiring.py: Web Push, agents). Must not block.
        self.on_new_message: list[NewMessageHook] = []

    # --- helpers --------------------------------------------------------------------------------

    async def _emit(
        self, conn: asyncpg.Connection, users: Iterable[uuid.UUID], event: ServerMessage
    ) -> streams.DurableDelivery:
        return await streams.append(conn, list(users), event)

    async def _publish(self, deliveries: list[streams.DurableDelivery]) -> None:
        for delivery in deliveries:
            await self.ctx.events.publish_durable(delivery)

    def _check_text(self, text: str) -> str:
        if not text.strip() or len(text) > self.settings.messenger_max_text:
            raise SocketError(
                TEXT_TOO_LONG,
                f"Messages have 1 to {self.settings.messenger_max_text} characters.",
                {"limit": self.settings.messenger_max_text},
            )
        return text

    async def _link(self, db: storage.Executor, messages: Iterable[Message]) -> None:
        """Put signed URLs on the attachments of these messages (a conversation's ``last_message`` is a
        preview without attachments)."""
        if self.attachment_links is None:
            return
        attachments = [attachment for message in messages for attachment in message.attachments]
        if not attachments:
            return
        links = await self.attachment_links([a.id for a in attachments], db)
        for attachment in attachments:
            link = links.get(attachment.id)
            if link is not None:
                attachment.url = link.url
                attachment.thumbnail_url = link.thumbnail_url
                attachment.expires_at = link.expires_at

    async def _member(self, db: storage.Executor, conversation_id: uuid.UUID, user_id: uuid.UUID) -> str:
        role = await storage.role_of(db, conversation_id, user_id)
        if role is None:
            raise _not_found()
        return role

    async def _view_for_all(
        self, conn: asyncpg.Connection, conversation_id: uuid.UUID, members: list[uuid.UUID]
    ) -> tuple[list[streams.DurableDelivery], dict[uuid.UUID, Conversation]]:
        """Each member's own view of the conversation (their read mark and unread count differ), as
        durable events, and the views themselves: the caller answers with its own view, built inside
        the transaction, so nothing that can fail is left for after the commit but publishing."""
        views = await storage.conversation_views(conn, conversation_id, members)
        deliveries = await streams.append_each(
            conn, {member: ConversationUpdated(conversation=view) for member, view in views.items()}
        )
        return deliveries, views

    # --- conversations --------------------------------------------------------------------------

    async def create(self, conn: SocketContext, message: ConversationCreate) -> ConversationRef:
        me = conn.user_id
        others = [u for u in dict.fromkeys(message.user_ids) if u != me]
        pool = self.ctx.db.pool
        if len(await storage.existing_users(pool, others)) != len(others):
            raise SocketError(NOT_FOUND, "No such user.", {"field": "user_ids"})
        if message.kind == "direct":
            if len(others) != 1:
                raise SocketError(
                    BAD_REQUEST, "A direct conversation has exactly one other user.", {"field": "user_ids"}
                )
            return ConversationRef(conversation=await self._direct(me, others[0]))
        if len(others) + 1 > self.settings.messenger_max_members:
            raise SocketError(TOO_MANY_MEMBERS, ERROR_CODES[TOO_MANY_MEMBERS])
        async with pool.acquire() as db, db.transaction():
            conversation_id = await storage.create_group(db, message.title or "", me)
            await storage.insert_group_members(db, conversation_id, me, others)
            deliveries, views = await self._view_for_all(db, conversation_id, [me, *others])
        await self._publish(deliveries)
        return ConversationRef(conversation=views[me])

    async def _direct(self, me: uuid.UUID, other: uuid.UUID) -> Conversation:
        low, high = sorted((me, other), key=str)
        key = f"{low}:{high}"
        pool = self.ctx.db.pool
        deliveries: list[streams.DurableDelivery] = []
        async with pool.acquire() as db, db.transaction():
            conversation_id = await storage.create_direct(db, key, me)
            if conversation_id is not None:
                await storage.insert_direct_members(db, conversation_id, [low, high])
                deliveries, views = await self._view_for_all(db, conversation_id, [me, other])
                view: Conversation | None = views[me]
            else:
                conversation_id = await storage.direct_conversation_id(db, key)
                assert conversation_id is not None
                view = await storage.conversation_of(db, me, conversation_id)
        await self._publish(deliveries)
        assert view is not None
        return view

    async def list_conversations(self, conn: SocketContext, message: object) -> ConversationPage:
        return ConversationPage(conversations=await storage.conversations(self.ctx.db.pool, conn.user_id))

    async def get(self, conn: SocketContext, message: ConversationGet) -> ConversationRef:
        view = await storage.conversation_of(self.ctx.db.pool, conn.user_id, message.conversation_id)
        if view is None:
            raise _not_found()
        return ConversationRef(conversation=view)

    async def _group_admin(
        self, db: asyncpg.Connection, conversation_id: uuid.UUID, user_id: uuid.UUID
    ) -> str:
        kind = await storage.lock_conversation_kind(db, conversation_id)
        role = await self._member(db, conversation_id, user_id)
        if kind != "group":
            raise SocketError(FORBIDDEN, "Direct conversations have no admins.")
        if role not in ("owner", "admin"):
            raise SocketError(FORBIDDEN, "Only the group's admins can do that.")
        return role

    async def add_members(self, conn: SocketContext, message: ConversationAddMembers) -> ConversationRef:
        pool = self.ctx.db.pool
        async with pool.acquire() as db, db.transaction():
            await self._group_admin(db, message.conversation_id, conn.user_id)
            new = [u for u in await storage.existing_users(db, list(dict.fromkeys(message.user_ids)))]
            current = await storage.member_ids(db, message.conversation_id)
            new = [u for u in new if u not in current]
            if len(current) + len(new) > self.settings.messenger_max_members:
                raise SocketError(TOO_MANY_MEMBERS, ERROR_CODES[TOO_MANY_MEMBERS])
            await storage.add_members(db, message.conversation_id, new)
            deliveries, views = await self._view_for_all(db, message.conversation_id, current + new)
        await self._publish(deliveries)
        return ConversationRef(conversation=views[conn.user_id])

    async def remove_member(self, conn: SocketContext, message: ConversationRemoveMember) -> ConversationRef:
        async with self.ctx.db.pool.acquire() as db, db.transaction():
            my_role = await self._group_admin(db, message.conversation_id, conn.user_id)
            their_role = await storage.role_of(db, message.conversation_id, message.user_id)
            if their_role is None:
                raise _not_found()
            if their_role == "owner" or (their_role == "admin" and my_role != "owner"):
                raise SocketError(FORBIDDEN, "Only the owner removes admins; nobody removes the owner.")
            deliveries, views = await self._drop_member(db, message.conversation_id, message.user_id)
        await self._publish(deliveries)
        return ConversationRef(conversation=views[conn.user_id])  # the admin is among the remaining

    async def leave(self, conn: SocketContext, message: ConversationLeave) -> None:
        async with self.ctx.db.pool.acquire() as db, db.transaction():
            kind = await storage.lock_conversation_kind(db, message.conversation_id)
            role = await self._member(db, message.conversation_id, conn.user_id)
            if kind != "group":
                raise SocketError(FORBIDDEN, "You cannot leave a direct conversation.")
            if role == "owner":  # hand the group to the longest-standing admin, else member
                await storage.hand_over_ownership(db, message.conversation_id, conn.user_id)
            deliveries, _ = await self._drop_member(db, message.conversation_id, conn.user_id)
        await self._publish(deliveries)

    async def _drop_member(
        self, db: asyncpg.Connection, conversation_id: uuid.UUID, user_id: uuid.UUID
    ) -> tuple[list[streams.DurableDelivery], dict[uuid.UUID, Conversation]]:
        """Remove the member; their ``conversation.removed`` and the remaining members' views."""
        await storage.delete_member(db, conversation_id, user_id)
        remaining = await storage.member_ids(db, conversation_id)
        await streams.lock(db, [user_id, *remaining])  # two appends: lock all their streams at once
        gone = await self._emit(db, [user_id], ConversationRemoved(conversation_id=conversation_id))
        deliveries, views = await self._view_for_all(db, conversation_id, remaining)
        return [gone, *deliveries], views

    async def promote(self, conn: SocketContext, message: ConversationPromote) -> ConversationRef:
        async with self.ctx.db.pool.acquire() as db, db.transaction():
            role = await self._group_admin(db, message.conversation_id, conn.user_id)
            if role != "owner":
                raise SocketError(FORBIDDEN, "Only the owner changes roles.")
            if await storage.role_of(db, message.conversation_id, message.user_id) in (None, "owner"):
                raise _not_found()
            await storage.set_role(db, message.conversation_id, message.user_id, message.role)
            deliveries, views = await self._view_for_all(
                db, message.conversation_id, await storage.member_ids(db, message.conversation_id)
            )
        await self._publish(deliveries)
        return ConversationRef(conversation=views[conn.user_id])

    async def sync(self, conn: SocketContext, message: ConversationSync) -> SyncResult:
        """Every conversation's state, and up to ``limit`` messages after the seq the client holds."""
        pool = self.ctx.db.pool
        views = await storage.conversations(pool, conn.user_id)
        found: list[Message] = []
        budget = message.limit
        for view in views:
            held = message.since.get(str(view.id))
            if held is None or held >= view.last_seq or budget <= 0:
                continue
            page = await storage.messages_after(pool, conn.user_id, view.id, held, budget)
            found.extend(page)
            budget -= len(page)
        await self._link(pool, found)
        return SyncResult(conversations=views, messages=found)

    # --- messages -------------------------------------------------------------------------------

    async def send(self, conn: SocketContext, message: MessageSend) -> MessageRef:
        if message.text is None and not message.attachments:
            raise SocketError(BAD_REQUEST, "Send text, attachments, or both.", {"field": "text"})
        text = self._check_text(message.text) if message.text is not None else None
        return await self._store(
            conn.user_id,
            message.conversation_id,
            message.client_msg_id,
            text,
            message.reply_to,
            None,
            list(dict.fromkeys(message.attachments)),
        )

    async def forward(self, conn: SocketContext, message: MessageForward) -> MessageRef:
        original = await storage.message_row(self.ctx.db.pool, message.message_id, conn.user_id)
        if original is None or original["deleted_at"] is not None:
            raise _not_found()
        attachments = await storage.attachment_media_ids(self.ctx.db.pool, original["id"])
        return await self._store(
            conn.user_id,
            message.conversation_id,
            message.client_msg_id,
            original["text"],
            None,
            original["id"],
            attachments,
            attachments_checked=True,
        )

    async def _store(
        self,
        sender: uuid.UUID,
        conversation_id: uuid.UUID,
        client_msg_id: str,
        text: str | None,
        reply_to: uuid.UUID | None,
        forwarded_from: uuid.UUID | None,
        attachments: list[uuid.UUID],
        *,
        attachments_checked: bool = False,
    ) -> MessageRef:
        pool = self.ctx.db.pool
        async with pool.acquire() as db, db.transaction():
            await self._member(db, conversation_id, sender)
            retried = await storage.sent_before(db, sender, conversation_id, client_msg_id)
            if retried is not None:  # the client retried a send that had worked: same message, no event
                await self._link(db, [retried])
                return MessageRef(message=retried)
            if reply_to is not None and not await storage.message_in_conversation(
                db, reply_to, conversation_id
            ):
                raise SocketError(
                    NOT_FOUND, "The message replied to is not in this conversation.", {"field": "reply_to"}
                )
            # Only your own uploads can be attached (forwarding carries what you could see).
            if (
                attachments
                and not attachments_checked
                and await storage.count_owned_media(db, attachments, sender) != len(attachments)
            ):
                raise SocketError(NOT_FOUND, "No such media.", {"field": "attachments"})
            try:
                async with db.transaction():  # a savepoint: a concurrent retry may take the key first
                    stored = await storage.insert_message(
                        db,
                        conversation_id,
                        sender,
                        client_msg_id,
                        text,
                        reply_to,
                        forwarded_from,
                        self.ctx.clock.now(),  # the edit and delete windows are measured on this clock
                    )
            except asyncpg.UniqueViolationError:
                # The twin committed while this one waited for the conversation's lock: answer with it.
                twin = await storage.sent_before(db, sender, conversation_id, client_msg_id)
                if twin is None:
                    raise
                await self._link(db, [twin])
                return MessageRef(message=twin)
            if attachments:
                await storage.attach_media(db, stored.id, attachments)
                stored.attachments = (await storage.attachments_for(db, [stored.id])).get(stored.id, [])
                await self._link(db, [stored])
            members = await storage.member_ids(db, conversation_id)
            delivery = await self._emit(db, members, MessageNew(message=stored))
        await self.ctx.events.publish_durable(delivery)
        self._announce_new(stored, members)
        return MessageRef(message=stored)

    def _announce_new(self, message: Message, members: list[uuid.UUID]) -> None:
        """After the commit: tell ``on_new_message`` (Web Push, agents); they only queue, and never fail
        us."""
        for hook in self.on_new_message:
            try:
                hook(message, members)
            except Exception:
                log.exception("messenger.on_new_message_failed", message_id=str(message.id))

    async def edit(self, conn: SocketContext, message: MessageEdit) -> MessageRef:
        text = self._check_text(message.text)
        async with self.ctx.db.pool.acquire() as db, db.transaction():
            row = await storage.message_row(db, message.message_id, conn.user_id, lock=True)
            if row is None or row["deleted_at"] is not None:
                raise _not_found()
            if row["sender_id"] != conn.user_id:
                raise SocketError(FORBIDDEN, "Only the author edits a message.")
            if self.ctx.clock.now() - row["created_at"] > self.settings.messenger_edit_window:
                raise SocketError(EDIT_WINDOW_PASSED, ERROR_CODES[EDIT_WINDOW_PASSED])
            await storage.save_version(db, message.message_id, row["text"])
            await storage.set_message_text(db, message.message_id, text, self.ctx.clock.now())
            delivery, ref = await self._announce(db, message.message_id, "edited")
        await self.ctx.events.publish_durable(delivery)
        return ref

    async def delete(self, conn: SocketContext, message: MessageDelete) -> None:
        async with self.ctx.db.pool.acquire() as db, db.transaction():
            row = await storage.message_row(db, message.message_id, conn.user_id, lock=True)
            if row is None:
                raise _not_found()
            if message.scope == "me":
                await storage.hide_message_for(db, message.message_id, conn.user_id)
                return
            if row["deleted_at"] is not None:
                return
            is_admin = row["role"] in ("owner", "admin") and await storage.is_group(
                db, row["conversation_id"]
            )
            if not is_admin:
                if row["sender_id"] != conn.user_id:
                    raise SocketError(FORBIDDEN, "Only the author (or a group admin) deletes for everyone.")
                if self.ctx.clock.now() - row["created_at"] > self.settings.messenger_delete_window:
                    raise SocketError(DELETE_WINDOW_PASSED, ERROR_CODES[DELETE_WINDOW_PASSED])
            await storage.tombstone_message(db, message.message_id, self.ctx.clock.now())
            delivery, _ = await self._announce(db, message.message_id, "deleted")
        await self.ctx.events.publish_durable(delivery)

    async def react(self, conn: SocketContext, message: MessageReact) -> MessageRef:
        if not is_one_emoji(message.emoji):
            raise SocketError(BAD_REQUEST, "A reaction is exactly one emoji.", {"field": "emoji"})
        async with self.ctx.db.pool.acquire() as db, db.transaction():
            row = await storage.message_row(db, message.message_id, conn.user_id, lock=True)
            if row is None or row["deleted_at"] is not None:
                raise _not_found()
            await storage.toggle_reaction(db, message.message_id, conn.user_id, message.emoji)
            delivery, ref = await self._announce(db, message.message_id, "reaction")
        await self.ctx.events.publish_durable(delivery)
        return ref

    async def pin(self, conn: SocketContext, message: MessagePin) -> MessageRef:
        async with self.ctx.db.pool.acquire() as db, db.transaction():
            row = await storage.message_row(db, message.message_id, conn.user_id, lock=True)
            if row is None or row["deleted_at"] is not None:
                raise _not_found()
            kind = await storage.conversation_kind(db, row["conversation_id"])
            if kind == "group" and row["role"] not in ("owner", "admin"):
                raise SocketError(FORBIDDEN, "Only the group's admins pin messages.")
            await storage.set_pinned_at(
                db, message.message_id, self.ctx.clock.now() if message.pinned else None
            )
            delivery, ref = await self._announce(
                db, message.message_id, "pinned" if message.pinned else "unpinned"
            )
        await self.ctx.events.publish_durable(delivery)
        return ref

    async def _announce(
        self, db: asyncpg.Connection, message_id: uuid.UUID, change: str
    ) -> tuple[streams.DurableDelivery, MessageRef]:
        """Every member's durable event with the message's new state; publish it after the commit."""
        stored = await storage.message(db, message_id)
        assert stored is not None
        await self._link(db, [stored])
        members = await storage.member_ids(db, stored.conversation_id)
        delivery = await self._emit(db, members, MessageUpdated(message=stored, change=change))  # type: ignore[arg-type]
        return delivery, MessageRef(message=stored)

    async def history(self, conn: SocketContext, message: MessageHistory) -> MessagePage:
        pool = self.ctx.db.pool
        await self._member(pool, message.conversation_id, conn.user_id)
        if message.after_seq is not None:
            page = await storage.messages_after(
                pool, conn.user_id, message.conversation_id, message.after_seq, message.limit + 1
            )
            more = len(page) > message.limit
            await self._link(pool, page[: message.limit])
            return MessagePage(messages=page[: message.limit], has_more=more)
        before = message.before_seq if message.before_seq is not None else 2**62
        page = await storage.messages_before(
            pool, conn.user_id, message.conversation_id, before, message.limit + 1
        )
        more = len(page) > message.limit
        await self._link(pool, page[: message.limit])
        return MessagePage(messages=list(reversed(page[: message.limit])), has_more=more)

    async def search(self, conn: SocketContext, message: MessageSearch) -> MessagePage:
        pool = self.ctx.db.pool
        if message.conversation_id is not None:
            await self._member(pool, message.conversation_id, conn.user_id)
        page = await storage.search_messages(
            pool, conn.user_id, message.query, message.conversation_id, message.limit
        )
        await self._link(pool, page)
        return MessagePage(messages=page, has_more=False)

    async def read(self, conn: SocketContext, message: MessageRead) -> None:
        pool = self.ctx.db.pool
        async with pool.acquire() as db, db.transaction():
            moved = await storage.advance_read_mark(db, message.conversation_id, conn.user_id, message.seq)
            if moved is None:
                await self._member(db, message.conversation_id, conn.user_id)  # not_found for outsiders
                return  # a high-water mark never moves back
            shares = await storage.shares_read_receipts(db, conn.user_id)
            members = await storage.member_ids(db, message.conversation_id)
            audience = members if shares else [conn.user_id]  # my other devices always learn it
            receipt = ReadReceipt(conversation_id=message.conversation_id, user_id=conn.user_id, seq=moved)
            delivery = await self._emit(db, audience, receipt)
        await self.ctx.events.publish_durable(delivery)

    async def receipts(self, conn: SocketContext, message: ReceiptsSet) -> None:
        await storage.set_read_receipts(self.ctx.db.pool, conn.user_id, message.enabled)

    async def typing(self, conn: SocketContext, message: Typing) -> None:
        key = (conn.conn_id, message.conversation_id)
        now = time.monotonic()
        if now - self._typing_sent.get(key, 0.0) < TYPING_THROTTLE_SECONDS:
            return  # throttled: the last one still shows
        pool = self.ctx.db.pool
        await self._member(pool, message.conversation_id, conn.user_id)
        members = await storage.member_ids(pool, message.conversation_id)
        if len(members) > self.settings.messenger_typing_max_members:
            return
        if len(self._typing_sent) > 100_000:
            self._typing_sent.clear()
        self._typing_sent[key] = now
        event = TypingEvent(
            conversation_id=message.conversation_id, user_id=conn.user_id, expires_in_ms=TYPING_TTL_MS
        )
        await self.ctx.events.push([m for m in members if m != conn.user_id], event)

    async def audience(self, user_id: uuid.UUID) -> set[uuid.UUID]:
        """Presence: the users who share a conversation with ``user_id``."""
        return await storage.audience_of(self.ctx.db.pool, user_id)

    async def can_see_media(self, user_id: uuid.UUID, media_id: uuid.UUID) -> bool:
        """Media: the members of a conversation may read the files sent to it."""
        return await storage.can_see_media(self.ctx.db.pool, user_id, media_id)

    # --- for other modules (calls, people) ---------------------------------------------------------

    async def shares_conversation(self, user_id: uuid.UUID, other_id: uuid.UUID) -> bool:
        """People: whether the two users are members of one conversation (at least)."""
        return await storage.shares_conversation(self.ctx.db.pool, user_id, other_id)

    async def contacts_matching(self, user_id: uuid.UUID, query: str, limit: int) -> list[uuid.UUID]:
        """People: up to ``limit`` users sharing a conversation with ``user_id`` whose display name or
        handle contains ``query`` (any case, taken literally: ``%`` and ``_`` are no wildcards), those
        starting with it first. Only ever the user's contacts."""
        return await storage.contacts_matching(self.ctx.db.pool, user_id, query, limit)

    async def conversation_for(
        self, user_id: uuid.UUID, conversation_id: uuid.UUID
    ) -> tuple[str, list[uuid.UUID]] | None:
        """The conversation's kind (``direct`` or ``group``) and members, if ``user_id`` is one of them."""
        pool = self.ctx.db.pool
        if await storage.role_of(pool, conversation_id, user_id) is None:
            return None
        kind = await storage.conversation_kind(pool, conversation_id)
        return str(kind), await storage.member_ids(pool, conversation_id)

    async def add_call_entry(
        self,
        db: asyncpg.Connection,
        conversation_id: uuid.UUID,
        sender_id: uuid.UUID,
        entry: CallEntry,
        *,
        also_lock: Iterable[uuid.UUID] = (),
    ) -> streams.DurableDelivery:
        """Post a call's entry into the conversation's timeline, inside the caller's transaction (it is
        a message like any other: seq, unread counts, ``message.new`` to every member). Publish the
        delivery after the commit.

        Locks in the messenger's order — the conversation row, then the streams of its members and of
        ``also_lock`` (whoever the caller will append to next in this transaction) — so it cannot
        deadlock with a message sent at the same moment. Call it before any other append."""
        stored = await storage.insert_message(
            db,
            conversation_id,
            sender_id,
            f"call:{entry.call_id}",
            None,
            None,
            None,
            self.ctx.clock.now(),
            call=entry,
        )
        members = await storage.member_ids(db, conversation_id)
        await streams.lock(db, [*members, *also_lock])
        return await self._emit(db, members, MessageNew(message=stored))

    # --- for the agents module: agents as members of conversations ------------------------------------
    # The messenger stores which agents are in a conversation and the messages they write; who may add
    # one, when it answers and what it says are the agents module's (docs/agents.md).

    async def add_agent(
        self, user_id: uuid.UUID, conversation_id: uuid.UUID, agent_id: uuid.UUID
    ) -> Conversation:
        """``user_id`` (a member, the agent's owner: the caller checked that) adds the agent; every
        member gets ``conversation.updated``. Adding it again changes nothing."""
        async with self.ctx.db.pool.acquire() as db, db.transaction():
            await storage.lock_conversation_kind(db, conversation_id)
            await self._member(db, conversation_id, user_id)
            if not await storage.add_agent(db, conversation_id, agent_id, user_id):
                view = await storage.conversation_of(db, user_id, conversation_id)
                assert view is not None
                return view
            members = await storage.member_ids(db, conversation_id)
            deliveries, views = await self._view_for_all(db, conversation_id, members)
        await self._publish(deliveries)
        return views[user_id]

    async def remove_agent(
        self, user_id: uuid.UUID, conversation_id: uuid.UUID, agent_id: uuid.UUID
    ) -> Conversation:
        """Whoever added the agent, or a group's admin, removes it; every member gets
        ``conversation.updated``."""
        async with self.ctx.db.pool.acquire() as db, db.transaction():
            kind = await storage.lock_conversation_kind(db, conversation_id)
            role = await self._member(db, conversation_id, user_id)
            added_by = await storage.agent_added_by(db, conversation_id, agent_id)
            if added_by is None:
                raise SocketError(NOT_FOUND, "No such agent in the conversation.", {"field": "agent_id"})
            if added_by != user_id and not (kind == "group" and role in ("owner", "admin")):
                raise SocketError(FORBIDDEN, "Only whoever added the agent, or a group admin, removes it.")
            await storage.remove_agent(db, conversation_id, agent_id)
            members = await storage.member_ids(db, conversation_id)
            deliveries, views = await self._view_for_all(db, conversation_id, members)
        await self._publish(deliveries)
        return views[user_id]

    async def agent_direct(self, owner: uuid.UUID, agent_id: uuid.UUID) -> Conversation:
        """The owner's 1:1 with the agent: a direct conversation whose only user member is the owner,
        keyed ``agent:<agent id>`` (one per agent); created on first use."""
        key = f"agent:{agent_id}"
        deliveries: list[streams.DurableDelivery] = []
        async with self.ctx.db.pool.acquire() as db, db.transaction():
            conversation_id = await storage.create_direct(db, key, owner)
            if conversation_id is not None:
                await storage.insert_direct_members(db, conversation_id, [owner])
                await storage.add_agent(db, conversation_id, agent_id, owner)
                deliveries, views = await self._view_for_all(db, conversation_id, [owner])
                view: Conversation | None = views[owner]
            else:
                conversation_id = await storage.direct_conversation_id(db, key)
                assert conversation_id is not None
                await storage.lock_conversation_kind(db, conversation_id)
                if await storage.add_agent(db, conversation_id, agent_id, owner):  # it had been removed
                    deliveries, views = await self._view_for_all(db, conversation_id, [owner])
                    view = views.get(owner)
                else:
                    view = await storage.conversation_of(db, owner, conversation_id)
        await self._publish(deliveries)
        if view is None:
            raise _not_found()
        return view

    async def agents_of(self, conversation_id: uuid.UUID) -> tuple[list[ConversationAgent], uuid.UUID | None]:
        """The conversation's agents, and the agent whose 1:1 it is (if it is one)."""
        pool = self.ctx.db.pool
        key: str | None = await pool.fetchval(
            "SELECT direct_key FROM conversations WHERE id = $1", conversation_id
        )
        own = uuid.UUID(key.removeprefix("agent:")) if key and key.startswith("agent:") else None
        return (await storage.agents_in(pool, [conversation_id])).get(conversation_id, []), own

    async def claim_agent_run(self, conversation_id: uuid.UUID, agent_id: uuid.UUID) -> bool:
        now = self.ctx.clock.now()
        return await storage.claim_agent_run(
            self.ctx.db.pool, conversation_id, agent_id, now, now - _AGENT_RUN_STALE
        )

    async def release_agent_run(self, conversation_id: uuid.UUID, agent_id: uuid.UUID) -> None:
        await storage.release_agent_run(self.ctx.db.pool, conversation_id, agent_id)

    async def recent_messages(self, conversation_id: uuid.UUID, limit: int) -> list[tuple[str, Message]]:
        """The conversation's last ``limit`` messages, oldest first, with their authors' names."""
        return await storage.recent_messages(self.ctx.db.pool, conversation_id, limit)

    async def members_of(self, conversation_id: uuid.UUID) -> list[uuid.UUID]:
        return await storage.member_ids(self.ctx.db.pool, conversation_id)

    async def post_as_agent(
        self, conversation_id: uuid.UUID, agent: MessageAgent, text: str, client_msg_id: str
    ) -> Message:
        """Post the agent's message (no ``sender_id``): ``message.new`` to every member, as any message."""
        async with self.ctx.db.pool.acquire() as db, db.transaction():
            stored = await storage.insert_message(
                db,
                conversation_id,
                None,  # no sender: the agent wrote it
                client_msg_id,
                text[: self.settings.messenger_max_text],
                None,
                None,
                self.ctx.clock.now(),
                agent=agent,
            )
            members = await storage.member_ids(db, conversation_id)
            delivery = await self._emit(db, members, MessageNew(message=stored))
        await self.ctx.events.publish_durable(delivery)
        self._announce_new(stored, members)
        return stored
