"""Tiers, token limits and Stripe, through the real socket and REST, against a fake Stripe API."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from redis.asyncio import Redis

from kintsugi_rt.billing.usage import window_start
from kintsugi_rt.clock import ManualClock
from kintsugi_rt.errors import ApiError
from kintsugi_rt.settings import Settings
from kintsugi_rt.socket.registry import SocketError
from loadtests.openai_sim import OpenAISimulator
from tests.fake_stripe import FakeStripe
from tests.support import Node, RedisServer, serve_node
from tests.test_chat import chat_settings, collect_answer
from tests.test_delivery import hub_settings
from tests.wsclient import Socket, User, new_user

PRICES = {
    "STRIPE_PRICE_PREMIUM_STARTER": "price_starter",
    "STRIPE_PRICE_PREMIUM_PRO": "price_pro",
    "STRIPE_PRICE_PREMIUM_ULTRA": "price_ultra",
    "STRIPE_PRICE_UNLIMITED": "price_unlimited",
}


@pytest.fixture
async def stripe_fake() -> AsyncIterator[FakeStripe]:
    fake = FakeStripe()
    fake.base_url = await fake.start()  # type: ignore[attr-defined]
    yield fake
    await fake.stop()


def billing_settings(
    settings_for: Callable[..., Settings], fake: FakeStripe, sim: OpenAISimulator, **extra: str
) -> Settings:
    return chat_settings(
        settings_for,
        sim,
        STRIPE_SECRET_KEY=fake.api_key,
        STRIPE_WEBHOOK_SECRET=fake.webhook_secret,
        STRIPE_API_BASE=fake.base_url,  # type: ignore[attr-defined]
        **PRICES,
        **extra,
    )


def bearer(user: User) -> dict[str, str]:
    return {"Authorization": f"Bearer {user.token}"}


async def post_event(node: Node, fake: FakeStripe, event: dict[str, Any], **sign: Any) -> httpx.Response:
    payload = json.dumps(event).encode()
    async with httpx.AsyncClient(base_url=node.url) as http:
        return await http.post(
            "/api/billing/webhook", content=payload, headers={"Stripe-Signature": fake.sign(payload, **sign)}
        )


async def tier_of(node: Node, user: User) -> str:
    async with httpx.AsyncClient(base_url=node.url) as http:
        tier: str = (await http.get("/api/auth/me", headers=bearer(user))).json()["tier"]
    return tier


async def subscribe(node: Node, fake: FakeStripe, user: User, tier: str = "premium_pro") -> dict[str, Any]:
    """Checkout through our API, pay on the fake Stripe, deliver the signed webhook."""
    async with httpx.AsyncClient(base_url=node.url) as http:
        response = await http.post("/api/billing/checkout", json={"tier": tier}, headers=bearer(user))
    assert response.status_code == 201, response.text
    session_id = response.json()["id"]
    sub = fake.complete_checkout(session_id)
    event = fake.event("checkout.session.completed", fake.checkout_sessions[session_id])
    answer = await post_event(node, fake, event)
    assert answer.status_code == 200 and answer.json() == {"received": True, "applied": True}, answer.text
    return sub


# --- Stripe ------------------------------------------------------------------------------------


async def test_without_stripe_billing_is_disabled_and_set_tier_works(
    settings_for: Callable[..., Settings], database_url: str
) -> None:
    async with serve_node(settings_for()) as node:
        user = await new_user(node.url)
        async with httpx.AsyncClient(base_url=node.url) as http:
            for method, path in (
                ("POST", "/api/billing/checkout"),
                ("POST", "/api/billing/portal"),
                ("GET", "/api/billing/subscription"),
                ("POST", "/api/billing/webhook"),
            ):
                response = await http.request(
                    method, path, headers=bearer(user), json={"tier": "premium_pro"}
                )
                assert response.status_code == 503, (path, response.text)
                assert response.json()["error"]["code"] == "billing_disabled"
        sock = await Socket.open(node.ws_url, user.token)
        assert (await sock.expect("hello"))["features"]["billing"] == "off"
        usage = await sock.request("usage.get")
        assert usage["tier"] == "basic" and usage["limit"] == 100_000

        env = {**os.environ, "DATABASE_URL": database_url, "ENVIRONMENT": "test", "JWT_SECRET": "s" * 40}
        done = subprocess.run(
            [sys.executable, "-m", "kintsugi_rt", "users", "set-tier", user.email, "premium_ultra"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert await tier_of(node, user) == "premium_ultra"
        assert (await sock.request("usage.get"))["limit"] == 5_000_000
        missing = subprocess.run(
            [sys.executable, "-m", "kintsugi_rt", "users", "set-tier", "nobody@example.com", "basic"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert missing.returncode == 1 and "no user" in missing.stderr
        await sock.close()


async def test_checkout_reuses_one_customer_and_portal(
    settings_for: Callable[..., Settings], stripe_fake: FakeStripe, sim: OpenAISimulator
) -> None:
    async with serve_node(billing_settings(settings_for, stripe_fake, sim)) as node:
        user = await new_user(node.url)
        async with httpx.AsyncClient(base_url=node.url) as http:
            no_customer = await http.post("/api/billing/portal", headers=bearer(user))
            assert no_customer.status_code == 409 and no_customer.json()["error"]["code"] == "no_customer"
            first = await http.post(
                "/api/billing/checkout", json={"tier": "premium_pro"}, headers=bearer(user)
            )
            second = await http.post(
                "/api/billing/checkout", json={"tier": "premium_starter"}, headers=bearer(user)
            )
            assert first.status_code == second.status_code == 201
            assert first.json()["url"].startswith("http")
            assert len(stripe_fake.customers) == 1
            customer = next(iter(stripe_fake.customers.values()))
            assert customer["metadata"]["user_id"] == user.id and customer["email"] == user.email
            session = stripe_fake.checkout_sessions[first.json()["id"]]
            assert session["mode"] == "subscription" and session["customer"] == customer["id"]
            assert session["client_reference_id"] == user.id

            bad = await http.post("/api/billing/checkout", json={"tier": "basic"}, headers=bearer(user))
            assert bad.status_code == 422 and "tier" in bad.json()["error"]["fields"]
            anonymous = await http.post("/api/billing/checkout", json={"tier": "premium_pro"})
            assert anonymous.status_code == 401

            portal = await http.post("/api/billing/portal", headers=bearer(user))
            assert portal.status_code == 201 and portal.json()["url"].startswith("http")
            status = await http.get("/api/billing/subscription", headers=bearer(user))
            assert status.json() == {
                "tier": "basic",
                "status": "none",
                "current_period_end": None,
                "cancel_at_period_end": False,
            }


async def test_subscription_webhook_changes_the_tier_at_once_and_replay_changes_nothing(
    settings_for: Callable[..., Settings], stripe_fake: FakeStripe, sim: OpenAISimulator
) -> None:
    async with serve_node(billing_settings(settings_for, stripe_fake, sim)) as node:
        user = await new_user(node.url)
        sock = await Socket.open(node.ws_url, user.token)
        await sock.expect("hello")
        sub = await subscribe(node, stripe_fake, user, "premium_pro")
        assert await tier_of(node, user) == "premium_pro"
        pushed = await sock.expect("subscription.updated")
        assert pushed["tier"] == "premium_pro" and pushed["status"] == "active" and "pos" in pushed
        usage = await sock.expect("usage.updated")
        assert usage["limit"] == 2_000_000 and usage["tier"] == "premium_pro"
        async with httpx.AsyncClient(base_url=node.url) as http:
            status = (await http.get("/api/billing/subscription", headers=bearer(user))).json()
        assert (
            status["tier"] == "premium_pro" and status["status"] == "active" and status["current_period_end"]
        )

        # The Done-when: a signed customer.subscription.updated moves the tier; replaying it changes nothing.
        stripe_fake.set_subscription(sub["id"], price="price_ultra")
        event = stripe_fake.event("customer.subscription.updated", stripe_fake.subscriptions[sub["id"]])
        assert (await post_event(node, stripe_fake, event)).json()["applied"] is True
        assert await tier_of(node, user) == "premium_ultra"
        stripe_fake.set_subscription(sub["id"], price="price_pro")  # even if Stripe's state moved on
        replay = await post_event(node, stripe_fake, event)
        assert replay.status_code == 200 and replay.json() == {"received": True, "applied": False}
        assert await tier_of(node, user) == "premium_ultra"
        assert sum(1 for f in sock.backlog if f.get("type") == "subscription.updated") <= 1
        await sock.close()


async def test_forged_missing_and_stale_signatures_change_nothing(
    settings_for: Callable[..., Settings], stripe_fake: FakeStripe, sim: OpenAISimulator, database_url: str
) -> None:
    async with serve_node(billing_settings(settings_for, stripe_fake, sim)) as node:
        user = await new_user(node.url)
        async with httpx.AsyncClient(base_url=node.url) as http:
            session_id = (
                await http.post("/api/billing/checkout", json={"tier": "premium_pro"}, headers=bearer(user))
            ).json()["id"]
        stripe_fake.complete_checkout(session_id)
        event = stripe_fake.event("checkout.session.completed", stripe_fake.checkout_sessions[session_id])
        payload = json.dumps(event).encode()
        async with httpx.AsyncClient(base_url=node.url) as http:
            for headers in (
                {},
                {"Stripe-Signature": stripe_fake.sign(payload, secret="whsec_someone_else")},
                {"Stripe-Signature": stripe_fake.sign(payload, timestamp=int(time.time()) - 301)},
                {"Stripe-Signature": "t=1,v1=deadbeef"},
            ):
                response = await http.post("/api/billing/webhook", content=payload, headers=headers)
                assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_signature"
            tampered = payload.replace(b"complete", b"cOmplete")
            response = await http.post(
                "/api/billing/webhook",
                content=tampered,
                headers={"Stripe-Signature": stripe_fake.sign(payload)},
            )
            assert response.status_code == 400
        assert await tier_of(node, user) == "basic"
        conn = await asyncpg.connect(database_url)
        try:
            assert await conn.fetchval("SELECT count(*) FROM stripe_events WHERE id = $1", event["id"]) == 0
        finally:
            await conn.close()


async def test_events_out_of_order_are_resolved_by_refetching(
    settings_for: Callable[..., Settings], stripe_fake: FakeStripe, sim: OpenAISimulator
) -> None:
    async with serve_node(billing_settings(settings_for, stripe_fake, sim)) as node:
        user = await new_user(node.url)
        sub = await subscribe(node, stripe_fake, user, "premium_starter")
        old_view = dict(stripe_fake.subscriptions[sub["id"]])
        later = int(time.time()) + 60 * 86_400
        stripe_fake.set_subscription(sub["id"], price="price_pro", period_end=later)
        newer = stripe_fake.event("customer.subscription.updated", stripe_fake.subscriptions[sub["id"]])
        older = stripe_fake.event("customer.subscription.created", old_view)
        # The newer event arrives first, then the stale one: the payload of the stale one is not trusted.
        assert (await post_event(node, stripe_fake, newer)).json()["applied"] is True
        await post_event(node, stripe_fake, older)
        assert await tier_of(node, user) == "premium_pro"

        # A re-fetched subscription whose period went backwards is ignored.
        stripe_fake.set_subscription(sub["id"], price="price_ultra", period_end=later - 86_400)
        stale = stripe_fake.event("customer.subscription.updated", stripe_fake.subscriptions[sub["id"]])
        assert (await post_event(node, stripe_fake, stale)).json()["applied"] is False
        assert await tier_of(node, user) == "premium_pro"


async def test_past_due_keeps_the_tier_and_cancellation_ends_it(
    settings_for: Callable[..., Settings], stripe_fake: FakeStripe, sim: OpenAISimulator
) -> None:
    async with serve_node(billing_settings(settings_for, stripe_fake, sim)) as node:
        user = await new_user(node.url)
        sock = await Socket.open(node.ws_url, user.token)
        sub = await subscribe(node, stripe_fake, user, "premium_pro")
        invoice = {"object": "invoice", "id": "in_1", "customer": sub["customer"], "subscription": sub["id"]}

        stripe_fake.set_subscription(sub["id"], status="past_due")
        await post_event(node, stripe_fake, stripe_fake.event("invoice.payment_failed", invoice))
        assert await tier_of(node, user) == "premium_pro"
        flagged = await sock.expect("subscription.updated", attention="payment_failed")
        assert flagged["status"] == "past_due"

        await post_event(node, stripe_fake, stripe_fake.event("invoice.payment_action_required", invoice))
        assert (await sock.expect("subscription.updated", attention="payment_action_required"))[
            "tier"
        ] == "premium_pro"

        stripe_fake.set_subscription(sub["id"], status="active")
        await post_event(node, stripe_fake, stripe_fake.event("invoice.paid", invoice))
        assert (await sock.expect("subscription.updated", status="active"))["tier"] == "premium_pro"

        stripe_fake.set_subscription(sub["id"], status="canceled")
        deleted = stripe_fake.event("customer.subscription.deleted", stripe_fake.subscriptions[sub["id"]])
        assert (await post_event(node, stripe_fake, deleted)).json()["applied"] is True
        assert await tier_of(node, user) == "basic"
        assert (await sock.expect("usage.updated", tier="basic"))["limit"] == 100_000
        await sock.close()


# --- token limits ------------------------------------------------------------------------------


async def test_limit_reached_then_upgrade_lifts_it(
    settings_for: Callable[..., Settings], stripe_fake: FakeStripe, sim: OpenAISimulator
) -> None:
    """The Done-when: a basic user exhausts the limit, sees usage live, is refused before any upstream
    call with reset_at, then moves up the moment a signed subscription event arrives."""
    async with serve_node(billing_settings(settings_for, stripe_fake, sim, BASIC_TOKEN_LIMIT="400")) as node:
        user = await new_user(node.url)
        sock = await Socket.open(node.ws_url, user.token)
        chat_id = (await sock.request("chat.create", title="t"))["chat"]["id"]
        refused: dict[str, Any] | None = None
        for _ in range(10):
            reply = await sock.request("chat.send", chat_id=chat_id, content="hello")
            if reply["type"] == "error":
                refused = reply
                break
            await collect_answer(sock, reply["message_id"])
            live = await sock.expect("usage.updated")
            assert live["tier"] == "basic" and live["limit"] == 400 and live["used"] > 0
        assert refused is not None and refused["code"] == "token_limit_exceeded"
        details = refused["details"]
        assert details["limit"] == 400 and details["tier"] == "basic" and details["used"] <= 400
        reset_at = datetime.fromisoformat(details["reset_at"])
        assert reset_at == window_start(datetime.now(UTC), timedelta(hours=6)) + timedelta(hours=6)
        calls = len(sim.requests)

        await subscribe(node, stripe_fake, user, "premium_pro")
        await sock.expect("subscription.updated")
        assert len(sim.requests) == calls, "the refused request never went upstream"
        reply = await sock.request("chat.send", chat_id=chat_id, content="hello again")
        assert reply["type"] == "ok", reply
        await collect_answer(sock, reply["message_id"])
        await sock.close()


@pytest.mark.parametrize("hub", ["local", "redis"])
async def test_fifty_concurrent_sends_overspend_at_most_one_reservation(
    hub: str,
    settings_for: Callable[..., Settings],
    sim: OpenAISimulator,
    redis_server: RedisServer,
    database_url: str,
) -> None:
    limit = 2000
    # Answers stay in flight, so every reservation is outstanding at once. 0.5 s was too short on a
    # busy machine: early answers settled (for less than they reserved) before the last sends were
    # checked, and 20 sends fitted where 19 reservations do.
    sim.config.ttft = 3.0
    settings = chat_settings(
        settings_for, sim, BASIC_TOKEN_LIMIT=str(limit), **hub_settings(hub, redis_server)
    )
    async with serve_node(settings) as node:
        user = await new_user(node.url)
        sockets = [await Socket.open(node.ws_url, user.token, max_size=None) for _ in range(5)]
        sock = sockets[0]
        chats = [(await sock.request("chat.create", title=f"c{i}"))["chat"]["id"] for i in range(50)]

        async def send_ten(device: Socket, mine: list[str]) -> list[dict[str, Any]]:
            for chat_id in mine:  # ten in flight on each of five sockets: fifty at once
                await device.send(
                    {"type": "chat.send", "id": f"s-{chat_id}", "chat_id": chat_id, "content": "hello"}
                )
            replies: dict[str, dict[str, Any]] = {}
            while len(replies) < len(mine):
                frame = await device.read(timeout=20)
                if str(frame.get("id", "")).startswith("s-") and frame["type"] in ("ok", "error"):
                    replies[frame["id"]] = frame
            return list(replies.values())

        batches = await asyncio.gather(*(send_ten(d, chats[i::5]) for i, d in enumerate(sockets)))
        replies = [r for batch in batches for r in batch]
        accepted = [r for r in replies if r["type"] == "ok"]
        refused = [r for r in replies if r["type"] == "error"]
        assert refused and all(r["code"] == "token_limit_exceeded" for r in refused)
        watcher = await Socket.open(node.ws_url, user.token)
        await watcher.expect("hello")
        for _ in range(200):  # wait until every accepted answer has settled
            if (
                await node.ctx.db.pool.fetchval(
                    "SELECT count(*) FROM chat_messages m JOIN chats c ON c.id = m.chat_id "
                    "WHERE c.user_id = $1 AND m.status = 'streaming'",
                    uuid.UUID(user.id),
                )
            ) == 0:
                break
            await asyncio.sleep(0.05)
        conn = await asyncpg.connect(database_url)
        try:
            spent = await conn.fetchval(
                "SELECT SUM(prompt_tokens + completion_tokens) FROM usage_ledger WHERE user_id = $1",
                uuid.UUID(user.id),
            )
            reservations = await conn.fetchval(
                "SELECT count(*) FROM usage_reservations WHERE user_id = $1", uuid.UUID(user.id)
            )
        finally:
            await conn.close()
        one_reservation = 100 + 8  # max_tokens plus the prompt estimate of "hello"
        assert len(accepted) * one_reservation <= limit + one_reservation
        assert spent <= limit + one_reservation
        assert len(sim.requests) == len(accepted)
        assert reservations == 0, "every reservation was settled"
        for device in (*sockets, watcher):
            await device.close()


async def test_window_resets_with_the_clock(
    settings_for: Callable[..., Settings], sim: OpenAISimulator
) -> None:
    clock = ManualClock(datetime(2026, 3, 1, 5, 59, tzinfo=UTC))
    async with serve_node(chat_settings(settings_for, sim, BASIC_TOKEN_LIMIT="130"), clock=clock) as node:
        user = await new_user(node.url)
        sock = await Socket.open(node.ws_url, user.token)
        chat_id = (await sock.request("chat.create", title="t"))["chat"]["id"]
        first = await sock.request("chat.send", chat_id=chat_id, content="hi")
        await collect_answer(sock, first["message_id"])
        refused = await sock.request("chat.send", chat_id=chat_id, content="hi")
        assert refused["code"] == "token_limit_exceeded"
        assert refused["details"]["reset_at"] == "2026-03-01T06:00:00+00:00"
        clock.advance(timedelta(minutes=1))  # 06:00: a new window
        state = await sock.request("usage.get")
        assert state["used"] == 0 and state["reset_at"] == "2026-03-01T12:00:00Z"
        again = await sock.request("chat.send", chat_id=chat_id, content="hi")
        assert again["type"] == "ok", again
        await collect_answer(sock, again["message_id"])
        await sock.close()


async def test_counters_are_rebuilt_from_the_ledger_after_redis_loses_them(
    settings_for: Callable[..., Settings], sim: OpenAISimulator, redis_server: RedisServer
) -> None:
    prefix = f"t{secrets.token_hex(4)}:"
    settings = chat_settings(settings_for, sim, **hub_settings("redis", redis_server, prefix))
    async with serve_node(settings) as node:
        user = await new_user(node.url)
        sock = await Socket.open(node.ws_url, user.token)
        chat_id = (await sock.request("chat.create", title="t"))["chat"]["id"]
        for _ in range(2):
            sent = await sock.request("chat.send", chat_id=chat_id, content="hello")
            await collect_answer(sock, sent["message_id"])
        before = await sock.request("usage.get")
        assert before["used"] > 0
        redis = Redis.from_url(redis_server.url)
        try:
            keys = [k async for k in redis.scan_iter(match=f"{prefix}usage:*")]
            assert keys
            await redis.delete(*keys)  # Redis lost our counters
        finally:
            await redis.aclose()
        after = await sock.request("usage.get")
        assert after["used"] == before["used"]
        sock.backlog.clear()
        sent = await sock.request("chat.send", chat_id=chat_id, content="hello")
        _, done = await collect_answer(sock, sent["message_id"])
        live = await sock.expect("usage.updated")
        usage = done["usage"]
        assert live["used"] == before["used"] + usage["prompt_tokens"] + usage["completion_tokens"]
        await sock.close()


async def test_usage_history_and_warnings(
    settings_for: Callable[..., Settings], sim: OpenAISimulator
) -> None:
    async with serve_node(chat_settings(settings_for, sim, BASIC_TOKEN_LIMIT="1000")) as node:
        user = await new_user(node.url)
        sock = await Socket.open(node.ws_url, user.token)
        chat_id = (await sock.request("chat.create", title="t"))["chat"]["id"]
        for _ in range(3):
            sent = await sock.request("chat.send", chat_id=chat_id, content="hello")
            await collect_answer(sock, sent["message_id"])
        now = datetime.now(UTC)
        window: dict[str, Any] = {
            "from": (now - timedelta(days=1)).isoformat(),
            "to": (now + timedelta(hours=1)).isoformat(),
        }
        by_day = await sock.request("usage.history", **window)
        assert by_day["group_by"] == "day" and len(by_day["rows"]) == 1
        row = by_day["rows"][0]
        assert row["key"] == now.strftime("%Y-%m-%d") and row["requests"] == 3
        assert row["total_tokens"] == (await sock.request("usage.get"))["used"]
        by_model = await sock.request("usage.history", **window, group_by="model")
        assert [r["key"] for r in by_model["rows"]] == ["gpt-4o-mini"]
        empty: dict[str, Any] = {"from": now.isoformat(), "to": now.isoformat()}
        backwards = await sock.request("usage.history", **empty)
        assert backwards["code"] == "bad_request"
        await sock.close()


async def test_warning_when_crossing_80_percent(
    settings_for: Callable[..., Settings], sim: OpenAISimulator
) -> None:
    sim.config.reply_tokens = 100
    async with serve_node(chat_settings(settings_for, sim, BASIC_TOKEN_LIMIT="1000")) as node:
        user = await new_user(node.url)
        sock = await Socket.open(node.ws_url, user.token)
        states: list[dict[str, Any]] = []
        for i in range(12):  # a fresh chat each time: no growing history, ~108 tokens a request
            chat_id = (await sock.request("chat.create", title=f"t{i}"))["chat"]["id"]
            sent = await sock.request("chat.send", chat_id=chat_id, content="hello")
            if sent["type"] == "error":
                break
            await collect_answer(sock, sent["message_id"])
            states.append(await sock.expect("usage.updated"))
        warnings = [f for f in sock.backlog if f.get("type") == "usage.warning"]
        assert [w["threshold"] for w in warnings] == [80]
        crossing = next(s for s in states if s["used"] * 100 >= 80 * 1000)
        assert warnings[0]["used"] == crossing["used"] and warnings[0]["limit"] == 1000
        await sock.close()


async def test_tier_guard_for_rest_routes(settings_for: Callable[..., Settings], database_url: str) -> None:
    async with serve_node(settings_for()) as node:
        user = await new_user(node.url)
        with pytest.raises(ApiError) as refused:
            await node.services.tiers.require_rest(uuid.UUID(user.id), "premium_starter")
        assert refused.value.status == 403 and refused.value.code == "tier_required"
        assert refused.value.details == {"tier": "premium_starter", "current": "basic"}
        assert await node.services.tiers.require_rest(uuid.UUID(user.id), "basic") == "basic"
        # The same guard for socket handlers (agents will need premium_starter).
        with pytest.raises(SocketError) as locked:
            await node.services.tiers.require(uuid.UUID(user.id), "premium_starter")
        assert locked.value.code == "tier_required"
        assert locked.value.details == {"tier": "premium_starter", "current": "basic"}
