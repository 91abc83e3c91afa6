"""Compare login time for a wrong password and for an unknown email (they must be alike).

    python -m loadtests.auth_timing --url http://127.0.0.1:8080 --rounds 50

The server must allow the attempts: run it with a generous AUTH_RATE_LIMIT_IP and AUTH_RATE_LIMIT_EMAIL.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import time

import httpx


async def _time_login(client: httpx.AsyncClient, email: str, password: str) -> float:
    started = time.perf_counter()
    response = await client.post("/api/auth/login", json={"email": email, "password": password})
    elapsed = time.perf_counter() - started
    if response.status_code != 401:
        raise SystemExit(f"expected 401, got {response.status_code}: {response.text}")
    return elapsed * 1000


def _summary(name: str, samples: list[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[int(len(ordered) * 0.95) - 1]
    return f"{name:<15} n={len(samples)} p50={statistics.median(ordered):.1f} ms p95={p95:.1f} ms"


async def run(url: str, rounds: int) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        email = f"timing-{secrets.token_hex(4)}@example.com"
        password = secrets.token_urlsafe(16)
        response = await client.post(
            "/api/auth/register", json={"email": email, "password": password, "display_name": "Timing"}
        )
        response.raise_for_status()
        wrong: list[float] = []
        unknown: list[float] = []
        for _ in range(rounds):  # interleaved, so drift affects both alike
            wrong.append(await _time_login(client, email, "not-the-password"))
            unknown.append(await _time_login(client, f"nobody-{secrets.token_hex(4)}@example.com", password))
    print(_summary("wrong password", wrong))
    print(_summary("unknown email", unknown))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="http://127.0.0.1:8080")
    parser.add_argument("--rounds", type=int, default=50)
    args = parser.parse_args()
    asyncio.run(run(args.url, args.rounds))


if __name__ == "__main__":
    main()
