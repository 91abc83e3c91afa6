"""Peak memory of one node under a flood of concurrent logins (default argon2id: t=3, m=64 MiB, p=4).

    .venv/bin/python -m loadtests.login_flood --logins 40
    .venv/bin/python -m loadtests.login_flood --logins 40 --hash-concurrency 1

Starts ``kintsugi-rt serve`` as its own process on a fresh PostgreSQL database (TEST_DATABASE_URL, else
127.0.0.1:5432, else an embedded server; dropped at the end), registers one account, lets the node
settle, then fires ``--logins`` logins for that account at once and samples the node's RSS with psutil
every few milliseconds. Rate limits are lifted so every login reaches argon2.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import signal
import statistics
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import psutil

from tests.support import PostgresServer, free_port, spawn_server, wait_ready

_MIB = 1024 * 1024
_NO_LIMIT = "1000000/1m"


@dataclass
class Flood:
    statuses: dict[int, int]
    latencies_ms: list[float]
    seconds: float


class RssSampler:
    """Polls a process's RSS in the background and keeps the highest value seen."""

    def __init__(self, pid: int, interval: float) -> None:
        self._process = psutil.Process(pid)
        self._interval = interval
        self.peak = 0
        self._task: asyncio.Task[None] | None = None

    def current(self) -> int:
        return self._process.memory_info().rss

    async def _poll(self) -> None:
        while True:
            self.peak = max(self.peak, self.current())
            await asyncio.sleep(self._interval)

    def start(self) -> None:
        self.peak = self.current()
        self._task = asyncio.create_task(self._poll())

    async def stop(self) -> int:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        return self.peak


@contextlib.asynccontextmanager
async def node(hash_concurrency: int | None) -> AsyncIterator[tuple[str, int]]:
    """A spawned server on a fresh database; yields its base URL and pid."""
    postgres = PostgresServer()
    await postgres.start()
    dsn = await postgres.create_database()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ARGON2_", "PASSWORD_HASH_", "AUTH_"))}
    env.update(
        {
            "PORT": str(port),
            "DATABASE_URL": dsn,
            "ENVIRONMENT": "test",
            "JWT_SECRET": secrets.token_urlsafe(48),
            "LOG_LEVEL": "warning",
            "AUTH_RATE_LIMIT_IP": _NO_LIMIT,
            "AUTH_RATE_LIMIT_EMAIL": _NO_LIMIT,
            "AUTH_RATE_LIMIT_EMAIL_IP": _NO_LIMIT,
        }
    )
    if hash_concurrency is not None:
        env["PASSWORD_HASH_CONCURRENCY"] = str(hash_concurrency)
    proc = await spawn_server(env)
    url = f"http://127.0.0.1:{port}"
    try:
        await wait_ready(url, proc)
        yield url, proc.pid
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), timeout=30)
        await postgres.drop_database(dsn)
        await postgres.stop()


async def _login(client: httpx.AsyncClient, body: dict[str, str]) -> tuple[int, float]:
    started = time.perf_counter()
    response = await client.post("/api/auth/login", json=body)
    return response.status_code, (time.perf_counter() - started) * 1000


async def flood(url: str, logins: int) -> Flood:
    limits = httpx.Limits(max_connections=logins, max_keepalive_connections=logins)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        body = {"email": f"flood-{secrets.token_hex(4)}@example.com", "password": secrets.token_urlsafe(16)}
        registered = await client.post("/api/auth/register", json={**body, "display_name": "Flood"})
        registered.raise_for_status()
        started = time.perf_counter()
        results = await asyncio.gather(*(_login(client, body) for _ in range(logins)))
        seconds = time.perf_counter() - started
    statuses: dict[int, int] = {}
    for status, _ in results:
        statuses[status] = statuses.get(status, 0) + 1
    return Flood(statuses, sorted(ms for _, ms in results), seconds)


async def run(logins: int, hash_concurrency: int | None, settle: float) -> None:
    async with node(hash_concurrency) as (url, pid):
        sampler = RssSampler(pid, interval=0.005)
        await asyncio.sleep(settle)
        before = sampler.current()
        sampler.start()
        result = await flood(url, logins)
        peak = await sampler.stop()
        await asyncio.sleep(settle)
        after = sampler.current()
    latencies = result.latencies_ms
    setting = "default" if hash_concurrency is None else str(hash_concurrency)
    print(f"logins={logins} PASSWORD_HASH_CONCURRENCY={setting} statuses={result.statuses}")
    print(
        f"RSS before={before / _MIB:.0f} MiB peak={peak / _MIB:.0f} MiB (+{(peak - before) / _MIB:.0f}) "
        f"after={after / _MIB:.0f} MiB"
    )
    print(
        f"flood took {result.seconds:.2f} s; login p50={statistics.median(latencies):.0f} ms "
        f"max={latencies[-1]:.0f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--logins", type=int, default=40, help="concurrent logins (40)")
    parser.add_argument(
        "--hash-concurrency", type=int, default=None, help="PASSWORD_HASH_CONCURRENCY (server default)"
    )
    parser.add_argument("--settle", type=float, default=2.0, help="seconds of quiet before and after (2)")
    args = parser.parse_args()
    asyncio.run(run(args.logins, args.hash_concurrency, args.settle))


if __name__ == "__main__":
    main()
