"""SQL for conversations, members and messages. Every query is parameterised."""

from __future__ import annotations

import uuid
from collections import defaultdict
from datetime import datetime
from typing import Any, TypeAlias

import asyncpg
import msgspec

from kintsugi_rt.messenger.frames import (
    Attachment,
    CallEntry,
    Conversation,
    ConversationAgent,
    Member,
    Message,
    MessageAgent,
    Reaction,
)

Executor: TypeAlias = "asyncpg.Connection | asyncpg.Pool"

_decode_call = msgspec.json.Decoder(CallEntry).decode
_decode_agent = msgspec.json.Decoder(MessageAgent).decode

_MESSAGE_COLUMNS = (
    "m.id, m.conversation_id, m.seq, m.sender_id, m.client_msg_id, m.created_at, m.text, m.reply_to, "
    "m.forwarded_from, m.edited_at, m.deleted_at, m.pinned_at, m.call, m.agent"
)


# Takes the conversation's next seq, marks it read for the sender and stores the message.
_INSERT_MESSAGE = (
    "WITH next AS (UPDATE conversations SET last_seq = last_seq + 1, updated_at = now() "  # noqa: S608
    "WHERE id = $1 RETURNING last_seq), "
    "sender_read AS (UPDATE conversation_members "
    "SET read_seq = GREATEST(read_seq, (SELECT last_seq FROM next)) "
    "WHERE conversation_id = $1 AND user_id = $2) "
    "INSERT INTO messages AS m (conversation_id, seq, sender_id, client_msg_id, text, reply_to, "
    "forwarded_from, created_at, call, agent_id, agent) "
    "SELECT $1, next.last_seq, $2, $3, $4, $5, $6, $7, $8, $9, $10 FROM next "
    "RETURNING " + _MESSAGE_COLUMNS
)


def _message(
    row: Any, reactions: list[Reaction] | None = None, attachments: list[Attachment] | None = None
) -> Message:
    deleted = row["deleted_at"] is not None
    return Message(
        id=row["id"],
        conversation_id=row["conversation_id"],
        seq=row["seq"],
        sender_id=row["sender_id"],
        client_msg_id=row["client_msg_id"],
        created_at=row["created_at"],
        text=None if deleted else row["text"],
        reply_to=row["reply_to"],
        forwarded_from=row["forwarded_from"],
        edited_at=row["edited_at"],
        deleted=deleted,
        pinned=row["pinned_at"] is not None,
        reactions=[] if deleted else (reactions or []),
        attachments=[] if deleted else (attachments or []),
        call=None if row["call"] is None else _decode_call(row["call"]),
        agent=None if row["agent"] is None else _decode_agent(row["agent"]),
    )


async def role_of(db: Executor, conversation_id: uuid.UUID, user_id: uuid.UUID) -> str | None:
    """The user's role in the conversation; ``None`` for a non-member (who must learn nothing more)."""
    role: str | None = await db.fetchval(
        "SELECT role FROM conversation_members WHERE conversation_id = $1 AND user_id = $2",
        conversation_id,
        user_id,
    )
    return role


async def member_ids(db: Executor, conversation_id: uuid.UUID) -> list[uuid.UUID]:
    rows = await db.fetch(
        "SELECT user_id FROM conversation_members WHERE conversation_id = $1", conversation_id
    )
    return [r["user_id"] for r in rows]


async def existing_users(db: Executor, user_ids: list[uuid.UUID]) -> list[uuid.UUID]:
    rows = await db.fetch("SELECT id FROM users WHERE id = ANY($1::uuid[])", user_ids)
    return [r["id"] for r in rows]


async def reactions_for(db: Executor, message_ids: list[uuid.UUID]) -> dict[uuid.UUID, list[Reaction]]:
    rows = await db.fetch(
        "SELECT message_id, emoji, array_agg(user_id ORDER BY created_at) AS users FROM message_reactions "
        "WHERE message_id = ANY($1::uuid[]) GROUP BY message_id, emoji ORDER BY message_id, min(created_at)",
        message_ids,
    )
    found: defaultdict[uuid.UUID, list[Reaction]] = defaultdict(list)
    for r in rows:
        found[r["message_id"]].append(Reaction(emoji=r["emoji"], user_ids=list(r["users"])))
    return found


async def attachments_for(db: Executor, message_ids: list[uuid.UUID]) -> dict[uuid.UUID, list[Attachment]]:
    rows = await db.fetch(
        "SELECT a.message_id, md.id, md.kind, md.content_type, md.size, md.filename, md.width, md.height, "
        "md.duration_ms FROM message_attachments a JOIN media md ON md.id = a.media_id "
        "WHERE a.message_id = ANY($1::uuid[]) ORDER BY a.message_id, a.position",
        message_ids,
    )
    found: defaultdict[uuid.UUID, list[Attachment]] = defaultdict(list)
    for r in rows:
        found[r["message_id"]].append(
            Attachment(
                id=r["id"],
                kind=r["kind"],
                content_type=r["content_type"],
                size=r["size"],
                filename=r["filename"],
                width=r["width"],
                height=r["height"],
                duration_ms=r["duration_ms"],
            )
        )
    return found


async def messages_where(
    db: Executor, viewer: uuid.UUID, condition: str, *args: Any, order: str, limit: int
) -> list[Message]:
    """Messages matching ``condition`` (on alias ``m``; parameters from $2), minus those the viewer hid."""
    rows = await db.fetch(
        f"SELECT {_MESSAGE_COLUMNS} FROM messages m WHERE {condition} "  # noqa: S608 - fixed fragments only
        "AND NOT EXISTS (SELECT 1 FROM message_hidden h WHERE h.user_id = $1 AND h.message_id = m.id) "
        f"ORDER BY {order} LIMIT {int(limit)}",
        viewer,
        *args,
    )
    ids = [r["id"] for r in rows]
    reactions = await reactions_for(db, ids)
    attachments = await attachments_for(db, ids)
    return [_message(r, reactions.get(r["id"]), attachments.get(r["id"])) for r in rows]


async def message(db: Executor, message_id: uuid.UUID) -> Message | None:
    row = await db.fetchrow(f"SELECT {_MESSAGE_COLUMNS} FROM messages m WHERE m.id = $1", message_id)  # noqa: S608
    if row is None:
        return None
    reactions = await reactions_for(db, [message_id])
    attachments = await attachments_for(db, [message_id])
    return _message(row, reactions.get(message_id), attachments.get(message_id))


async def sent_before(
    db: Executor, sender: uuid.UUID, conversation_id: uuid.UUID, client_msg_id: str
) -> Message | None:
    """The message this sender already sent into this conversation under ``client_msg_id`` (a retry).

    Keys are per (sender, conversation): the same key in another conversation is another message,
    so a retry never answers with a message of a conversation the sender may have left."""
    found: uuid.UUID | None = await db.fetchval(
        "SELECT id FROM messages WHERE sender_id = $1 AND conversation_id = $2 AND client_msg_id = $3",
        sender,
        conversation_id,
        client_msg_id,
    )
    return None if found is None else await message(db, found)


async def message_row(db: Executor, message_id: uuid.UUID, viewer: uuid.UUID, *, lock: bool = False) -> Any:
    """A message row, only if the viewer is a member of its conversation, with the viewer's role."""
    return await db.fetchrow(
        "SELECT m.*, cm.role FROM messages m JOIN conversation_members cm "  # noqa: S608 - fixed fragments only
        "ON cm.conversation_id = m.conversation_id AND cm.user_id = $2 WHERE m.id = $1"
        + (" FOR UPDATE OF m" if lock else ""),
        message_id,
        viewer,
    )


# Per (viewer, conversation): messages after the viewer's read mark, not theirs, not deleted —
# counted on the (conversation_id, seq) index.
UNREAD_SQL = """
    SELECT me.user_id, me.conversation_id, count(m.id) AS unread
    FROM unnest($1::uuid[], $2::uuid[]) AS p(user_id, conversation_id)
    JOIN conversation_members me ON me.user_id = p.user_id AND me.conversation_id = p.conversation_id
    JOIN messages m ON m.conversation_id = me.conversation_id AND m.seq > me.read_seq
    WHERE m.sender_id IS DISTINCT FROM me.user_id AND m.deleted_at IS NULL
    GROUP BY me.user_id, me.conversation_id
"""

_LAST_MESSAGE_SQL = f"""
    SELECT p.user_id AS viewer, {_MESSAGE_COLUMNS}
    FROM unnest($1::uuid[], $2::uuid[]) AS p(user_id, conversation_id)
    CROSS JOIN LATERAL (
        SELECT * FROM messages x WHERE x.conversation_id = p.conversation_id
        AND NOT EXISTS (SELECT 1 FROM message_hidden h WHERE h.user_id = p.user_id AND h.message_id = x.id)
        ORDER BY x.seq DESC LIMIT 1
    ) m
"""  # noqa: S608

_Pair: TypeAlias = tuple[uuid.UUID, uuid.UUID]  # (viewer, conversation id)


async def _views(
    db: Executor, conversations_by_id: dict[uuid.UUID, Any], pairs: list[_Pair]
) -> dict[_Pair, Conversation]:
    """Each viewer's own view of a conversation (read mark, unread count, the receipts they may see,
    the last message they have not hidden), in three queries however many pairs. ``conversations_by_id``
    holds the conversations' rows; pairs whose viewer is not a member are left out."""
    members = await db.fetch(
        """
        SELECT cm.conversation_id, cm.user_id, cm.role, cm.read_seq, u.display_name, u.read_receipts,
               u.handle, u.avatar_media_id
        FROM conversation_members cm JOIN users u ON u.id = cm.user_id
        WHERE cm.conversation_id = ANY($1::uuid[]) ORDER BY cm.joined_at, cm.user_id
        """,
        list(conversations_by_id),
    )
    by_conversation: defaultdict[uuid.UUID, list[Any]] = defaultdict(list)
    read_seq: dict[_Pair, int] = {}
    for m in members:
        by_conversation[m["conversation_id"]].append(m)
        read_seq[(m["user_id"], m["conversation_id"])] = m["read_seq"]
    viewers, conversation_ids = [v for v, _ in pairs], [c for _, c in pairs]
    unread = {
        (r["user_id"], r["conversation_id"]): r["unread"]
        for r in await db.fetch(UNREAD_SQL, viewers, conversation_ids)
    }
    last = {
        (r["viewer"], r["conversation_id"]): _message(r)
        for r in await db.fetch(_LAST_MESSAGE_SQL, viewers, conversation_ids)
    }
    agents = await agents_in(db, list(conversations_by_id))
    views: dict[_Pair, Conversation] = {}
    for pair in pairs:
        viewer, conversation_id = pair
        if pair not in read_seq:
            continue
        row = conversations_by_id[conversation_id]
        views[pair] = Conversation(
            id=row["id"],
            kind=row["kind"],
            title=row["title"],
            members=[
                Member(
                    user_id=m["user_id"],
                    role=m["role"],
                    display_name=m["display_name"],
                    read_seq=m["read_seq"] if (m["read_receipts"] or m["user_id"] == viewer) else None,
                    handle=m["handle"],
                    avatar_media_id=m["avatar_media_id"],
                )
                for m in by_conversation[conversation_id]
            ],
            last_seq=row["last_seq"],
            read_seq=read_seq[pair],
            unread=unread.get(pair, 0),
            created_at=row["created_at"],
            last_message=last.get(pair),
            agents=agents.get(conversation_id, []),
        )
    return views


async def conversations(
    db: Executor, viewer: uuid.UUID, ids: list[uuid.UUID] | None = None
) -> list[Conversation]:
    """The viewer's conversations (or those of ``ids`` they belong to), newest activity first."""
    rows = await db.fetch(
        """
        SELECT c.id, c.kind, c.title, c.last_seq, c.created_at
        FROM conversation_members me JOIN conversations c ON c.id = me.conversation_id
        WHERE me.user_id = $1 AND ($2::uuid[] IS NULL OR c.id = ANY($2::uuid[]))
        ORDER BY c.updated_at DESC, c.id
        """,
        viewer,
        ids,
    )
    if not rows:
        return []
    pairs = [(viewer, r["id"]) for r in rows]
    views = await _views(db, {r["id"]: r for r in rows}, pairs)
    return [views[pair] for pair in pairs if pair in views]


async def conversation_of(db: Executor, viewer: uuid.UUID, conversation_id: uuid.UUID) -> Conversation | None:
    found = await conversations(db, viewer, [conversation_id])
    return found[0] if found else None


async def conversation_views(
    db: Executor, conversation_id: uuid.UUID, viewers: list[uuid.UUID]
) -> dict[uuid.UUID, Conversation]:
    """Each viewer's own view of one conversation, in four queries however many viewers there are.
    Viewers who are not members are left out."""
    row = await db.fetchrow(
        "SELECT id, kind, title, last_seq, created_at FROM conversations WHERE id = $1", conversation_id
    )
    if row is None or not viewers:
        return {}
    views = await _views(db, {conversation_id: row}, [(v, conversation_id) for v in viewers])
    return {viewer: view for (viewer, _), view in views.items()}


async def can_see_media(db: Executor, user_id: uuid.UUID, media_id: uuid.UUID) -> bool:
    """A member of a conversation holding the media in a message that is not deleted."""
    found: bool = await db.fetchval(
        "SELECT EXISTS (SELECT 1 FROM message_attachments a JOIN messages m ON m.id = a.message_id "
        "JOIN conversation_members cm ON cm.conversation_id = m.conversation_id AND cm.user_id = $1 "
        "WHERE a.media_id = $2 AND m.deleted_at IS NULL)",
        user_id,
        media_id,
    )
    return found


async def insert_message(
    conn: asyncpg.Connection,
    conversation_id: uuid.UUID,
    sender: uuid.UUID | None,
    client_msg_id: str,
    text: str | None,
    reply_to: uuid.UUID | None,
    forwarded_from: uuid.UUID | None,
    created_at: datetime,
    call: CallEntry | None = None,
    agent: MessageAgent | None = None,
) -> Message:
    """Store a new message under the conversation's next seq, and mark it read for its sender.

    One statement: it locks the conversation row (held until commit, so seqs commit in order), and
    the fewer round trips the transaction makes after that, the shorter every sender in the
    conversation waits for the lock.
    """
    row = await conn.fetchrow(
        _INSERT_MESSAGE,
        conversation_id,
        sender,
        client_msg_id,
        text,
        reply_to,
        forwarded_from,
        created_at,
        None if call is None else msgspec.json.encode(call).decode(),
        None if agent is None else agent.agent_id,
        None if agent is None else msgspec.json.encode(agent).decode(),
    )
    if row is None:  # the caller checked membership, so the conversation exists
        raise LookupError(f"conversation {conversation_id} not found")
    return _message(row)


# --- pages of messages --------------------------------------------------------------------------


async def messages_after(
    db: Executor, viewer: uuid.UUID, conversation_id: uuid.UUID, after_seq: int, limit: int
) -> list[Message]:
    """Up to ``limit`` of the conversation's messages after ``after_seq``, oldest first."""
    return await messages_where(
        db,
        viewer,
        "m.conversation_id = $2 AND m.seq > $3",
        conversation_id,
        after_seq,
        order="m.seq",
        limit=limit,
    )


async def messages_before(
    db: Executor, viewer: uuid.UUID, conversation_id: uuid.UUID, before_seq: int, limit: int
) -> list[Message]:
    """Up to ``limit`` of the conversation's messages before ``before_seq``, newest first."""
    return await messages_where(
        db,
        viewer,
        "m.conversation_id = $2 AND m.seq < $3",
        conversation_id,
        before_seq,
        order="m.seq DESC",
        limit=limit,
    )


async def search_messages(
    db: Executor, viewer: uuid.UUID, query: str, conversation_id: uuid.UUID | None, limit: int
) -> list[Message]:
    """Full-text matches (``simple`` configuration, so any language) among the messages of the viewer's
    conversations (or of ``conversation_id`` only), newest first; deleted messages never match."""
    return await messages_where(
        db,
        viewer,
        "m.search @@ websearch_to_tsquery('simple', $2) AND m.deleted_at IS NULL "
        "AND m.conversation_id IN (SELECT conversation_id FROM conversation_members WHERE user_id = $1) "
        "AND ($3::uuid IS NULL OR m.conversation_id = $3)",
        query,
        conversation_id,
        order="m.created_at DESC",
        limit=limit,
    )


# --- conversations and members ------------------------------------------------------------------


async def create_group(db: Executor, title: str, created_by: uuid.UUID) -> uuid.UUID:
    conversation_id: uuid.UUID = await db.fetchval(
        "INSERT INTO conversations (kind, title, created_by) VALUES ('group', $1, $2) RETURNING id",
        title,
        created_by,
    )
    return conversation_id


async def insert_group_members(
    db: Executor, conversation_id: uuid.UUID, owner: uuid.UUID, members: list[uuid.UUID]
) -> None:
    """A new group's first members: its owner, then the others as plain members."""
    await db.executemany(
        "INSERT INTO conversation_members (conversation_id, user_id, role) VALUES ($1, $2, $3)",
        [(conversation_id, owner, "owner"), *((conversation_id, u, "member") for u in members)],
    )


async def create_direct(db: Executor, direct_key: str, created_by: uuid.UUID) -> uuid.UUID | None:
    """The new direct conversation's id; ``None`` when the pair's one already exists (the unique key on
    ``direct_key`` makes two concurrent creates agree)."""
    conversation_id: uuid.UUID | None = await db.fetchval(
        "INSERT INTO conversations (kind, direct_key, created_by) VALUES ('direct', $1, $2) "
        "ON CONFLICT (direct_key) DO NOTHING RETURNING id",
        direct_key,
        created_by,
    )
    return conversation_id


async def insert_direct_members(db: Executor, conversation_id: uuid.UUID, user_ids: list[uuid.UUID]) -> None:
    await db.executemany(
        "INSERT INTO conversation_members (conversation_id, user_id, role) VALUES ($1, $2, 'member')",
        [(conversation_id, u) for u in user_ids],
    )


async def direct_conversation_id(db: Executor, direct_key: str) -> uuid.UUID | None:
    conversation_id: uuid.UUID | None = await db.fetchval(
        "SELECT id FROM conversations WHERE direct_key = $1", direct_key
    )
    return conversation_id


async def lock_conversation_kind(db: Executor, conversation_id: uuid.UUID) -> str | None:
    """The conversation's kind, locking its row until commit: membership changes of one conversation
    take turns. ``None`` when there is no such conversation."""
    kind: str | None = await db.fetchval(
        "SELECT kind FROM conversations WHERE id = $1 FOR UPDATE", conversation_id
    )
    return kind


async def conversation_kind(db: Executor, conversation_id: uuid.UUID) -> str | None:
    kind: str | None = await db.fetchval("SELECT kind FROM conversations WHERE id = $1", conversation_id)
    return kind


async def is_group(db: Executor, conversation_id: uuid.UUID) -> bool:
    found: bool | None = await db.fetchval(
        "SELECT kind = 'group' FROM conversations WHERE id = $1", conversation_id
    )
    return bool(found)


async def add_members(db: Executor, conversation_id: uuid.UUID, user_ids: list[uuid.UUID]) -> None:
    """Add plain members, each with a read mark at the conversation's last seq (no history unread)."""
    await db.executemany(
        "INSERT INTO conversation_members (conversation_id, user_id, role, read_seq) "
        "SELECT $1, $2, 'member', last_seq FROM conversations WHERE id = $1",
        [(conversation_id, u) for u in user_ids],
    )


async def hand_over_ownership(db: Executor, conversation_id: uuid.UUID, leaving: uuid.UUID) -> None:
    """Make the longest-standing admin (else member) other than ``leaving`` the group's owner."""
    await db.execute(
        "UPDATE conversation_members SET role = 'owner' "
        "WHERE conversation_id = $1 AND user_id = (SELECT user_id FROM conversation_members "
        "WHERE conversation_id = $1 AND user_id <> $2 "
        "ORDER BY role = 'admin' DESC, joined_at LIMIT 1)",
        conversation_id,
        leaving,
    )


async def delete_member(db: Executor, conversation_id: uuid.UUID, user_id: uuid.UUID) -> None:
    await db.execute(
        "DELETE FROM conversation_members WHERE conversation_id = $1 AND user_id = $2",
        conversation_id,
        user_id,
    )


async def set_role(db: Executor, conversation_id: uuid.UUID, user_id: uuid.UUID, role: str) -> None:
    await db.execute(
        "UPDATE conversation_members SET role = $3 WHERE conversation_id = $1 AND user_id = $2",
        conversation_id,
        user_id,
        role,
    )


# --- messages -----------------------------------------------------------------------------------


async def attachment_media_ids(db: Executor, message_id: uuid.UUID) -> list[uuid.UUID]:
    """The media attached to a message, in their order."""
    rows = await db.fetch(
        "SELECT media_id FROM message_attachments WHERE message_id = $1 ORDER BY position", message_id
    )
    return [r["media_id"] for r in rows]


async def message_in_conversation(db: Executor, message_id: uuid.UUID, conversation_id: uuid.UUID) -> bool:
    found = await db.fetchval(
        "SELECT 1 FROM messages WHERE id = $1 AND conversation_id = $2", message_id, conversation_id
    )
    return found is not None


async def count_owned_media(db: Executor, media_ids: list[uuid.UUID], owner: uuid.UUID) -> int:
    """How many of ``media_ids`` are ``owner``'s own uploads."""
    count: int = await db.fetchval(
        "SELECT count(*) FROM media WHERE id = ANY($1::uuid[]) AND owner_id = $2",
        media_ids,
        owner,
    )
    return count


async def attach_media(db: Executor, message_id: uuid.UUID, media_ids: list[uuid.UUID]) -> None:
    """Attach the media to the message, keeping their order."""
    await db.executemany(
        "INSERT INTO message_attachments (message_id, media_id, position) VALUES ($1, $2, $3)",
        [(message_id, media_id, i) for i, media_id in enumerate(media_ids)],
    )


async def save_version(db: Executor, message_id: uuid.UUID, text: str | None) -> None:
    """Keep the message's text before an edit as its next version (1 for the first edit)."""
    await db.execute(
        "INSERT INTO message_versions (message_id, version, text) SELECT $1, "
        "COALESCE(MAX(version), 0) + 1, $2 FROM message_versions WHERE message_id = $1",
        message_id,
        text,
    )


async def set_message_text(db: Executor, message_id: uuid.UUID, text: str, edited_at: datetime) -> None:
    await db.execute(
        "UPDATE messages SET text = $2, edited_at = $3 WHERE id = $1",
        message_id,
        text,
        edited_at,
    )


async def hide_message_for(db: Executor, message_id: uuid.UUID, user_id: uuid.UUID) -> None:
    """Hide the message from this user only (deleting it "for me"); hiding it twice is harmless."""
    await db.execute(
        "INSERT INTO message_hidden (message_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        message_id,
        user_id,
    )


async def tombstone_message(db: Executor, message_id: uuid.UUID, deleted_at: datetime) -> None:
    """Delete the message for everyone: a tombstone with no text and no pin, its earlier versions and
    its reactions erased."""
    await db.execute(
        "UPDATE messages SET deleted_at = $2, text = NULL, pinned_at = NULL WHERE id = $1",
        message_id,
        deleted_at,
    )
    await db.execute("DELETE FROM message_versions WHERE message_id = $1", message_id)
    await db.execute("DELETE FROM message_reactions WHERE message_id = $1", message_id)


async def toggle_reaction(db: Executor, message_id: uuid.UUID, user_id: uuid.UUID, emoji: str) -> None:
    """Remove the user's reaction with this emoji if they had it, else add it."""
    removed = await db.fetchval(
        "DELETE FROM message_reactions WHERE message_id = $1 AND user_id = $2 AND emoji = $3 RETURNING 1",
        message_id,
        user_id,
        emoji,
    )
    if removed is None:
        await db.execute(
            "INSERT INTO message_reactions (message_id, user_id, emoji) VALUES ($1, $2, $3)",
            message_id,
            user_id,
            emoji,
        )


async def set_pinned_at(db: Executor, message_id: uuid.UUID, pinned_at: datetime | None) -> None:
    """Pin the message (at ``pinned_at``) or, with ``None``, unpin it."""
    await db.execute("UPDATE messages SET pinned_at = $2 WHERE id = $1", message_id, pinned_at)


# --- read state and presence --------------------------------------------------------------------


async def advance_read_mark(
    db: Executor, conversation_id: uuid.UUID, user_id: uuid.UUID, seq: int
) -> int | None:
    """Move the member's read mark forward to ``seq`` (never past the conversation's last seq).

    The new mark; ``None`` when it did not move (it never moves back) or the user is not a member."""
    moved: int | None = await db.fetchval(
        "UPDATE conversation_members cm SET read_seq = LEAST($3, c.last_seq) FROM conversations c "
        "WHERE cm.conversation_id = $1 AND cm.user_id = $2 AND c.id = cm.conversation_id "
        "AND cm.read_seq < LEAST($3, c.last_seq) RETURNING cm.read_seq",
        conversation_id,
        user_id,
        seq,
    )
    return moved


async def shares_read_receipts(db: Executor, user_id: uuid.UUID) -> bool:
    """Whether the user lets others see their read mark."""
    shares: bool | None = await db.fetchval("SELECT read_receipts FROM users WHERE id = $1", user_id)
    return bool(shares)


async def set_read_receipts(db: Executor, user_id: uuid.UUID, enabled: bool) -> None:
    await db.execute("UPDATE users SET read_receipts = $2 WHERE id = $1", user_id, enabled)


async def audience_of(db: Executor, user_id: uuid.UUID) -> set[uuid.UUID]:
    """The users who share a conversation with ``user_id`` (themselves included): who sees their presence."""
    rows = await db.fetch(
        "SELECT DISTINCT other.user_id FROM conversation_members mine "
        "JOIN conversation_members other ON other.conversation_id = mine.conversation_id "
        "WHERE mine.user_id = $1",
        user_id,
    )
    return {r["user_id"] for r in rows}


async def shares_conversation(db: Executor, user_id: uuid.UUID, other_id: uuid.UUID) -> bool:
    """Whether the two users are members of one conversation (at least)."""
    found: bool = await db.fetchval(
        "SELECT EXISTS (SELECT 1 FROM conversation_members mine "
        "JOIN conversation_members other ON other.conversation_id = mine.conversation_id "
        "WHERE mine.user_id = $1 AND other.user_id = $2)",
        user_id,
        other_id,
    )
    return found


def like_escape(text: str) -> str:
    """``text`` as a literal inside a LIKE pattern (with ``ESCAPE '\\'``): ``%``, ``_`` and ``\\``
    match themselves."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def contacts_matching(db: Executor, user_id: uuid.UUID, query: str, limit: int) -> list[uuid.UUID]:
    """The users sharing a conversation with ``user_id`` (not themselves) whose display name or handle
    contains ``query``, any case: those starting with it first, then by name. Only ever the user's
    contacts, never the whole users table."""
    literal = like_escape(query)
    rows = await db.fetch(
        """
        SELECT u.id FROM users u
        WHERE u.id IN (
            SELECT other.user_id FROM conversation_members mine
            JOIN conversation_members other ON other.conversation_id = mine.conversation_id
            WHERE mine.user_id = $1 AND other.user_id <> $1
        )
        AND (u.display_name ILIKE $2 ESCAPE '\\' OR u.handle ILIKE $2 ESCAPE '\\')
        ORDER BY (u.display_name ILIKE $3 ESCAPE '\\' OR coalesce(u.handle ILIKE $3 ESCAPE '\\', false))
                 DESC, lower(u.display_name), u.id
        LIMIT $4
        """,
        user_id,
        f"%{literal}%",
        f"{literal}%",
        limit,
    )
    return [r["id"] for r in rows]


# --- agents in conversations (the agents module's table; the messenger only lists them) -------------


async def agents_in(
    db: Executor, conversation_ids: list[uuid.UUID]
) -> dict[uuid.UUID, list[ConversationAgent]]:
    """The live agents of these conversations, with their current name and handle."""
    rows = await db.fetch(
        """
        SELECT ca.conversation_id, ca.agent_id, ca.added_by, a.handle, v.config->>'name' AS name
        FROM conversation_agents ca JOIN agents a ON a.id = ca.agent_id AND a.deleted_at IS NULL
        JOIN agent_versions v ON v.agent_id = a.id AND v.version = a.current_version
        WHERE ca.conversation_id = ANY($1::uuid[]) ORDER BY ca.created_at, ca.agent_id
        """,
        conversation_ids,
    )
    found: defaultdict[uuid.UUID, list[ConversationAgent]] = defaultdict(list)
    for r in rows:
        found[r["conversation_id"]].append(
            ConversationAgent(
                agent_id=r["agent_id"], name=r["name"], handle=r["handle"], added_by=r["added_by"]
            )
        )
    return found


async def add_agent(
    db: Executor, conversation_id: uuid.UUID, agent_id: uuid.UUID, added_by: uuid.UUID
) -> bool:
    added: uuid.UUID | None = await db.fetchval(
        "INSERT INTO conversation_agents (conversation_id, agent_id, added_by) VALUES ($1, $2, $3) "
        "ON CONFLICT DO NOTHING RETURNING agent_id",
        conversation_id,
        agent_id,
        added_by,
    )
    return added is not None


async def agent_added_by(db: Executor, conversation_id: uuid.UUID, agent_id: uuid.UUID) -> uuid.UUID | None:
    added_by: uuid.UUID | None = await db.fetchval(
        "SELECT added_by FROM conversation_agents WHERE conversation_id = $1 AND agent_id = $2",
        conversation_id,
        agent_id,
    )
    return added_by


async def remove_agent(db: Executor, conversation_id: uuid.UUID, agent_id: uuid.UUID) -> None:
    await db.execute(
        "DELETE FROM conversation_agents WHERE conversation_id = $1 AND agent_id = $2",
        conversation_id,
        agent_id,
    )


async def claim_agent_run(
    db: Executor, conversation_id: uuid.UUID, agent_id: uuid.UUID, now: datetime, stale_before: datetime
) -> bool:
    """Mark a run of the agent in the conversation as going, unless one is (on any node)."""
    claimed: uuid.UUID | None = await db.fetchval(
        "UPDATE conversation_agents SET run_started_at = $3 WHERE conversation_id = $1 AND agent_id = $2 "
        "AND (run_started_at IS NULL OR run_started_at < $4) RETURNING agent_id",
        conversation_id,
        agent_id,
        now,
        stale_before,
    )
    return claimed is not None


async def release_agent_run(db: Executor, conversation_id: uuid.UUID, agent_id: uuid.UUID) -> None:
    await db.execute(
        "UPDATE conversation_agents SET run_started_at = NULL WHERE conversation_id = $1 AND agent_id = $2",
        conversation_id,
        agent_id,
    )


async def recent_messages(db: Executor, conversation_id: uuid.UUID, limit: int) -> list[tuple[str, Message]]:
    """The last ``limit`` messages not deleted, oldest first, each with its author's display name."""
    rows = await db.fetch(
        f"SELECT {_MESSAGE_COLUMNS}, coalesce(u.display_name, '') AS author FROM messages m "  # noqa: S608
        "LEFT JOIN users u ON u.id = m.sender_id WHERE m.conversation_id = $1 AND m.deleted_at IS NULL "
        "ORDER BY m.seq DESC LIMIT $2",
        conversation_id,
        limit,
    )
    return [(r["author"], _message(r)) for r in reversed(rows)]
