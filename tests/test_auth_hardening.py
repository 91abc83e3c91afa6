"""Auth hardening (issue #10, part C): refresh races, email normalisation, no-store token responses,
per-(email, IP) login limits and bounded password hashing. Real HTTP, real PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import unicodedata
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import httpx
import pytest
from argon2 import PasswordHasher

from kintsugi_rt.auth.passwords import Passwords
from kintsugi_rt.auth.service import AuthService
from kintsugi_rt.db.migrations import apply_migrations, default_migrations_dir, load_migrations
from kintsugi_rt.settings import Settings
from tests.support import PostgresServer, RedisServer, serve, serve_node
from tests.test_auth import PASSWORD, Http, assert_error, bearer, new_email, register
from tests.wsclient import Socket

NO_LIMIT = "100000/1m"


def redis_extra(backend: str, redis_server: RedisServer) -> dict[str, str]:
    if backend == "memory":
        return {}
    return {"REDIS_URL": redis_server.url, "REDIS_KEY_PREFIX": f"t{secrets.token_hex(4)}:"}


def from_ip(ip: str) -> dict[str, str]:
    """The test server is uvicorn with proxy headers on, trusting 127.0.0.1: this sets the client IP."""
    return {"X-Forwarded-For": ip}


async def login(client: httpx.AsyncClient, email: str, password: str, ip: str = "") -> httpx.Response:
    body = {"email": email, "password": password}
    return await client.post("/api/auth/login", json=body, headers=from_ip(ip) if ip else None)


# --- 8. concurrent refreshes of one token ------------------------------------------------------


async def test_concurrent_refreshes_of_one_token_have_one_winner_and_revoke_the_family(
    settings_for: Callable[..., Settings], http: Http
) -> None:
    limits = {"AUTH_RATE_LIMIT_IP": NO_LIMIT, "AUTH_RATE_LIMIT_EMAIL_IP": NO_LIMIT}
    async with serve(settings_for(**limits)) as url:
        client = http(url)
        email = (await register(client))["user"]["email"]
        for round_ in range(24):
            pair = (await login(client, email, PASSWORD)).json()
            racers = 2 + round_ % 4
            responses = await asyncio.gather(
                *(
                    client.post("/api/auth/refresh", json={"refresh_token": pair["refresh_token"]})
                    for _ in range(racers)
                )
            )
            winners = [r for r in responses if r.status_code == 200]
            assert len(winners) == 1, [r.text for r in responses]
            for loser in responses:
                if loser.status_code != 200:
                    assert_error(loser, 401, "refresh_token_reused")
            winner = winners[0].json()
            assert_error(
                await client.post("/api/auth/refresh", json={"refresh_token": winner["refresh_token"]}),
                401,
                "invalid_refresh_token",
            )
            me = await client.get("/api/auth/me", headers=bearer(winner["access_token"]))
            assert_error(me, 401, "session_revoked")


async def test_a_lost_refresh_race_closes_the_familys_sockets(settings_for: Callable[..., Settings]) -> None:
    async with serve_node(settings_for()) as node, httpx.AsyncClient(base_url=node.url, timeout=10) as client:
        pair = await register(client)
        sock = await Socket.open(node.ws_url, pair["access_token"])
        await sock.expect("hello")
        responses = await asyncio.gather(
            *(
                client.post("/api/auth/refresh", json={"refresh_token": pair["refresh_token"]})
                for _ in range(3)
            )
        )
        assert sorted(r.status_code for r in responses) == [200, 401, 401]
        assert await sock.closed_with() == 4401


# --- 9. Unicode normalisation of emails --------------------------------------------------------


def nfc_and_nfd_email() -> tuple[str, str]:
    nfc = unicodedata.normalize("NFC", f"josé.{secrets.token_hex(4)}@example.com")
    nfd = unicodedata.normalize("NFD", nfc)
    assert nfc != nfd
    return nfc, nfd


async def test_nfc_and_nfd_spellings_of_an_email_are_one_account(
    settings_for: Callable[..., Settings], http: Http
) -> None:
    async with serve(settings_for()) as url:
        client = http(url)
        nfc, nfd = nfc_and_nfd_email()
        registered = await register(client, nfd.upper())
        assert registered["user"]["email"] == nfc
        again = await client.post(
            "/api/auth/register", json={"email": nfc, "password": PASSWORD, "display_name": "Twin"}
        )
        assert_error(again, 409, "email_taken")
        for spelling in (nfc, nfd, nfc.upper()):
            response = await login(client, spelling, PASSWORD)
            assert response.status_code == 200, response.text
            assert response.json()["user"]["id"] == registered["user"]["id"]


async def test_rate_limits_count_every_spelling_of_an_email_together(
    settings_for: Callable[..., Settings], http: Http
) -> None:
    async with serve(settings_for(AUTH_RATE_LIMIT_EMAIL="2/1m", AUTH_RATE_LIMIT_EMAIL_IP="2/1m")) as url:
        client = http(url)
        nfc, nfd = nfc_and_nfd_email()
        assert (await login(client, nfc, "wrong password")).status_code == 401
        assert (await login(client, nfd, "wrong password")).status_code == 401
        assert_error(await login(client, nfc.upper(), "wrong password"), 429, "rate_limited")


async def test_login_with_an_invalid_email_is_just_invalid_credentials(
    settings_for: Callable[..., Settings], http: Http
) -> None:
    """Not a 422: a login must not reveal which inputs pass validation."""
    async with serve(settings_for()) as url:
        client = http(url)
        unknown = await login(client, new_email(), PASSWORD)
        for email in ("not-an-email", "a..b@example.com", "x" * 300 + "@example.com", "@"):
            response = await login(client, email, PASSWORD)
            assert_error(response, 401, "invalid_credentials")
            assert response.content == unknown.content


@contextlib.asynccontextmanager
async def database_before_0008(postgres: PostgresServer) -> AsyncIterator[str]:
    """A fresh database migrated up to (not including) 0008."""
    dsn = await postgres.create_database()
    try:
        conn = await asyncpg.connect(dsn)
        try:
            earlier = [m for m in load_migrations(default_migrations_dir()) if m.version < 8]
            await apply_migrations(conn, earlier)
        finally:
            await conn.close()
        yield dsn
    finally:
        await postgres.drop_database(dsn)


async def test_migration_normalises_stored_emails(
    postgres: PostgresServer, settings_for: Callable[..., Settings], http: Http
) -> None:
    legacy_nfc, legacy_nfd = nfc_and_nfd_email()
    twin_nfc, twin_nfd = nfc_and_nfd_email()
    password_hash = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash(PASSWORD)
    async with database_before_0008(postgres) as dsn:
        conn = await asyncpg.connect(dsn)
        try:
            insert = (
                "INSERT INTO users (email, display_name, password_hash) VALUES ($1, 'A', $2) RETURNING id"
            )
            legacy_id = await conn.fetchval(insert, legacy_nfd, password_hash)
            # The bug this fixes: one address registered twice. The migration cannot merge them.
            twins = [await conn.fetchval(insert, email, password_hash) for email in (twin_nfc, twin_nfd)]
            async with serve(settings_for(DATABASE_URL=dsn)) as url:  # applies 0008 at start
                client = http(url)
                for spelling in (legacy_nfc, legacy_nfd):
                    response = await login(client, spelling, PASSWORD)
                    assert response.status_code == 200, response.text
                    assert response.json()["user"]["id"] == str(legacy_id)
                assert (await login(client, twin_nfd, PASSWORD)).json()["user"]["id"] == str(twins[0])
            stored = {row["id"]: row["email"] for row in await conn.fetch("SELECT id, email FROM users")}
        finally:
            await conn.close()
    assert stored == {legacy_id: legacy_nfc, twins[0]: twin_nfc, twins[1]: twin_nfd}


# --- 10. token responses are not cached --------------------------------------------------------


def assert_not_cacheable(response: httpx.Response) -> None:
    assert response.headers.get("cache-control") == "no-store", response.headers
    assert response.headers.get("pragma") == "no-cache", response.headers


async def test_token_responses_forbid_caching(settings_for: Callable[..., Settings], http: Http) -> None:
    async with serve(settings_for()) as url:
        client = http(url)
        email = new_email()
        registered = await client.post(
            "/api/auth/register", json={"email": email, "password": PASSWORD, "display_name": "A"}
        )
        assert registered.status_code == 201
        logged_in = await login(client, email, PASSWORD)
        assert logged_in.status_code == 200
        refreshed = await client.post(
            "/api/auth/refresh", json={"refresh_token": logged_in.json()["refresh_token"]}
        )
        assert refreshed.status_code == 200
        for response in (registered, logged_in, refreshed):
            assert_not_cacheable(response)


# --- 11. per-(email, IP) login limit -----------------------------------------------------------


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_wrong_passwords_from_one_ip_do_not_lock_the_account_out_elsewhere(
    backend: str, settings_for: Callable[..., Settings], http: Http, redis_server: RedisServer
) -> None:
    """Default limits: 10 attempts per (email, IP) in 10 min, 100 per email in 1 h."""
    async with serve(settings_for(**redis_extra(backend, redis_server))) as url:
        client = http(url)
        email = (await register(client))["user"]["email"]
        for _ in range(10):
            assert (await login(client, email, "wrong password", ip="203.0.113.7")).status_code == 401
        assert_error(await login(client, email, "wrong password", ip="203.0.113.7"), 429, "rate_limited")
        assert_error(await login(client, email, PASSWORD, ip="203.0.113.7"), 429, "rate_limited")
        assert (await login(client, email, PASSWORD, ip="198.51.100.20")).status_code == 200
        # The same IP may still try other addresses (up to the per-IP limit).
        assert (await login(client, new_email(), "wrong password", ip="203.0.113.7")).status_code == 401


async def test_the_loose_per_email_cap_counts_only_attempts_the_tight_limits_let_through(
    settings_for: Callable[..., Settings], http: Http
) -> None:
    limits = {"AUTH_RATE_LIMIT_EMAIL": "5/1h", "AUTH_RATE_LIMIT_EMAIL_IP": "3/10m"}
    async with serve(settings_for(**limits)) as url:
        client = http(url)
        email = new_email()
        for attempt in range(8):  # 3 counted, then 5 refused by the (email, IP) limit and not counted
            status = (await login(client, email, "wrong password", ip="203.0.113.1")).status_code
            assert status == (401 if attempt < 3 else 429)
        for _ in range(2):
            assert (await login(client, email, "wrong password", ip="203.0.113.2")).status_code == 401
        # 5 counted for this email from all IPs: a third IP is refused by the global cap.
        limited = await login(client, email, "wrong password", ip="203.0.113.3")
        assert_error(limited, 429, "rate_limited")
        assert 1 <= int(limited.headers["retry-after"]) <= 3600


# --- 12. bounded password hashing --------------------------------------------------------------


async def peak_hashes_in_flight(service: AuthService, work: asyncio.Future[Any]) -> int:
    """Sample ``in_flight`` until ``work`` is done; return the highest value seen."""
    peak = 0
    try:
        while not work.done():
            peak = max(peak, service.passwords.in_flight)
            await asyncio.sleep(0.0005)
    finally:
        work.cancel()  # a no-op once done; otherwise the logins must not outlive the test's client
        with contextlib.suppress(asyncio.CancelledError):
            await work
    return peak


@pytest.mark.parametrize("limit", [1, 3])
async def test_password_hashing_is_bounded_by_the_concurrency_setting(
    limit: int, settings_for: Callable[..., Settings]
) -> None:
    # Slow enough hashes that concurrent ones overlap for many samples.
    settings = settings_for(
        PASSWORD_HASH_CONCURRENCY=str(limit),
        ARGON2_TIME_COST="2",
        ARGON2_MEMORY_KIB="16384",
        AUTH_RATE_LIMIT_IP=NO_LIMIT,
        AUTH_RATE_LIMIT_EMAIL_IP=NO_LIMIT,
    )
    async with serve_node(settings) as node, httpx.AsyncClient(base_url=node.url, timeout=30) as client:
        service = node.services.auth
        assert isinstance(service, AuthService)
        email = (await register(client))["user"]["email"]
        logins = asyncio.gather(*(login(client, email, PASSWORD) for _ in range(12)))
        peak = await peak_hashes_in_flight(service, logins)
        assert all(response.status_code == 200 for response in logins.result())
        assert service.passwords.in_flight == 0
    assert peak <= limit
    assert peak >= min(limit, 2), "the sampling missed the hashes, or they never overlapped"


async def test_a_cancelled_hash_keeps_its_slot_until_its_thread_ends(
    settings_for: Callable[..., Settings],
) -> None:
    """A thread cannot be stopped: a caller that gives up must not let a new hash start beside it."""
    passwords = Passwords(settings_for(PASSWORD_HASH_CONCURRENCY="1", ARGON2_MEMORY_KIB="65536"))
    abandoned = asyncio.create_task(passwords.hash("a password nobody waits for"))
    while passwords.in_flight == 0:
        await asyncio.sleep(0.001)
    abandoned.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await abandoned
    assert passwords.in_flight == 1  # still hashing in its thread
    next_hash = await passwords.hash("the next password")  # waits for that slot, then runs alone
    assert next_hash.startswith("$argon2id$")
    assert passwords.in_flight == 0
