"""The connection pool, over ``DATABASE_URL`` or an embedded PostgreSQL."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from kintsugi_rt.db.embedded import EmbeddedPostgres
from kintsugi_rt.logs import get_logger
from kintsugi_rt.settings import Settings

log = get_logger(__name__)

EMBEDDED_DATABASE_NAME = "kintsugi"


@dataclass(slots=True)
class Database:
    pool: asyncpg.Pool
    dsn: str
    embedded: EmbeddedPostgres | None = None

    @classmethod
    async def open(cls, settings: Settings) -> Database:
        embedded: EmbeddedPostgres | None = None
        dsn = settings.database_url
        if dsn is None:
            embedded = EmbeddedPostgres(settings.data_dir / "postgres")
            await embedded.start()
            dsn = await embedded.ensure_database(EMBEDDED_DATABASE_NAME)
        try:
            pool = await asyncpg.create_pool(
                dsn,
                min_size=settings.database_pool_min,
                max_size=settings.database_pool_max,
                command_timeout=30,
            )
        except BaseException:
            if embedded is not None:
                await embedded.stop()
            raise
        log.info("database.connected", embedded=embedded is not None)
        return cls(pool=pool, dsn=dsn, embedded=embedded)

    async def close(self) -> None:
        await self.pool.close()
        if self.embedded is not None:
            await self.embedded.stop()
