"""The auth REST surface over real HTTP against a real PostgreSQL."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import asyncpg
import httpx
import jwt
import pytest

from kintsugi_rt.clock import ManualClock
from kintsugi_rt.settings import Settings
from tests.support import serve

Http = Callable[[str], httpx.AsyncClient]
PASSWORD = "correct horse battery"


def new_email() -> str:
    return f"user-{secrets.token_hex(5)}@example.com"


async def register(client: httpx.AsyncClient, email: str | None = None, **extra: Any) -> dict[str, Any]:
    body = {"email": email or new_email(), "password": PASSWORD, "display_name": "Test User", **extra}
    response = await client.post("/api/auth/register", json=body)
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()
    return data


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    return body["error"]  # type: ignore[no-any-return]


async def test_register_then_me(settings_for: Callable[..., Settings], http: Http) -> None:
    async with serve(settings_for()) as url:
        client = http(url)
        email = new_email()
        data = await register(client, email.upper(), display_name="  Ann   Lee ")
        assert set(data) == {
            "user",
            "access_token",
            "refresh_token",
            "expires_in",
            "refresh_expires_in",
            "token_type",
        }
        assert data["expires_in"] == 15 * 60
        assert data["user"]["email"] == email
        assert data["user"]["display_name"] == "Ann Lee"
        assert data["user"]["tier"] == "basic"

        me = await client.get("/api/auth/me", headers=bearer(data["access_token"]))
        assert me.status_code == 200
        assert me.json() == data["user"]


async def test_access_token_claims(settings_for: Callable[..., Settings], http: Http) -> None:
    settings = settings_for()
    async with serve(settings) as url:
        data = await register(http(url))
    claims = jwt.decode(data["access_token"], settings.jwt_secret, algorithms=["HS256"])
    assert {"sub", "exp", "iat", "jti", "typ", "sid"} <= set(claims)
    assert claims["typ"] == "access"
    assert claims["sub"] == data["user"]["id"]
    assert claims["exp"] - claims["iat"] == 15 * 60
    assert jwt.get_unverified_header(data["access_token"])["alg"] == "HS256"


async def test_duplicate_email_is_refused_whatever_its_case(
    settings_for: Callable[..., Settings], http: Http
) -> None:
    async with serve(settings_for()) as url:
        client = http(url)
        email = new_email()
        await register(client, email)
        response = await client.post(
            "/api/auth/register", json={"email": email.upper(), "password": PASSWORD, "display_name": "Other"}
        )
        assert_error(response, 409, "email_taken")


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"email": "not-an-email", "password": PASSWORD, "display_name": "A"}, {"email"}),
        ({"email": "a@example.com", "password": "short", "display_name": "A"}, {"password"}),
        ({"email": "a@example.com", "password": "password123", "display_name": "A"}, {"password"}),
        ({"email": "a@example.com", "password": "x" * 129 + "yz1", "display_name": "A"}, {"password"}),
        ({"email": "a@example.com", "password": PASSWORD, "display_name": "   "}, {"display_name"}),
        ({"email": "a@example.com", "password": PASSWORD, "display_name": "n" * 65}, {"display_name"}),
        ({"email": "bad", "password": "short", "display_name": ""}, {"email", "password", "display_name"}),
        ({"email": "a" * 250 + "@example.com", "password": PASSWORD, "display_name": "A"}, {"email"}),
    ],
)
async def test_weak_or_oversized_input_gets_per_field_errors(
    body: dict[str, str], fields: set[str], settings_for: Callable[..., Settings], http: Http
) -> None:
    async with serve(settings_for()) as url:
        response = await http(url).post("/api/auth/register", json=body)
        error = assert_error(response, 422, "validation_failed")
        assert set(error["fields"]) == fields


@pytest.mark.parametrize(
    ("content", "status", "code", "field"),
    [
        (b'{"email": "a@example.com", "password": "x"}', 422, "validation_failed", "display_name"),
        (b'{"email": 5, "password": "x", "display_name": "A"}', 422, "validation_failed", "email"),
        (
            b'{"email": "a@example.com", "password": "x", "display_name": "A", "admin": true}',
            422,
            "validation_failed",
            "$",
        ),
        (b"[1, 2]", 422, "validation_failed", "$"),
        (b"{not json", 400, "bad_request", None),
        (b"", 400, "bad_request", None),
    ],
)
async def test_malformed_bodies(
    content: bytes,
    status: int,
    code: str,
    field: str | None,
    settings_for: Callable[..., Settings],
    http: Http,
) -> None:
    async with serve(settings_for()) as url:
        response = await http(url).post(
            "/api/auth/register", content=content, headers={"content-type": "application/json"}
        )
        error = assert_error(response, status, code)
        if field is not None:
            assert field in error["fields"]


async def test_body_size_cap(settings_for: Callable[..., Settings], http: Http) -> None:
    async with serve(settings_for(MAX_REQUEST_BODY_BYTES="1024")) as url:
        client = http(url)
        big = {"email": "a@example.com", "password": PASSWORD, "display_name": "x" * 2000}
        assert_error(await client.post("/api/auth/register", json=big), 413, "payload_too_large")

        async def chunks() -> Any:  # no Content-Length: the cap must hold while streaming
            for _ in range(10):
                yield b" " * 512

        response = await client.post("/api/auth/register", content=chunks())
        assert_error(response, 413, "payload_too_large")


async def test_non_json_content_type(settings_for: Callable[..., Settings], http: Http) -> None:
    async with serve(settings_for()) as url:
        response = await http(url).post(
            "/api/auth/login", content=b"email=a", headers={"content-type": "text/plain"}
        )
        assert_error(response, 415, "unsupported_media_type")


async def test_login(settings_for: Callable[..., Settings], http: Http) -> None:
    async with serve(settings_for()) as url:
        client = http(url)
        email = new_email()
        registered = await register(client, email)
        response = await client.post("/api/auth/login", json={"email": email.upper(), "password": PASSWORD})
        assert response.status_code == 200
        data = response.json()
        assert data["user"] == registered["user"]
        assert data["refresh_token"] != registered["refresh_token"]
        me = await client.get("/api/auth/me", headers=bearer(data["access_token"]))
        assert me.json()["id"] == registered["user"]["id"]


async def test_wrong_password_and_unknown_email_look_the_same(
    settings_for: Callable[..., Settings], http: Http
) -> None:
    async with serve(settings_for()) as url:
        client = http(url)
        email = new_email()
        await register(client, email)
        wrong = await client.post("/api/auth/login", json={"email": email, "password": "not the password"})
        unknown = await client.post("/api/auth/login", json={"email": new_email(), "password": PASSWORD})
        assert_error(wrong, 401, "invalid_credentials")
        assert wrong.status_code == unknown.status_code
        assert wrong.content == unknown.content


async def test_password_is_rehashed_when_parameters_change(
    settings_for: Callable[..., Settings], http: Http, database_url: str
) -> None:
    email = new_email()
    async with serve(settings_for(ARGON2_TIME_COST="1")) as url:
        await register(http(url), email)
    conn = await asyncpg.connect(database_url)
    try:
        before = await conn.fetchval("SELECT password_hash FROM users WHERE email = $1", email)
        async with serve(settings_for(ARGON2_TIME_COST="2")) as url:
            response = await http(url).post("/api/auth/login", json={"email": email, "password": PASSWORD})
            assert response.status_code == 200
        after = await conn.fetchval("SELECT password_hash FROM users WHERE email = $1", email)
    finally:
        await conn.close()
    assert before.startswith("$argon2id$") and ",t=1," in before
    assert after.startswith("$argon2id$") and ",t=2," in after
    assert PASSWORD not in after


async def test_refresh_rotates(settings_for: Callable[..., Settings], http: Http) -> None:
    async with serve(settings_for()) as url:
        client = http(url)
        first = await register(client)
        response = await client.post("/api/auth/refresh", json={"refresh_token": first["refresh_token"]})
        assert response.status_code == 200
        second = response.json()
        assert second["refresh_token"] != first["refresh_token"]
        assert second["user"]["id"] == first["user"]["id"]
        assert (await client.get("/api/auth/me", headers=bearer(second["access_token"]))).status_code == 200
        third = await client.post("/api/auth/refresh", json={"refresh_token": second["refresh_token"]})
        assert third.status_code == 200


async def test_reused_refresh_token_revokes_the_family(
    settings_for: Callable[..., Settings], http: Http
) -> None:
    async with serve(settings_for()) as url:
        client = http(url)
        first = await register(client)
        other_login = (
            await client.post("/api/auth/login", json={"email": first["user"]["email"], "password": PASSWORD})
        ).json()
        second = (
            await client.post("/api/auth/refresh", json={"refresh_token": first["refresh_token"]})
        ).json()

        reuse = await client.post("/api/auth/refresh", json={"refresh_token": first["refresh_token"]})
        assert_error(reuse, 401, "refresh_token_reused")

        # The whole family is gone: the newest refresh token and its access token too.
        latest = await client.post("/api/auth/refresh", json={"refresh_token": second["refresh_token"]})
        assert_error(latest, 401, "invalid_refresh_token")
        me = await client.get("/api/auth/me", headers=bearer(second["access_token"]))
        assert_error(me, 401, "session_revoked")

        # Another login of the same user is a different family and lives on.
        assert (
            await client.get("/api/auth/me", headers=bearer(other_login["access_token"]))
        ).status_code == 200


async def test_unknown_and_expired_refresh_tokens(settings_for: Callable[..., Settings], http: Http) -> None:
    clock = ManualClock()
    async with serve(settings_for(JWT_REFRESH_EXPIRY="1h"), clock=clock) as url:
        client = http(url)
        assert_error(
            await client.post("/api/auth/refresh", json={"refresh_token": "made-up"}),
            401,
            "invalid_refresh_token",
        )
        data = await register(client)
        clock.advance(timedelta(hours=1, seconds=1))
        response = await client.post("/api/auth/refresh", json={"refresh_token": data["refresh_token"]})
        assert_error(response, 401, "refresh_token_expired")


async def test_access_token_expiry_and_forgery(settings_for: Callable[..., Settings], http: Http) -> None:
    clock = ManualClock()
    settings = settings_for()
    async with serve(settings, clock=clock) as url:
        client = http(url)
        data = await register(client)
        token = data["access_token"]
        claims = jwt.decode(token, settings.jwt_secret, algorithms=["HS256"], options={"verify_exp": False})

        assert_error(await client.get("/api/auth/me"), 401, "unauthorized")
        assert_error(
            await client.get("/api/auth/me", headers={"Authorization": "Basic abc"}), 401, "unauthorized"
        )
        assert_error(await client.get("/api/auth/me", headers=bearer("garbage")), 401, "invalid_token")
        forged = jwt.encode(claims, "another-secret-" + "y" * 40, algorithm="HS256")
        assert_error(await client.get("/api/auth/me", headers=bearer(forged)), 401, "invalid_token")
        unsigned = jwt.encode(claims, "", algorithm="none")
        assert_error(await client.get("/api/auth/me", headers=bearer(unsigned)), 401, "invalid_token")
        wrong_type = jwt.encode({**claims, "typ": "refresh"}, settings.jwt_secret, algorithm="HS256")
        assert_error(await client.get("/api/auth/me", headers=bearer(wrong_type)), 401, "invalid_token")

        clock.advance(timedelta(minutes=15))
        response = await client.get("/api/auth/me", headers=bearer(token))
        assert_error(response, 401, "token_expired")
        assert response.headers["www-authenticate"].startswith("Bearer")


async def test_logout_ends_only_this_session(settings_for: Callable[..., Settings], http: Http) -> None:
    async with serve(settings_for()) as url:
        client = http(url)
        first = await register(client)
        second = (
            await client.post("/api/auth/login", json={"email": first["user"]["email"], "password": PASSWORD})
        ).json()
        response = await client.post("/api/auth/logout", headers=bearer(first["access_token"]))
        assert response.status_code == 204
        assert_error(
            await client.get("/api/auth/me", headers=bearer(first["access_token"])), 401, "session_revoked"
        )
        assert_error(
            await client.post("/api/auth/refresh", json={"refresh_token": first["refresh_token"]}),
            401,
            "invalid_refresh_token",
        )
        assert (await client.get("/api/auth/me", headers=bearer(second["access_token"]))).status_code == 200


async def test_logout_all_ends_every_session(settings_for: Callable[..., Settings], http: Http) -> None:
    async with serve(settings_for()) as url:
        client = http(url)
        first = await register(client)
        second = (
            await client.post("/api/auth/login", json={"email": first["user"]["email"], "password": PASSWORD})
        ).json()
        bystander = await register(client)
        response = await client.post("/api/auth/logout-all", headers=bearer(second["access_token"]))
        assert response.status_code == 200
        assert response.json() == {"sessions_revoked": 2}
        for pair in (first, second):
            assert_error(
                await client.get("/api/auth/me", headers=bearer(pair["access_token"])), 401, "session_revoked"
            )
            assert_error(
                await client.post("/api/auth/refresh", json={"refresh_token": pair["refresh_token"]}),
                401,
                "invalid_refresh_token",
            )
        assert (
            await client.get("/api/auth/me", headers=bearer(bystander["access_token"]))
        ).status_code == 200


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_login_is_rate_limited_per_email(
    backend: str, settings_for: Callable[..., Settings], http: Http, redis_server: Any
) -> None:
    extra = (
        {"REDIS_URL": redis_server.url, "REDIS_KEY_PREFIX": f"t{secrets.token_hex(4)}:"}
        if backend == "redis"
        else {}
    )
    async with serve(settings_for(AUTH_RATE_LIMIT_EMAIL="3/1m", AUTH_RATE_LIMIT_IP="100/1m", **extra)) as url:
        client = http(url)
        email = new_email()
        for _ in range(3):
            assert (
                await client.post("/api/auth/login", json={"email": email, "password": "wrong one"})
            ).status_code == 401
        limited = await client.post("/api/auth/login", json={"email": email, "password": "wrong one"})
        assert_error(limited, 429, "rate_limited")
        assert 1 <= int(limited.headers["retry-after"]) <= 60
        # Another address is not affected by this one's limit.
        other = await client.post("/api/auth/login", json={"email": new_email(), "password": "wrong one"})
        assert other.status_code == 401


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_register_and_login_are_rate_limited_per_ip(
    backend: str, settings_for: Callable[..., Settings], http: Http, redis_server: Any
) -> None:
    extra = (
        {"REDIS_URL": redis_server.url, "REDIS_KEY_PREFIX": f"t{secrets.token_hex(4)}:"}
        if backend == "redis"
        else {}
    )
    async with serve(settings_for(AUTH_RATE_LIMIT_IP="4/1m", **extra)) as url:
        client = http(url)
        for _ in range(2):
            await register(client)
        for _ in range(2):
            assert (
                await client.post("/api/auth/login", json={"email": new_email(), "password": "x"})
            ).status_code == 401
        limited = await client.post(
            "/api/auth/register", json={"email": new_email(), "password": PASSWORD, "display_name": "A"}
        )
        assert_error(limited, 429, "rate_limited")
        assert int(limited.headers["retry-after"]) >= 1


async def test_rate_limit_window_reopens(settings_for: Callable[..., Settings], http: Http) -> None:
    clock = ManualClock()
    async with serve(settings_for(AUTH_RATE_LIMIT_EMAIL="1/1m"), clock=clock) as url:
        client = http(url)
        email = new_email()
        assert (
            await client.post("/api/auth/login", json={"email": email, "password": "x"})
        ).status_code == 401
        assert (
            await client.post("/api/auth/login", json={"email": email, "password": "x"})
        ).status_code == 429
        clock.advance(timedelta(seconds=61))
        assert (
            await client.post("/api/auth/login", json={"email": email, "password": "x"})
        ).status_code == 401
