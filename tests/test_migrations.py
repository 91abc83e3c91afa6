"""The migration runner against real, fresh PostgreSQL databases."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from kintsugi_rt.db.migrations import (
    MigrationError,
    apply_migrations,
    default_migrations_dir,
    load_migrations,
    migrate,
    pending_migrations,
)
from tests.support import PostgresServer


@pytest.fixture
async def fresh_dsn(postgres: PostgresServer) -> AsyncIterator[str]:
    dsn = await postgres.create_database()
    yield dsn
    await postgres.drop_database(dsn)


def write(directory: Path, name: str, sql: str) -> None:
    directory.mkdir(exist_ok=True)
    (directory / name).write_text(sql)


async def recorded(dsn: str) -> list[tuple[int, str]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT version, name FROM schema_migrations ORDER BY version")
    finally:
        await conn.close()
    return [(row["version"], row["name"]) for row in rows]


async def test_project_migrations_apply_once(fresh_dsn: str) -> None:
    files = load_migrations(default_migrations_dir())
    assert files, "the project ships migrations"
    first = await migrate(fresh_dsn)
    second = await migrate(fresh_dsn)
    assert [m.name for m in first] == [m.name for m in files]
    assert second == []
    assert await recorded(fresh_dsn) == [(m.version, m.name) for m in files]
    conn = await asyncpg.connect(fresh_dsn)
    try:
        assert await pending_migrations(conn, files) == []
    finally:
        await conn.close()


async def test_two_processes_migrating_at_once_apply_each_file_once(fresh_dsn: str) -> None:
    env = {**os.environ, "DATABASE_URL": fresh_dsn, "ENVIRONMENT": "test", "JWT_SECRET": "s" * 40}
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "kintsugi_rt",
            "migrate",
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        for _ in range(2)
    ]
    outputs = await asyncio.gather(*(p.communicate() for p in procs))
    assert [p.returncode for p in procs] == [0, 0], outputs
    files = load_migrations(default_migrations_dir())
    assert await recorded(fresh_dsn) == [(m.version, m.name) for m in files]
    applying = sum(out.count(b"migration.applying") for out, _ in outputs)
    assert applying == len(files)


async def test_concurrent_runners_in_one_process(fresh_dsn: str, tmp_path: Path) -> None:
    write(tmp_path / "m", "0001_slow.sql", "CREATE TABLE slow (id int); SELECT pg_sleep(0.3);")
    write(tmp_path / "m", "0002_more.sql", "CREATE TABLE more_things (id int);")
    results = await asyncio.gather(*(migrate(fresh_dsn, tmp_path / "m") for _ in range(4)))
    assert sorted(len(r) for r in results) == [0, 0, 0, 2]


async def test_edited_applied_migration_is_an_error(fresh_dsn: str, tmp_path: Path) -> None:
    directory = tmp_path / "m"
    write(directory, "0001_things.sql", "CREATE TABLE things (id int);")
    await migrate(fresh_dsn, directory)
    write(directory, "0001_things.sql", "CREATE TABLE things (id bigint);")
    with pytest.raises(MigrationError, match="0001_things.sql: changed after it was applied"):
        await migrate(fresh_dsn, directory)


async def test_a_failing_migration_applies_nothing(fresh_dsn: str, tmp_path: Path) -> None:
    directory = tmp_path / "m"
    write(directory, "0001_good.sql", "CREATE TABLE good (id int);")
    write(directory, "0002_bad.sql", "CREATE TABLE broken (id nosuchtype);")
    with pytest.raises(asyncpg.PostgresError):
        await migrate(fresh_dsn, directory)
    conn = await asyncpg.connect(fresh_dsn)
    try:
        assert await conn.fetchval("SELECT to_regclass('good')") is None
        assert await conn.fetchval("SELECT to_regclass('schema_migrations')") is None
    finally:
        await conn.close()


async def test_new_files_apply_in_order_after_old_ones(fresh_dsn: str, tmp_path: Path) -> None:
    directory = tmp_path / "m"
    write(directory, "0001_a.sql", "CREATE TABLE a (id int);")
    await migrate(fresh_dsn, directory)
    write(directory, "0003_c.sql", "ALTER TABLE b ADD COLUMN c int;")
    write(directory, "0002_b.sql", "CREATE TABLE b (id int);")
    applied = await migrate(fresh_dsn, directory)
    assert [m.name for m in applied] == ["0002_b.sql", "0003_c.sql"]


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (["1_short.sql"], "named NNNN_description.sql"),
        (["0001_Upper.sql"], "named NNNN_description.sql"),
        (["0001_a.sql", "0001_b.sql"], "version 1 is used by"),
    ],
)
def test_bad_file_sets(names: list[str], message: str, tmp_path: Path) -> None:
    for name in names:
        write(tmp_path, name, "SELECT 1;")
    with pytest.raises(MigrationError, match=message):
        load_migrations(tmp_path)


async def test_pending_before_anything_ran(fresh_dsn: str) -> None:
    files = load_migrations(default_migrations_dir())
    conn = await asyncpg.connect(fresh_dsn)
    try:
        assert await pending_migrations(conn, files) == files
        await apply_migrations(conn, files[:0])
        assert await pending_migrations(conn, files) == files
    finally:
        await conn.close()
