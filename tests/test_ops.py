"""Probes, request ids, error shapes and CORS over real HTTP."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

import httpx
import structlog
from starlette.types import Receive, Scope, Send

from kintsugi_rt.middleware import RequestContextMiddleware
from kintsugi_rt.settings import Settings
from tests.support import serve

Http = Callable[[str], httpx.AsyncClient]


async def test_healthz_and_readyz(settings_for: Callable[..., Settings], http: Http) -> None:
    async with serve(settings_for()) as url:
        client = http(url)
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        ready = await client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json() == {"status": "ready", "checks": {"database": "ok", "migrations": "ok"}}


async def test_readyz_checks_redis_when_configured(
    settings_for: Callable[..., Settings], http: Http, redis_server: Any
) -> None:
    async with serve(settings_for(REDIS_URL=redis_server.url)) as url:
        ready = await http(url).get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["checks"]["redis"] == "ok"


async def test_request_id_is_echoed_or_made(settings_for: Callable[..., Settings], http: Http) -> None:
    async with serve(settings_for()) as url:
        client = http(url)
        given = await client.get("/healthz", headers={"X-Request-ID": "abc-123"})
        assert given.headers["x-request-id"] == "abc-123"
        made = await client.get("/healthz", headers={"X-Request-ID": "bad id with spaces"})
        assert len(made.headers["x-request-id"]) == 32


async def test_unknown_route_and_method_use_the_error_shape(
    settings_for: Callable[..., Settings], http: Http
) -> None:
    async with serve(settings_for()) as url:
        client = http(url)
        missing = await client.get("/api/nope")
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "not_found"
        wrong = await client.get("/api/auth/login")
        assert wrong.status_code == 405
        assert wrong.json()["error"]["code"] == "method_not_allowed"


async def test_cors_preflight(settings_for: Callable[..., Settings], http: Http) -> None:
    async with serve(settings_for(CORS_ORIGINS="https://app.example")) as url:
        client = http(url)
        headers = {
            "Origin": "https://app.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        }
        allowed = await client.options("/api/auth/login", headers=headers)
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == "https://app.example"
        refused = await client.options(
            "/api/auth/login", headers={**headers, "Origin": "https://evil.example"}
        )
        assert "access-control-allow-origin" not in refused.headers


async def test_unhandled_errors_never_reach_the_client() -> None:
    secret = secrets.token_hex(8)

    async def broken(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError(f"database password is {secret}")

    with structlog.testing.capture_logs() as logs:
        transport = httpx.ASGITransport(app=RequestContextMiddleware(broken))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            response = await client.get("/boom", headers={"X-Request-ID": "req-1"})
    assert response.status_code == 500
    assert response.json() == {
        "error": {
            "code": "internal_error",
            "message": "Something went wrong on our side; it has been logged.",
        }
    }
    assert secret not in response.text
    assert response.headers["x-request-id"] == "req-1"
    failure = next(entry for entry in logs if entry["event"] == "http.unhandled_error")
    assert failure["log_level"] == "error"


async def test_nul_in_any_rest_string_is_a_422_naming_the_field(
    settings_for: Callable[..., Settings], http: Http
) -> None:
    """Regression (D13): a NUL character reached PostgreSQL (which cannot store one) and gave a 500."""
    async with serve(settings_for()) as url:
        client = http(url)
        login = await client.post(
            "/api/auth/login", json={"email": "a\x00@example.com", "password": "x" * 12}
        )
        assert login.status_code == 422, login.text
        assert login.json()["error"]["fields"] == {"email": "Must not contain NUL characters."}
        register = await client.post(
            "/api/auth/register",
            json={"email": "nul@example.com", "password": "correct horse battery", "display_name": "A\x00"},
        )
        assert register.status_code == 422, register.text
        assert register.json()["error"]["fields"] == {"display_name": "Must not contain NUL characters."}
