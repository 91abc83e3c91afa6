"""Forward-only SQL migrations.

Files are named ``NNNN_description.sql`` and applied in number order. One run takes a transaction,
holds a PostgreSQL advisory lock for it (so nodes starting together apply each file once), applies
what is missing and records each file's SHA-256. A recorded file whose text changed is an error:
the fix for a shipped migration is a new migration.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from kintsugi_rt.logs import get_logger

log = get_logger(__name__)

# Arbitrary but fixed: every node must use the same key.
MIGRATION_LOCK_KEY = 0x4B494E5453554749  # "KINTSUGI"
_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

_CREATE_LEDGER = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY,
    name       text        NOT NULL,
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


class MigrationError(RuntimeError):
    """The migration files and the database disagree."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str
    checksum: str


def default_migrations_dir() -> Path:
    """``kintsugi_rt/_migrations`` in an installed wheel, the repository's ``migrations/`` otherwise."""
    package = Path(__file__).resolve().parent.parent
    bundled = package / "_migrations"
    return bundled if bundled.is_dir() else package.parent / "migrations"


def load_migrations(directory: Path) -> list[Migration]:
    found: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _FILE_NAME.match(path.name)
        if not match:
            raise MigrationError(f"{path.name}: migration files are named NNNN_description.sql")
        version = int(match.group(1))
        if version in found:
            raise MigrationError(f"{path.name}: version {version} is used by {found[version].name} too")
        raw = path.read_bytes()
        found[version] = Migration(version, path.name, raw.decode("utf-8"), hashlib.sha256(raw).hexdigest())
    return [found[v] for v in sorted(found)]


async def apply_migrations(conn: asyncpg.Connection, migrations: list[Migration]) -> list[Migration]:
    """Apply what is missing, all in one transaction; return what was applied now."""
    applied_now: list[Migration] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK_KEY)
        await conn.execute(_CREATE_LEDGER)
        recorded = {
            row["version"]: row
            for row in await conn.fetch("SELECT version, name, checksum FROM schema_migrations")
        }
        for migration in migrations:
            row = recorded.get(migration.version)
            if row is not None:
                if row["checksum"] != migration.checksum:
                    raise MigrationError(
                        f"{migration.name}: changed after it was applied (recorded as {row['name']}); "
                        "write a new migration instead of editing an applied one"
                    )
                continue
            log.info("migration.applying", version=migration.version, name=migration.name)
            await conn.execute(migration.sql)
            await conn.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                migration.version,
                migration.name,
                migration.checksum,
            )
            applied_now.append(migration)
        known = {m.version for m in migrations}
        unknown = sorted(set(recorded) - known)
        if unknown:
            log.warning("migration.database_ahead", versions=unknown)
    return applied_now


async def pending_migrations(conn: asyncpg.Connection, migrations: list[Migration]) -> list[Migration]:
    """Migrations not yet recorded; every one of them when the ledger does not exist."""
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    if not exists:
        return list(migrations)
    recorded = {row["version"] for row in await conn.fetch("SELECT version FROM schema_migrations")}
    return [m for m in migrations if m.version not in recorded]


async def migrate(dsn: str, directory: Path | None = None) -> list[Migration]:
    conn = await asyncpg.connect(dsn)
    try:
        return await apply_migrations(conn, load_migrations(directory or default_migrations_dir()))
    finally:
        await conn.close()
