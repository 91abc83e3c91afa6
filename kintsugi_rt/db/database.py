"""The connection pool, over ``DATABASE_URL`` or an embedded PostgreSQL.

Every wait on the database is bounded (``DATABASE_*_TIMEOUT``), so a request stuck behind an outage
ends with ``unavailable`` in seconds instead of hanging the socket whose frames queue behind it.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from kintsugi_rt.db.embedded import EmbeddedPostgres
from kintsugi_rt.logs import get_logger
from kintsugi_rt.settings import Settings

log = get_logger(__name__)

EMBEDDED_DATABASE_NAME = "kintsugi"


class BoundedPool(asyncpg.Pool):  # type: ignore[misc]
    """asyncpg's pool whose every acquire waits at most ``acquire_timeout`` (connecting included).

    asyncpg only bounds an acquire when the caller passes ``timeout=``, and its own shortcuts
    (``pool.fetch``, ``pool.execute``…) never do; overriding ``acquire`` covers them all.
    """

    def __init__(self, *args: Any, acquire_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.acquire_timeout = acquire_timeout

    def acquire(self, *, timeout: float | None = None) -> Any:
        return super().acquire(timeout=self.acquire_timeout if timeout is None else timeout)


async def open_pool(dsn: str, settings: Settings) -> asyncpg.Pool:
    pool = BoundedPool(
        dsn,
        acquire_timeout=settings.database_acquire_timeout.total_seconds(),
        min_size=settings.database_pool_min,
        max_size=settings.database_pool_max,
        max_queries=50_000,
        max_inactive_connection_lifetime=300.0,
        loop=None,
        connection_class=asyncpg.Connection,
        record_class=asyncpg.Record,
        # Passed on to asyncpg.connect for every connection the pool opens.
        timeout=settings.database_connect_timeout.total_seconds(),
        command_timeout=settings.database_statement_timeout.total_seconds(),
    )
    await pool
    return pool


class Database:
    """The node's PostgreSQL: built with the settings (no I/O), opened by ``open()`` at start.

    Services keep the ``Database`` and take ``pool`` when they run a query, so they can be built
    before the server starts (and for ``kintsugi-rt protocol-doc``, which never connects).
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._pool: asyncpg.Pool | None = None
        self.dsn = settings.database_url or ""
        self.embedded: EmbeddedPostgres | None = None

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("the database is not open yet (Database.open() runs at start)")
        return self._pool

    async def open(self) -> None:
        settings = self._settings
        if settings.database_url is None:
            self.embedded = EmbeddedPostgres(settings.data_dir / "postgres")
            await self.embedded.start()
            self.dsn = await self.embedded.ensure_database(EMBEDDED_DATABASE_NAME)
        try:
            self._pool = await open_pool(self.dsn, settings)
        except BaseException:
            if self.embedded is not None:
                await self.embedded.stop()
            raise
        log.info("database.connected", embedded=self.embedded is not None)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
        if self.embedded is not None:
            await self.embedded.stop()
