"""SQL for chats, message trees and the usage ledger. Every query is parameterised and scoped to a user."""

from __future__ import annotations

import html
import uuid
from datetime import datetime
from typing import Any, TypeAlias

import asyncpg

from kintsugi_rt.chat.frames import ChatInfo, MessageInfo, SearchHit

Executor: TypeAlias = "asyncpg.Connection | asyncpg.Pool"

_CHAT_COLUMNS = "id, title, model, system_prompt, active_leaf_id, created_at, updated_at"
_MESSAGE_FIELDS = (
    "id",
    "parent_id",
    "role",
    "content",
    "status",
    "created_at",
    "model",
    "finish_reason",
    "error_code",
    "tokens",
)
_MESSAGE_COLUMNS = ", ".join(_MESSAGE_FIELDS)
_M_MESSAGE_COLUMNS = ", ".join(f"m.{c}" for c in _MESSAGE_FIELDS)


def _chat(row: Any) -> ChatInfo:
    return ChatInfo(
        id=row["id"],
        title=row["title"],
        model=row["model"],
        system_prompt=row["system_prompt"],
        active_leaf_id=row["active_leaf_id"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _message(row: Any) -> MessageInfo:
    return MessageInfo(
        id=row["id"],
        parent_id=row["parent_id"],
        role=row["role"],
        content=row["content"],
        status=row["status"],
        created_at=row["created_at"],
        model=row["model"],
        finish_reason=row["finish_reason"],
        error_code=row["error_code"],
    )


async def create_chat(
    db: Executor, user_id: uuid.UUID, model: str, title: str, system_prompt: str | None
) -> ChatInfo:
    row = await db.fetchrow(
        f"INSERT INTO chats (user_id, model, title, system_prompt) VALUES ($1, $2, $3, $4) "  # noqa: S608
        f"RETURNING {_CHAT_COLUMNS}",
        user_id,
        model,
        title,
        system_prompt,
    )
    return _chat(row)


async def get_chat(
    db: Executor, user_id: uuid.UUID, chat_id: uuid.UUID, *, lock: bool = False
) -> ChatInfo | None:
    """The chat if it is this user's; ``None`` otherwise (never tells which)."""
    suffix = " FOR UPDATE" if lock else ""
    row = await db.fetchrow(
        f"SELECT {_CHAT_COLUMNS} FROM chats WHERE id = $1 AND user_id = $2{suffix}",  # noqa: S608
        chat_id,
        user_id,
    )
    return None if row is None else _chat(row)


async def list_chats(
    db: Executor, user_id: uuid.UUID, before: tuple[datetime, uuid.UUID] | None, limit: int
) -> list[ChatInfo]:
    rows = await db.fetch(
        f"SELECT {_CHAT_COLUMNS} FROM chats WHERE user_id = $1 "  # noqa: S608
        "AND ($2::timestamptz IS NULL OR (updated_at, id) < ($2, $3)) "
        "ORDER BY updated_at DESC, id DESC LIMIT $4",
        user_id,
        before[0] if before else None,
        before[1] if before else None,
        limit,
    )
    return [_chat(r) for r in rows]


async def rename_chat(db: Executor, user_id: uuid.UUID, chat_id: uuid.UUID, title: str) -> ChatInfo | None:
    row = await db.fetchrow(
        f"UPDATE chats SET title = $3, updated_at = now() WHERE id = $1 AND user_id = $2 "  # noqa: S608
        f"RETURNING {_CHAT_COLUMNS}",
        chat_id,
        user_id,
        title,
    )
    return None if row is None else _chat(row)


async def set_title_if_empty(db: Executor, chat_id: uuid.UUID, title: str) -> ChatInfo | None:
    row = await db.fetchrow(
        f"UPDATE chats SET title = $2 WHERE id = $1 AND title = '' RETURNING {_CHAT_COLUMNS}",  # noqa: S608
        chat_id,
        title,
    )
    return None if row is None else _chat(row)


async def delete_chat(db: Executor, user_id: uuid.UUID, chat_id: uuid.UUID) -> bool:
    status: str = await db.execute("DELETE FROM chats WHERE id = $1 AND user_id = $2", chat_id, user_id)
    return status.endswith(" 1")


async def set_active_leaf(db: Executor, chat_id: uuid.UUID, leaf_id: uuid.UUID) -> ChatInfo:
    row = await db.fetchrow(
        f"UPDATE chats SET active_leaf_id = $2, updated_at = now() WHERE id = $1 "  # noqa: S608
        f"RETURNING {_CHAT_COLUMNS}",
        chat_id,
        leaf_id,
    )
    return _chat(row)


async def get_message(
    db: Executor, user_id: uuid.UUID, message_id: uuid.UUID
) -> tuple[MessageInfo, uuid.UUID] | None:
    """A message of one of this user's chats, with its chat id."""
    row = await db.fetchrow(
        f"SELECT m.chat_id, {_M_MESSAGE_COLUMNS} "  # noqa: S608
        "FROM chat_messages m JOIN chats c ON c.id = m.chat_id WHERE m.id = $1 AND c.user_id = $2",
        message_id,
        user_id,
    )
    return None if row is None else (_message(row), row["chat_id"])


async def message_in_chat(db: Executor, chat_id: uuid.UUID, message_id: uuid.UUID) -> bool:
    found = await db.fetchval(
        "SELECT 1 FROM chat_messages WHERE id = $1 AND chat_id = $2", message_id, chat_id
    )
    return found is not None


async def streaming_answers(db: Executor, user_id: uuid.UUID, chat_id: uuid.UUID) -> list[uuid.UUID]:
    """The answers still streaming in this chat, if it is this user's."""
    rows = await db.fetch(
        "SELECT m.id FROM chat_messages m JOIN chats c ON c.id = m.chat_id "
        "WHERE c.id = $1 AND c.user_id = $2 AND m.status = 'streaming'",
        chat_id,
        user_id,
    )
    return [row["id"] for row in rows]


async def insert_message(
    db: Executor,
    chat_id: uuid.UUID,
    parent_id: uuid.UUID | None,
    role: str,
    content: str,
    status: str,
    model: str | None,
    tokens: int,
    message_id: uuid.UUID | None = None,
) -> MessageInfo:
    row = await db.fetchrow(
        "INSERT INTO chat_messages (id, chat_id, parent_id, role, content, status, model, tokens) "  # noqa: S608
        f"VALUES (COALESCE($8, gen_random_uuid()), $1, $2, $3, $4, $5, $6, $7) RETURNING {_MESSAGE_COLUMNS}",
        chat_id,
        parent_id,
        role,
        content,
        status,
        model,
        tokens,
        message_id,
    )
    return _message(row)


async def claim(db: Executor, chat_id: uuid.UUID, abandoned_before: datetime) -> uuid.UUID | None:
    """Mark answers left 'streaming' since before ``abandoned_before`` (by a node that died: they
    will never finish) as interrupted, and return an answer still streaming in this chat, if any."""
    found: uuid.UUID | None = await db.fetchval(
        """
        WITH abandoned AS (
            UPDATE chat_messages SET status = 'error', error_code = 'interrupted', updated_at = now()
            WHERE chat_id = $1 AND status = 'streaming' AND created_at < $2
        )
        SELECT id FROM chat_messages
        WHERE chat_id = $1 AND status = 'streaming' AND created_at >= $2 LIMIT 1
        """,
        chat_id,
        abandoned_before,
    )
    return found


async def path_to(db: Executor, chat_id: uuid.UUID, leaf_id: uuid.UUID) -> list[tuple[MessageInfo, int]]:
    """Root-to-leaf messages with their token counts."""
    rows = await db.fetch(
        f"""
        WITH RECURSIVE path AS (
            SELECT {_MESSAGE_COLUMNS}, 0 AS depth FROM chat_messages WHERE id = $2 AND chat_id = $1
            UNION ALL
            SELECT {_M_MESSAGE_COLUMNS}, p.depth + 1
            FROM chat_messages m JOIN path p ON m.id = p.parent_id
        )
        SELECT * FROM path ORDER BY depth DESC
        """,  # noqa: S608
        chat_id,
        leaf_id,
    )
    return [(_message(r), r["tokens"]) for r in rows]


async def newest_leaf_under(db: Executor, message_id: uuid.UUID) -> uuid.UUID:
    """Follow the newest child from ``message_id`` down to a leaf."""
    leaf: uuid.UUID = await db.fetchval(
        """
        WITH RECURSIVE down AS (
            SELECT id FROM chat_messages WHERE id = $1
            UNION ALL
            SELECT child.id FROM down
            CROSS JOIN LATERAL (
                SELECT id FROM chat_messages WHERE parent_id = down.id ORDER BY created_at DESC LIMIT 1
            ) child
        )
        SELECT id FROM down OFFSET (SELECT count(*) - 1 FROM down)
        """,
        message_id,
    )
    return leaf


async def siblings(
    db: Executor, chat_id: uuid.UUID, messages: list[MessageInfo]
) -> dict[uuid.UUID | None, list[uuid.UUID]]:
    """For each parent of these messages (``None`` for roots): all its children, oldest first."""
    parents = [m.parent_id for m in messages if m.parent_id is not None]
    rows = await db.fetch(
        "SELECT parent_id, array_agg(id ORDER BY created_at) AS ids FROM chat_messages "
        "WHERE chat_id = $1 AND (parent_id = ANY($2::uuid[]) OR ($3 AND parent_id IS NULL)) "
        "GROUP BY parent_id",
        chat_id,
        parents,
        any(m.parent_id is None for m in messages),
    )
    return {r["parent_id"]: list(r["ids"]) for r in rows}


async def finish_message(
    db: Executor,
    message_id: uuid.UUID,
    *,
    content: str,
    status: str,
    finish_reason: str | None,
    error_code: str | None,
    tokens: int,
    prompt_tokens: int,
    completion_tokens: int,
) -> bool:
    """Store how an answer ended; ``False`` if the message is gone (its chat was deleted meanwhile)."""
    result: str = await db.execute(
        "UPDATE chat_messages SET content = $2, status = $3, finish_reason = $4, error_code = $5, "
        "tokens = $6, prompt_tokens = $7, completion_tokens = $8, updated_at = clock_timestamp() "
        "WHERE id = $1",
        message_id,
        content,
        status,
        finish_reason,
        error_code,
        tokens,
        prompt_tokens,
        completion_tokens,
    )
    return result.endswith(" 1")


async def chat_exists(db: Executor, chat_id: uuid.UUID) -> bool:
    return bool(await db.fetchval("SELECT EXISTS (SELECT 1 FROM chats WHERE id = $1)", chat_id))


async def record_usage(
    db: Executor,
    *,
    user_id: uuid.UUID,
    chat_id: uuid.UUID | None,
    message_id: uuid.UUID | None,
    purpose: str,
    model: str,
    prompt_tokens: int,
    completion_tokens: int,
    source: str,
    at: datetime,
) -> None:
    await db.execute(
        "INSERT INTO usage_ledger (user_id, chat_id, message_id, purpose, model, prompt_tokens, "
        "completion_tokens, source, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        user_id,
        chat_id,
        message_id,
        purpose,
        model,
        prompt_tokens,
        completion_tokens,
        source,
        at,
    )


async def touch_chat(db: Executor, chat_id: uuid.UUID) -> None:
    await db.execute("UPDATE chats SET updated_at = now() WHERE id = $1", chat_id)


# ts_headline marks matches with these private-use characters instead of tags; the text is then
# HTML-escaped and only they become <b>…</b>. The same characters in a message are turned into spaces
# before ts_headline sees it, so a message cannot smuggle in a marker of its own.
_START, _STOP = "\ue000", "\ue001"

_SEARCH_SQL = f"""
    WITH q AS (SELECT websearch_to_tsquery('simple', $2) AS query)
    SELECT * FROM (
        SELECT c.id AS chat_id, c.title AS chat_title, m.id AS message_id, m.created_at,
               ts_headline('simple', translate(m.content, $4, '  '), q.query,
                           'MaxWords=24, MinWords=8, StartSel={_START}, StopSel={_STOP}') AS snippet,
               ts_rank(m.search, q.query) AS rank
        FROM q, chat_messages m JOIN chats c ON c.id = m.chat_id
        WHERE c.user_id = $1 AND m.search @@ q.query
        UNION ALL
        SELECT c.id, c.title, NULL, c.created_at, translate(c.title, $4, '  '),
               ts_rank(c.search, q.query) + 1
        FROM q, chats c
        WHERE c.user_id = $1 AND c.search @@ q.query
    ) hits
    ORDER BY rank DESC, created_at DESC
    LIMIT $3
"""  # noqa: S608 - constants only


def safe_snippet(marked: str) -> str:
    """HTML whose only tags are <b>…</b> around the matches: everything else is escaped text."""
    return html.escape(marked).replace(_START, "<b>").replace(_STOP, "</b>")


async def search(db: Executor, user_id: uuid.UUID, query: str, limit: int) -> list[SearchHit]:
    rows = await db.fetch(_SEARCH_SQL, user_id, query, limit, _START + _STOP)
    return [
        SearchHit(
            chat_id=r["chat_id"],
            chat_title=r["chat_title"],
            message_id=r["message_id"],
            snippet=safe_snippet(r["snippet"]),
            created_at=r["created_at"],
        )
        for r in rows
    ]
