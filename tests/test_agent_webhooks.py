"""Calling agents' tools over HTTP: authentication per kind, the SSRF guard, limits, retries, secrets.

Against local fakes of n8n, Make and an HMAC receiver (tests/fake_webhooks.py), allow-listed through
``AGENT_WEBHOOK_ALLOW``; without the allow-list every local address is refused before any request.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from structlog.testing import capture_logs

from kintsugi_rt.agents.bindings import ToolEndpoint, ToolResult, sign, verify_signature
from kintsugi_rt.agents.ssrf import is_public
from kintsugi_rt.agents.webhooks import WebhookCaller
from kintsugi_rt.settings import Settings, SettingsError
from tests.fake_webhooks import FakeWebhooks
from tests.support import free_port, make_settings


async def _no_sleep(_seconds: float) -> None:
    return None


@pytest.fixture
async def fake() -> AsyncIterator[FakeWebhooks]:
    service = FakeWebhooks()
    await service.start()
    try:
        yield service
    finally:
        await service.stop()


def _settings(fake: FakeWebhooks | None = None, **env: str) -> Settings:
    if fake is not None:
        env.setdefault("AGENT_WEBHOOK_ALLOW", fake.url.removeprefix("http://"))
    return make_settings(env)


async def _call(
    settings: Settings, endpoint: ToolEndpoint, arguments: dict[str, Any] | None = None
) -> ToolResult:
    caller = WebhookCaller(settings, sleep=_no_sleep)
    try:
        return await caller.call(endpoint, "lookup_order", arguments or {"order": "A-17"})
    finally:
        await caller.aclose()


def _n8n(fake: FakeWebhooks, path: str = "/n8n", secret: str | None = None) -> ToolEndpoint:
    return ToolEndpoint("n8n", fake.url + path, fake.n8n_header, secret or fake.n8n_secret)


# --- each kind of authentication -----------------------------------------------------------------


async def test_n8n_header_auth(fake: FakeWebhooks) -> None:
    result = await _call(_settings(fake), _n8n(fake))
    assert result.ok and result.status == 200 and result.error is None and result.retried == 0
    assert '"received":{"tool":"lookup_order","arguments":{"order":"A-17"}}' in result.body
    assert fake.requests[0].headers["content-type"] == "application/json"

    wrong = await _call(_settings(fake), _n8n(fake, secret="not-the-secret"))
    assert not wrong.ok and wrong.status == 403 and wrong.error == "http_error"
    assert "Authorization data is wrong" in wrong.body


async def test_n8n_default_header_is_authorization(fake: FakeWebhooks) -> None:
    fake.n8n_header = "Authorization"
    endpoint = ToolEndpoint("n8n", fake.url + "/n8n", None, fake.n8n_secret)
    assert (await _call(_settings(fake), endpoint)).ok


async def test_make_api_key(fake: FakeWebhooks) -> None:
    endpoint = ToolEndpoint("make", fake.url + "/make", None, fake.make_secret)
    result = await _call(_settings(fake), endpoint)
    assert result.ok and result.body == "Accepted"
    fake.make_json = True
    result = await _call(_settings(fake), endpoint)
    assert result.ok and '"result":"done"' in result.body

    wrong = await _call(_settings(fake), ToolEndpoint("make", fake.url + "/make", None, "nope"))
    assert not wrong.ok and wrong.status == 401 and wrong.error == "http_error"


async def test_hmac_signature(fake: FakeWebhooks) -> None:
    endpoint = ToolEndpoint("hmac", fake.url + "/hmac", None, fake.hmac_secret)
    result = await _call(_settings(fake), endpoint)
    assert result.ok, result
    header = fake.requests[0].headers["x-kintsugi-signature"]
    assert header.startswith("t=") and ",v1=" in header
    assert verify_signature(fake.hmac_secret, header, fake.requests[0].body)

    wrong = await _call(_settings(fake), ToolEndpoint("hmac", fake.url + "/hmac", None, "other-secret"))
    assert not wrong.ok and wrong.status == 401


def test_verify_signature_rules() -> None:
    body = b'{"tool":"x","arguments":{}}'
    header = sign("k", body, timestamp=1_000_000)
    assert verify_signature("k", header, body, now=1_000_100)
    assert not verify_signature("k", header, body, now=1_000_301)  # too old
    assert not verify_signature("k", header, body, now=999_600)  # from the future
    assert not verify_signature("k", header, body + b" ", now=1_000_000)
    assert not verify_signature("j", header, body, now=1_000_000)
    assert not verify_signature("k", "garbage", body)
    assert not verify_signature("k", "t=abc,v1=00", body)


# --- the SSRF guard ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hook",
        "http://localhost/hook",
        "http://10.0.0.1/hook",
        "http://192.168.1.1/hook",
        "http://172.16.0.1/hook",
        "http://100.64.0.1/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://[fd00::1]/hook",
        "http://[fe80::1]/hook",
        "http://0.0.0.0/hook",
        "http://2130706433/hook",
        "http://0x7f.0.0.1/hook",
        "http://017700000001/hook",
        "https://127.0.0.1:8443/hook",
    ],
)
async def test_non_public_addresses_are_blocked(url: str) -> None:
    endpoint = ToolEndpoint("n8n", url, None, "the-secret-of-n8n")
    with capture_logs() as logs:
        result = await _call(_settings(), endpoint)
    assert not result.ok and result.error == "blocked_address" and result.status is None
    assert any(e["event"] == "agents.webhook_blocked" for e in logs)
    assert "the-secret-of-n8n" not in repr(logs)


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/x",
        "http://user:pw@example.com/x",
        "not a url",
        "http:///x",
        "http://example.com:0/",
    ],
)
async def test_bad_urls(url: str) -> None:
    result = await _call(_settings(), ToolEndpoint("make", url, None, "k"))
    assert result.error == "bad_url"


async def test_production_allows_only_https(fake: FakeWebhooks) -> None:
    production = _settings().replace(environment="production")
    result = await _call(production, ToolEndpoint("make", "http://example.com/hook", None, "k"))
    assert result.error == "bad_url"
    # an allow-listed host may use http in production too
    allowed = _settings(fake).replace(environment="production")
    assert (await _call(allowed, _n8n(fake))).ok


def test_public_addresses() -> None:
    for text in ("8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"):
        assert is_public(ipaddress.ip_address(text)), text
    for text in (
        "127.0.0.1",
        "10.1.2.3",
        "100.127.255.255",
        "169.254.169.254",
        "224.0.0.1",
        "239.255.255.250",
        "240.0.0.1",
        "255.255.255.255",
        "0.0.0.0",  # noqa: S104
        "::",
        "::1",
        "fc00::1",
        "fe80::1",
        "ff02::1",
        "::ffff:10.0.0.1",
        "2002:7f00:1::",  # 6to4 of 127.0.0.1
        "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
    ):
        assert not is_public(ipaddress.ip_address(text)), text


async def test_redirect_to_a_blocked_address_is_refused(fake: FakeWebhooks) -> None:
    for target in ("http://169.254.169.254/latest/meta-data/", "http://localhost:1/", "http://10.0.0.1/"):
        url = f"{fake.url}/n8n?mode=redirect&to={target}"
        result = await _call(_settings(fake), _n8n(fake, path=url.removeprefix(fake.url)))
        assert result.error == "blocked_address", target


async def test_redirects_keep_auth_only_on_the_same_origin(fake: FakeWebhooks) -> None:
    same = f"/n8n?mode=redirect&to={fake.url}/n8n"
    assert (await _call(_settings(fake), _n8n(fake, path=same))).ok
    other = FakeWebhooks()
    await other.start()
    try:
        allow = f"{fake.url.removeprefix('http://')},{other.url.removeprefix('http://')}"
        cross = f"/n8n?mode=redirect&to={other.url}/n8n"
        result = await _call(_settings(fake, AGENT_WEBHOOK_ALLOW=allow), _n8n(fake, path=cross))
        assert result.status == 403 and not result.ok
        assert fake.n8n_header.lower() not in other.requests[0].headers
    finally:
        await other.stop()


async def test_redirect_loop_stops(fake: FakeWebhooks) -> None:
    result = await _call(_settings(fake), _n8n(fake, "/n8n?mode=loop"))
    assert not result.ok and result.error == "too_many_redirects"
    assert len(fake.requests) == 4  # the first request and 3 redirects


def test_allow_list_setting() -> None:
    settings = make_settings(AGENT_WEBHOOK_ALLOW=" 10.0.0.0/8, fd00::/8 ,n8n.internal:5678, [::1]:80")
    assert settings.agent_webhook_allow == ("10.0.0.0/8", "fd00::/8", "n8n.internal:5678", "[::1]:80")
    assert make_settings().agent_webhook_allow == ()
    for bad in ("10.0.0.0/33", "http://x", "a b"):
        with pytest.raises(SettingsError, match="AGENT_WEBHOOK_ALLOW"):
            make_settings(AGENT_WEBHOOK_ALLOW=bad)


async def test_allow_listed_network(fake: FakeWebhooks) -> None:
    assert (await _call(_settings(fake, AGENT_WEBHOOK_ALLOW="127.0.0.0/8"), _n8n(fake))).ok


# --- limits, retries, cancellation ---------------------------------------------------------------


async def test_timeout_is_bounded_and_not_retried(fake: FakeWebhooks) -> None:
    fake.slow_seconds = 5
    started = time.monotonic()
    result = await _call(_settings(fake, AGENT_WEBHOOK_TIMEOUT="1s"), _n8n(fake, "/n8n?mode=slow"))
    assert result.error == "timeout" and not result.ok and result.retried == 0
    assert time.monotonic() - started < 2.5
    assert len(fake.requests) == 1


async def test_response_size_cap(fake: FakeWebhooks) -> None:
    result = await _call(_settings(fake, AGENT_WEBHOOK_MAX_BYTES="100000"), _n8n(fake, "/n8n?mode=huge"))
    assert result.error == "response_too_large" and not result.ok and result.body == ""


async def test_retry_on_503_then_ok(fake: FakeWebhooks) -> None:
    result = await _call(_settings(fake), _n8n(fake, "/n8n?mode=flaky"))
    assert result.ok and result.retried == 1 and len(fake.requests) == 2


async def test_retries_stop_after_two(fake: FakeWebhooks) -> None:
    fake.flaky_failures = 10
    result = await _call(_settings(fake), _n8n(fake, "/n8n?mode=flaky"))
    assert not result.ok and result.status == 503 and result.retried == 2 and len(fake.requests) == 3


async def test_connection_refused_is_retried() -> None:
    port = free_port()
    endpoint = ToolEndpoint("make", f"http://127.0.0.1:{port}/make", None, "k")
    result = await _call(make_settings(AGENT_WEBHOOK_ALLOW=f"127.0.0.1:{port}"), endpoint)
    assert result.error == "connect_failed" and result.retried == 2


async def test_cancel_event_and_task_cancellation(fake: FakeWebhooks) -> None:
    fake.slow_seconds = 5
    caller = WebhookCaller(_settings(fake))
    try:
        cancel = asyncio.Event()
        asyncio.get_running_loop().call_later(0.2, cancel.set)
        started = time.monotonic()
        result = await caller.call(_n8n(fake, "/n8n?mode=slow"), "t", {}, cancel=cancel)
        assert result.error == "cancelled" and time.monotonic() - started < 1

        task = asyncio.create_task(caller.call(_n8n(fake, "/n8n?mode=slow"), "t", {}))
        await asyncio.sleep(0.2)
        started = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert time.monotonic() - started < 1

        finished = await caller.call(_n8n(fake), "t", {}, cancel=asyncio.Event())
        assert finished.ok
    finally:
        await caller.aclose()


# --- secrets -------------------------------------------------------------------------------------


async def test_secrets_never_in_logs_or_results(fake: FakeWebhooks) -> None:
    fake.slow_seconds = 5
    settings = _settings(fake, AGENT_WEBHOOK_TIMEOUT="1s")
    endpoints = [
        _n8n(fake),
        _n8n(fake, secret="wrong-n8n-secret-xyz"),
        _n8n(fake, "/n8n?mode=slow"),
        ToolEndpoint("make", fake.url + "/make", None, fake.make_secret),
        ToolEndpoint("hmac", fake.url + "/hmac", None, fake.hmac_secret),
        ToolEndpoint("n8n", "http://169.254.169.254/", None, fake.n8n_secret),
    ]
    secrets = [fake.n8n_secret, "wrong-n8n-secret-xyz", fake.make_secret, fake.hmac_secret]
    with capture_logs() as logs:
        results = [await _call(settings, e) for e in endpoints]
    events = {e["event"] for e in logs}
    assert {"agents.webhook_called", "agents.webhook_blocked", "agents.webhook_failed"} <= events
    text = repr(logs) + repr(results) + repr(endpoints) + str(endpoints[0])
    for secret in secrets:
        assert secret not in text


async def test_connects_to_the_checked_address_with_the_name_as_host(fake: FakeWebhooks) -> None:
    # "localhost" may resolve to ::1 first (the fake listens on 127.0.0.1 only): the next checked
    # address is tried; the name travels in the Host header, never re-resolved by the HTTP client.
    port = fake.url.rsplit(":", 1)[1]
    endpoint = ToolEndpoint("n8n", f"http://localhost:{port}/n8n", fake.n8n_header, fake.n8n_secret)
    result = await _call(_settings(fake, AGENT_WEBHOOK_ALLOW=f"localhost:{port}"), endpoint)
    assert result.ok, result
    assert fake.requests[0].headers["host"] == f"localhost:{port}"
    # the same name is refused without the allow-list
    assert (await _call(_settings(), endpoint)).error == "blocked_address"
