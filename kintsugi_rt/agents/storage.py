"""SQL for agents: the agent rows and their immutable versions. Every query is parameterised; the
config is stored as jsonb with its endpoint secrets already encrypted (service.py)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeAlias

import asyncpg
import msgspec

Executor: TypeAlias = "asyncpg.Connection | asyncpg.Pool"

# The unique index on lower(handle) of live agents (migrations/0014_agents.sql).
HANDLE_INDEX = "agents_handle_key"


@dataclass(frozen=True, slots=True)
class AgentRow:
    id: uuid.UUID
    owner_id: uuid.UUID
    handle: str
    version: int
    version_id: uuid.UUID
    config: dict[str, Any]
    created_at: datetime
    updated_at: datetime


_COLUMNS = """
    a.id, a.owner_id, a.handle, v.version, v.id AS version_id, v.config, a.created_at, a.updated_at
"""


def _row(row: Any) -> AgentRow:
    config: dict[str, Any] = msgspec.json.decode(row["config"])
    return AgentRow(
        id=row["id"],
        owner_id=row["owner_id"],
        handle=row["handle"],
        version=row["version"],
        version_id=row["version_id"],
        config=config,
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _json(config: dict[str, Any]) -> str:
    return msgspec.json.encode(config).decode()


async def create(
    db: asyncpg.Connection, owner_id: uuid.UUID, handle: str, config: dict[str, Any]
) -> AgentRow:
    """A new agent at version 1. Raises ``UniqueViolationError`` (``HANDLE_INDEX``) for a taken handle."""
    agent_id, version_id = uuid.uuid4(), uuid.uuid4()
    await db.execute(
        "INSERT INTO agents (id, owner_id, handle, current_version) VALUES ($1, $2, $3, 1)",
        agent_id,
        owner_id,
        handle,
    )
    await db.execute(
        "INSERT INTO agent_versions (id, agent_id, version, config) VALUES ($1, $2, 1, $3::jsonb)",
        version_id,
        agent_id,
        _json(config),
    )
    found = await current(db, owner_id, agent_id)
    assert found is not None
    return found


async def current(
    db: Executor, owner_id: uuid.UUID, agent_id: uuid.UUID, *, lock: bool = False
) -> AgentRow | None:
    """The owner's live agent at its current version (row-locked when ``lock``)."""
    row = await db.fetchrow(
        f"""
        SELECT {_COLUMNS} FROM agents a
        JOIN agent_versions v ON v.agent_id = a.id AND v.version = a.current_version
        WHERE a.id = $1 AND a.owner_id = $2 AND a.deleted_at IS NULL
        {"FOR UPDATE OF a" if lock else ""}
        """,  # noqa: S608 - fixed text
        agent_id,
        owner_id,
    )
    return None if row is None else _row(row)


async def at_version(db: Executor, owner_id: uuid.UUID, agent_id: uuid.UUID, version: int) -> AgentRow | None:
    row = await db.fetchrow(
        f"""
        SELECT {_COLUMNS} FROM agents a
        JOIN agent_versions v ON v.agent_id = a.id AND v.version = $3
        WHERE a.id = $1 AND a.owner_id = $2 AND a.deleted_at IS NULL
        """,  # noqa: S608 - fixed text
        agent_id,
        owner_id,
        version,
    )
    return None if row is None else _row(row)


async def by_version_id(db: Executor, version_id: uuid.UUID) -> AgentRow | None:
    """A version by its id, even of a deleted agent (a running chat keeps its version)."""
    row = await db.fetchrow(
        f"""
        SELECT {_COLUMNS} FROM agent_versions v JOIN agents a ON a.id = v.agent_id WHERE v.id = $1
        """,  # noqa: S608 - fixed text
        version_id,
    )
    return None if row is None else _row(row)


async def owned(db: Executor, owner_id: uuid.UUID) -> list[AgentRow]:
    rows = await db.fetch(
        f"""
        SELECT {_COLUMNS} FROM agents a
        JOIN agent_versions v ON v.agent_id = a.id AND v.version = a.current_version
        WHERE a.owner_id = $1 AND a.deleted_at IS NULL
        ORDER BY a.created_at, a.id
        """,  # noqa: S608 - fixed text
        owner_id,
    )
    return [_row(r) for r in rows]


async def add_version(db: asyncpg.Connection, agent: AgentRow, handle: str, config: dict[str, Any]) -> None:
    """The next version of a (locked) agent, made current. Raises ``UniqueViolationError``
    (``HANDLE_INDEX``) for a taken handle."""
    version = agent.version + 1
    await db.execute(
        "INSERT INTO agent_versions (id, agent_id, version, config) VALUES ($1, $2, $3, $4::jsonb)",
        uuid.uuid4(),
        agent.id,
        version,
        _json(config),
    )
    await db.execute(
        "UPDATE agents SET current_version = $2, handle = $3, updated_at = now() WHERE id = $1",
        agent.id,
        version,
        handle,
    )


async def soft_delete(db: Executor, owner_id: uuid.UUID, agent_id: uuid.UUID) -> bool:
    status: str = await db.execute(
        "UPDATE agents SET deleted_at = now() WHERE id = $1 AND owner_id = $2 AND deleted_at IS NULL",
        agent_id,
        owner_id,
    )
    return status == "UPDATE 1"


async def media_owner_kind(db: Executor, media_id: uuid.UUID) -> tuple[uuid.UUID, str] | None:
    row = await db.fetchrow("SELECT owner_id, kind FROM media WHERE id = $1", media_id)
    return None if row is None else (row["owner_id"], row["kind"])


async def version_configs(db: Executor, after: uuid.UUID | None, limit: int) -> list[tuple[uuid.UUID, str]]:
    """A page of (version id, config json) in id order, for ``kintsugi-rt agents rekey``."""
    rows = await db.fetch(
        "SELECT id, config::text AS config FROM agent_versions WHERE $1::uuid IS NULL OR id > $1 "
        "ORDER BY id LIMIT $2",
        after,
        limit,
    )
    return [(r["id"], r["config"]) for r in rows]


async def replace_config(db: Executor, version_id: uuid.UUID, config: dict[str, Any]) -> None:
    """Only for re-encrypting secrets under a new key: the same config, other ciphertexts."""
    await db.execute("UPDATE agent_versions SET config = $2::jsonb WHERE id = $1", version_id, _json(config))


# --- runs (agent.chat.*) ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunRow:
    id: uuid.UUID
    agent_id: uuid.UUID
    version_id: uuid.UUID
    owner_id: uuid.UUID
    status: str
    history: list[dict[str, Any]]
    prompt_tokens: int
    completion_tokens: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class StepRow:
    seq: int
    tool: str
    arguments: Any
    status: str
    duration_ms: int | None
    summary: str | None
    created_at: datetime


_RUN_COLUMNS = (
    "id, agent_id, version_id, owner_id, status, history::text AS history, prompt_tokens, "
    "completion_tokens, created_at, updated_at"
)


def _run(row: Any, *, with_history: bool = True) -> RunRow:
    history: list[dict[str, Any]] = msgspec.json.decode(row["history"]) if with_history else []
    return RunRow(
        id=row["id"],
        agent_id=row["agent_id"],
        version_id=row["version_id"],
        owner_id=row["owner_id"],
        status=row["status"],
        history=history,
        prompt_tokens=row["prompt_tokens"],
        completion_tokens=row["completion_tokens"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


async def create_run(
    db: Executor,
    run_id: uuid.UUID,
    agent_id: uuid.UUID,
    version_id: uuid.UUID,
    owner_id: uuid.UUID,
    history: list[dict[str, Any]],
) -> None:
    await db.execute(
        "INSERT INTO agent_runs (id, agent_id, version_id, owner_id, status, history) "
        "VALUES ($1, $2, $3, $4, 'running', $5::jsonb)",
        run_id,
        agent_id,
        version_id,
        owner_id,
        msgspec.json.encode(history).decode(),
    )


async def get_run(
    db: Executor, owner_id: uuid.UUID, run_id: uuid.UUID, *, lock: bool = False
) -> RunRow | None:
    row = await db.fetchrow(
        f"SELECT {_RUN_COLUMNS} FROM agent_runs WHERE id = $1 AND owner_id = $2"  # noqa: S608 - fixed text
        + (" FOR UPDATE" if lock else ""),
        run_id,
        owner_id,
    )
    return None if row is None else _run(row)


async def restart_run(db: Executor, run_id: uuid.UUID, history: list[dict[str, Any]]) -> None:
    await db.execute(
        "UPDATE agent_runs SET status = 'running', history = $2::jsonb, updated_at = now() WHERE id = $1",
        run_id,
        msgspec.json.encode(history).decode(),
    )


async def finish_run(
    db: Executor,
    run_id: uuid.UUID,
    *,
    status: str,
    history: list[dict[str, Any]],
    prompt_tokens: int,
    completion_tokens: int,
) -> None:
    await db.execute(
        "UPDATE agent_runs SET status = $2, history = $3::jsonb, prompt_tokens = prompt_tokens + $4, "
        "completion_tokens = completion_tokens + $5, updated_at = now() WHERE id = $1",
        run_id,
        status,
        msgspec.json.encode(history).decode(),
        prompt_tokens,
        completion_tokens,
    )


async def list_runs(
    db: Executor, owner_id: uuid.UUID, agent_id: uuid.UUID | None, limit: int
) -> list[RunRow]:
    rows = await db.fetch(
        f"SELECT {_RUN_COLUMNS} FROM agent_runs "  # noqa: S608 - fixed text
        "WHERE owner_id = $1 AND ($2::uuid IS NULL OR agent_id = $2) "
        "ORDER BY created_at DESC, id DESC LIMIT $3",
        owner_id,
        agent_id,
        limit,
    )
    return [_run(r, with_history=False) for r in rows]


async def next_step_seq(db: Executor, run_id: uuid.UUID) -> int:
    value: int = await db.fetchval(
        "SELECT coalesce(max(seq), 0) + 1 FROM agent_run_steps WHERE run_id = $1", run_id
    )
    return value


async def add_step(
    db: Executor,
    run_id: uuid.UUID,
    seq: int,
    *,
    tool: str,
    arguments: Any,
    status: str,
    duration_ms: int | None,
    summary: str | None,
) -> None:
    await db.execute(
        "INSERT INTO agent_run_steps (run_id, seq, tool, arguments, status, duration_ms, summary) "
        "VALUES ($1, $2, $3, $4::jsonb, $5, $6, $7)",
        run_id,
        seq,
        tool,
        msgspec.json.encode(arguments).decode(),
        status,
        duration_ms,
        summary,
    )


async def run_steps(db: Executor, run_id: uuid.UUID) -> list[StepRow]:
    rows = await db.fetch(
        "SELECT seq, tool, arguments::text AS arguments, status, duration_ms, summary, created_at "
        "FROM agent_run_steps WHERE run_id = $1 ORDER BY seq",
        run_id,
    )
    return [
        StepRow(
            seq=r["seq"],
            tool=r["tool"],
            arguments=msgspec.json.decode(r["arguments"]) if r["arguments"] is not None else None,
            status=r["status"],
            duration_ms=r["duration_ms"],
            summary=r["summary"],
            created_at=r["created_at"],
        )
        for r in rows
    ]
