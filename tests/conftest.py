from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest

from kintsugi_rt.settings import Settings
from loadtests.openai_sim import OpenAISimulator, SimConfig
from tests.coturn import Coturn, running_coturn
from tests.support import PostgresServer, RedisServer, make_settings


@pytest.fixture(scope="session")
async def postgres() -> AsyncIterator[PostgresServer]:
    server = PostgresServer()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture(scope="session")
async def database_url(postgres: PostgresServer) -> AsyncIterator[str]:
    """One fresh database for this test run, dropped at the end."""
    dsn = await postgres.create_database()
    yield dsn
    await postgres.drop_database(dsn)


@pytest.fixture(scope="session")
async def redis_server() -> AsyncIterator[RedisServer]:
    server = RedisServer()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture(scope="session")
def coturn() -> Iterator[Coturn]:
    """A real coturn on loopback for the session: ``coturn.url`` (turn:...?transport=udp), ``.secret``."""
    with running_coturn() as server:
        yield server


@pytest.fixture
def settings_for(database_url: str, tmp_path: Path) -> Callable[..., Settings]:
    """Settings for one test: the run's database, a private data dir, and any overrides."""

    def build(**overrides: str) -> Settings:
        return make_settings(overrides, DATABASE_URL=database_url, KINTSUGI_DATA_DIR=str(tmp_path / "data"))

    return build


@pytest.fixture
async def sim() -> AsyncIterator[OpenAISimulator]:
    """The OpenAI-compatible upstream simulator, on a free port; ``sim.base_url`` ends in /v1."""
    simulator = OpenAISimulator(SimConfig())
    simulator.base_url = await simulator.start()  # type: ignore[attr-defined]
    yield simulator
    await simulator.stop()


@pytest.fixture
async def http() -> AsyncIterator[Callable[[str], httpx.AsyncClient]]:
    clients: list[httpx.AsyncClient] = []

    def open_client(base_url: str) -> httpx.AsyncClient:
        client = httpx.AsyncClient(base_url=base_url, timeout=10)
        clients.append(client)
        return client

    yield open_client
    for client in clients:
        await client.aclose()
