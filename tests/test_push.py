"""Web Push through real nodes to a local fake push service (tests/fake_push.py), which checks the
VAPID header and decrypts each push with the browser's own private key, as a browser would."""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

from kintsugi_rt.db.migrations import migrate
from kintsugi_rt.push import storage
from kintsugi_rt.push.endpoints import EndpointRefused, check_endpoint, resolves_publicly
from kintsugi_rt.push.vapid import generate_private_key, load_vapid, private_key_from, public_key_of
from kintsugi_rt.settings import Settings, SettingsError, load_settings
from tests.fake_push import FakePushService
from tests.support import Node, RedisServer, make_settings, serve_node
from tests.wsclient import Socket, User, new_user

SettingsFor = Callable[..., Settings]


@pytest.fixture
async def fake() -> AsyncIterator[FakePushService]:
    service = FakePushService()
    await service.start()
    yield service
    await service.stop()


async def device(node: Node, user: User) -> Socket:
    sock = await Socket.open(node.ws_url, user.token)
    await sock.expect("hello")
    assert (await sock.request("ping"))["type"] == "pong"
    return sock


async def push_key(sock: Socket, fake: FakePushService) -> str:
    config = await sock.request("push.config")
    assert config["type"] == "ok" and config["enabled"] is True, config
    key: str = config["vapid_public_key"]
    fake.expected_key = key
    return key


async def subscribed(node: Node, user: User, fake: FakePushService) -> tuple[str, str]:
    """The user subscribes a new browser, then closes every socket: ``(token, endpoint)``."""
    sock = await device(node, user)
    await push_key(sock, fake)
    browser = fake.browser()
    reply = await sock.request("push.subscribe", **browser.subscription(fake))
    assert reply["type"] == "ok", reply
    await sock.close()
    await offline(node, user)
    return browser.token, browser.endpoint(fake)


async def offline(node: Node, user: User, seconds: float = 5) -> None:
    """Until presence no longer counts a socket of the user (a closed socket is forgotten at once)."""
    for _ in range(int(seconds * 50)):
        if not await node.services.presence.store.online([user.id]):
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{user.id} still online")


async def direct(sock: Socket, other: User) -> str:
    reply = await sock.request("conversation.create", kind="direct", user_ids=[other.id])
    assert reply["type"] == "ok", reply
    conversation_id: str = reply["conversation"]["id"]
    return conversation_id


async def send(sock: Socket, conversation_id: str, text: str) -> None:
    reply = await sock.request(
        "message.send", conversation_id=conversation_id, client_msg_id=secrets.token_hex(6), text=text
    )
    assert reply["type"] == "ok", reply


def sent(kind: str, result: str) -> float:
    return REGISTRY.get_sample_value("kintsugi_push_sent_total", {"kind": kind, "result": result}) or 0.0


async def endpoints_of(node: Node, user: User) -> list[str]:
    return await storage.subscriptions_of(node.ctx.db.pool, uuid.UUID(user.id))


# --- messages ---------------------------------------------------------------------------------------


async def test_a_message_to_a_user_with_no_socket_arrives_encrypted_with_its_notice(
    settings_for: SettingsFor, fake: FakePushService
) -> None:
    async with serve_node(settings_for()) as node:
        ann, bob = await new_user(node.url, "Ann"), await new_user(node.url, "Bob")
        a = await Socket.open(node.ws_url, ann.token)
        assert (await a.expect("hello"))["features"]["push"] == "webpush"
        key = await push_key(a, fake)
        chat = await direct(a, bob)
        token, _ = await subscribed(node, bob, fake)

        before = sent("message", "sent")
        await send(a, chat, "Meet at 6? The code is 4711")
        [push] = await fake.wait_for(token)
        # Only the sender's name and "New message" (PUSH_MESSAGE_PREVIEW is off): the text stays private.
        assert push.payload == {
            "kind": "message",
            "title": "Ann",
            "body": "New message",
            "url": f"/messenger/{chat}",
            "tag": chat,
        }
        assert push.urgency == "normal" and push.ttl == 24 * 3600
        assert push.topic == chat.replace("-", "")  # an undelivered push of this chat is replaced
        assert push.vapid_key == key
        assert push.claims["aud"] == fake.url and push.claims["sub"].startswith("mailto:")
        await node.services.push.idle()
        assert sent("message", "sent") == before + 1
        assert len(fake.delivered) == 1  # Ann, the sender, is online anyway
        await a.close()


async def test_the_preview_setting_shows_the_text_truncated_and_a_group_names_its_sender(
    settings_for: SettingsFor, fake: FakePushService
) -> None:
    async with serve_node(settings_for(PUSH_MESSAGE_PREVIEW="true")) as node:
        ann, bob, cid = [await new_user(node.url, n) for n in ("Ann", "Bob", "Cid")]
        a = await device(node, ann)
        await push_key(a, fake)
        group = await a.request("conversation.create", kind="group", user_ids=[bob.id, cid.id], title="Team")
        chat = group["conversation"]["id"]
        token, _ = await subscribed(node, bob, fake)

        await send(a, chat, "word " * 100)
        [push] = await fake.wait_for(token)
        assert push.payload["title"] == "Team"
        body: str = push.payload["body"]
        assert body.startswith("Ann: word word") and body.endswith("…") and len(body) <= len("Ann: ") + 120
        assert push.payload["tag"] == chat
        await a.close()


async def test_a_user_with_a_live_socket_on_any_node_gets_no_push(
    settings_for: SettingsFor, redis_server: RedisServer, fake: FakePushService
) -> None:
    settings = settings_for(REDIS_URL=redis_server.url, REDIS_KEY_PREFIX=f"p{secrets.token_hex(4)}:")
    async with serve_node(settings) as a_node, serve_node(settings) as b_node:
        ann, bob = await new_user(a_node.url, "Ann"), await new_user(a_node.url, "Bob")
        a = await device(a_node, ann)
        await push_key(a, fake)
        chat = await direct(a, bob)
        token, _ = await subscribed(a_node, bob, fake)
        bob_elsewhere = await device(b_node, bob)  # Bob's socket is on the other node

        await send(a, chat, "Are you there?")
        assert (await bob_elsewhere.expect("message.new"))["message"]["text"] == "Are you there?"
        await a_node.services.push.idle()
        assert fake.attempts == []

        await bob_elsewhere.close()  # now nobody's there: the next one is pushed
        await offline(a_node, bob)
        await send(a, chat, "Hello?")
        await fake.wait_for(token)
        await a.close()


async def test_a_gone_subscription_is_deleted(settings_for: SettingsFor, fake: FakePushService) -> None:
    async with serve_node(settings_for()) as node:
        ann, bob = await new_user(node.url, "Ann"), await new_user(node.url, "Bob")
        a = await device(node, ann)
        await push_key(a, fake)
        chat = await direct(a, bob)
        token, endpoint = await subscribed(node, bob, fake)
        assert await endpoints_of(node, bob) == [endpoint]

        fake.gone(token)
        before = sent("message", "gone")
        await send(a, chat, "Hi")
        await node.services.push.idle()
        assert [x.status for x in fake.attempts] == [410]
        assert await endpoints_of(node, bob) == []
        assert sent("message", "gone") == before + 1

        await send(a, chat, "Hi again")  # nothing left to push to
        await node.services.push.idle()
        assert len(fake.attempts) == 1
        await a.close()


async def test_429_and_5xx_are_retried_with_backoff_then_delivered(
    settings_for: SettingsFor, fake: FakePushService
) -> None:
    async with serve_node(settings_for()) as node:
        ann, bob = await new_user(node.url, "Ann"), await new_user(node.url, "Bob")
        a = await device(node, ann)
        await push_key(a, fake)
        chat = await direct(a, bob)
        token, endpoint = await subscribed(node, bob, fake)
        fake.script(token, 429, 503)

        retries = REGISTRY.get_sample_value("kintsugi_push_retries_total") or 0.0
        await send(a, chat, "Eventually")
        [push] = await fake.wait_for(token)
        await node.services.push.idle()
        assert [x.status for x in fake.attempts] == [429, 503, 201]
        assert push.payload["kind"] == "message"
        assert (REGISTRY.get_sample_value("kintsugi_push_retries_total") or 0.0) == retries + 2
        assert await endpoints_of(node, bob) == [endpoint]  # kept

        # A push service that keeps failing: PUSH_MAX_RETRIES (3) retries, then it counts as failed.
        fake.script(token, 500, 500, 500, 500)
        failed = sent("message", "failed")
        await send(a, chat, "Never")
        await node.services.push.idle()
        assert [x.status for x in fake.attempts[3:]] == [500, 500, 500, 500]
        assert sent("message", "failed") == failed + 1
        assert await endpoints_of(node, bob) == [endpoint]  # one failure is no reason to forget it
        await a.close()


async def test_pushes_per_user_are_rate_limited(settings_for: SettingsFor, fake: FakePushService) -> None:
    async with serve_node(settings_for(PUSH_RATE_LIMIT="2/1m")) as node:
        ann, bob = await new_user(node.url, "Ann"), await new_user(node.url, "Bob")
        a = await device(node, ann)
        await push_key(a, fake)
        chat = await direct(a, bob)
        token, _ = await subscribed(node, bob, fake)

        limited = sent("message", "rate_limited")
        for n in range(3):
            await send(a, chat, f"spam {n}")
            await node.services.push.idle()
        assert len(fake.for_token(token)) == 2
        assert sent("message", "rate_limited") == limited + 1
        await a.close()


# --- calls -------------------------------------------------------------------------------------------


async def test_an_incoming_call_pushes_with_high_urgency_and_a_missed_call_replaces_it(
    settings_for: SettingsFor, fake: FakePushService
) -> None:
    async with serve_node(settings_for(CALL_RING_TIMEOUT="45s")) as node:
        ann, bob = await new_user(node.url, "Ann"), await new_user(node.url, "Bob")
        a = await device(node, ann)
        await push_key(a, fake)
        chat = await direct(a, bob)
        token, _ = await subscribed(node, bob, fake)

        started = await a.request("call.start", conversation_id=chat, media="video")
        assert started["type"] == "ok", started
        call_id = started["call"]["id"]
        [ring] = await fake.wait_for(token)
        assert ring.payload == {
            "kind": "call",
            "title": "Ann",
            "body": "Incoming video call",
            "url": f"/calls?call={call_id}",
            "tag": f"call:{call_id}",
        }
        assert ring.urgency == "high" and ring.ttl == 45  # worth nothing after the ring time
        assert ring.topic == call_id.replace("-", "")

        assert (await a.request("call.cancel", call_id=call_id))["type"] == "ok"
        [_, missed] = await fake.wait_for(token, 2)
        assert missed.payload == {
            "kind": "missed_call",
            "title": "Ann",
            "body": "Missed video call",
            "url": f"/messenger/{chat}",
            "tag": f"call:{call_id}",  # the same notification: the ringing one is replaced
        }
        assert missed.topic == ring.topic and missed.urgency == "normal"
        await node.services.push.idle()
        assert len(fake.delivered) == 2  # the call's entry in the timeline is no third push
        await a.close()


# --- subscriptions -------------------------------------------------------------------------------------


async def test_unsubscribe_stops_pushes_and_only_the_owner_can(
    settings_for: SettingsFor, fake: FakePushService
) -> None:
    async with serve_node(settings_for()) as node:
        ann, bob = await new_user(node.url, "Ann"), await new_user(node.url, "Bob")
        a = await device(node, ann)
        await push_key(a, fake)
        chat = await direct(a, bob)
        _, endpoint = await subscribed(node, bob, fake)

        assert (await a.request("push.unsubscribe", endpoint=endpoint))["type"] == "ok"
        assert await endpoints_of(node, bob) == [endpoint]  # not Ann's to remove

        b = await device(node, bob)
        assert (await b.request("push.unsubscribe", endpoint=endpoint))["type"] == "ok"
        assert (await b.request("push.unsubscribe", endpoint=endpoint))["type"] == "ok"  # idempotent
        await b.close()
        await offline(node, bob)
        assert await endpoints_of(node, bob) == []
        await send(a, chat, "Anyone?")
        await node.services.push.idle()
        assert fake.attempts == []
        await a.close()


async def test_one_subscription_per_login_and_a_logged_out_browser_gets_nothing(
    settings_for: SettingsFor, fake: FakePushService
) -> None:
    async with serve_node(settings_for()) as node:
        ann, bob = await new_user(node.url, "Ann"), await new_user(node.url, "Bob")
        a = await device(node, ann)
        await push_key(a, fake)
        chat = await direct(a, bob)
        _, first = await subscribed(node, bob, fake)
        token, second = await subscribed(node, bob, fake)  # the same login subscribes anew
        assert await endpoints_of(node, bob) == [second]

        async with httpx.AsyncClient(base_url=node.url) as http:
            out = await http.post("/api/auth/logout", headers={"Authorization": f"Bearer {bob.token}"})
        assert out.status_code == 204
        await send(a, chat, "Still there?")
        await node.services.push.idle()
        assert fake.attempts == []
        assert await endpoints_of(node, bob) == []  # a revoked login's subscription is deleted
        assert first != second and token
        await a.close()


async def test_subscribe_checks_the_endpoint_and_the_keys(
    settings_for: SettingsFor, fake: FakePushService
) -> None:
    async with serve_node(settings_for()) as node:
        bob = await new_user(node.url, "Bob")
        b = await device(node, bob)
        await push_key(b, fake)
        good = fake.browser().subscription(fake)

        async def refused(field: str, **change: Any) -> None:
            frame = {**good, **change}
            reply = await b.request("push.subscribe", **frame)
            assert reply["type"] == "error" and reply["code"] == "bad_request", reply
            assert reply["details"]["field"] == field and field in reply["fields"], reply

        for url in (
            "not a url",
            "ftp://push.example.com/x",
            "https://user:pw@push.example.com/x",
            "https://",
        ):
            await refused("endpoint", endpoint=url)
        await refused("keys.p256dh", keys={**good["keys"], "p256dh": "not+base64"})
        await refused("keys.p256dh", keys={**good["keys"], "p256dh": good["keys"]["auth"]})
        await refused("keys.auth", keys={**good["keys"], "auth": good["keys"]["p256dh"]})
        assert await endpoints_of(node, bob) == []
        # The test environment takes the fake's plain-http loopback endpoint.
        assert (await b.request("push.subscribe", **good))["type"] == "ok"
        await b.close()


async def test_production_takes_only_public_https_endpoints(
    settings_for: SettingsFor, fake: FakePushService
) -> None:
    private = generate_private_key()
    settings = settings_for(
        ENVIRONMENT="production",
        JWT_SECRET="p" * 48,
        VAPID_PRIVATE_KEY=private,
        VAPID_PUBLIC_KEY=public_key_of(private_key_from(private)),
        VAPID_SUBJECT="mailto:ops@example.com",
    )
    await migrate(settings.database_url or "")  # production servers do not migrate themselves
    async with serve_node(settings) as node:
        bob = await new_user(node.url, "Bob")
        b = await device(node, bob)
        assert await push_key(b, fake) == public_key_of(private_key_from(private))
        keys = fake.browser().subscription(fake)["keys"]
        for url in (
            fake.browser().endpoint(fake),  # http
            "https://127.0.0.1/push/x",
            "https://10.1.2.3/push/x",
            "https://[::1]/push/x",
            "https://localhost/push/x",
            "https://push.internal/x",
            "https://192.168.1.10:8443/x",
        ):
            reply = await b.request("push.subscribe", endpoint=url, keys=keys)
            assert reply["type"] == "error" and reply["details"]["field"] == "endpoint", (url, reply)
        public = "https://fcm.googleapis.com/fcm/send/abc:APA91b"
        assert (await b.request("push.subscribe", endpoint=public, keys=keys))["type"] == "ok"
        await b.close()


async def test_production_without_vapid_keys_has_push_off(settings_for: SettingsFor) -> None:
    settings = settings_for(ENVIRONMENT="production", JWT_SECRET="p" * 48)
    await migrate(settings.database_url or "")
    async with serve_node(settings) as node:
        bob = await new_user(node.url, "Bob")
        sock = await Socket.open(node.ws_url, bob.token)
        assert (await sock.expect("hello"))["features"]["push"] == "off"
        config = await sock.request("push.config")
        assert config["enabled"] is False and "vapid_public_key" not in config
        reply = await sock.request(
            "push.subscribe", endpoint="https://push.example.com/x", keys={"p256dh": "x", "auth": "y"}
        )
        assert reply["code"] == "push_disabled", reply
        await sock.close()
    assert not (settings.data_dir / "vapid_private_key").exists()  # production never generates one


# --- keys and settings (no server) ------------------------------------------------------------------


def test_a_development_key_pair_is_generated_once_and_kept(tmp_path: Path) -> None:
    settings = make_settings(KINTSUGI_DATA_DIR=str(tmp_path))
    first, second = load_vapid(settings), load_vapid(settings)
    assert first is not None and second is not None
    assert first.public_key == second.public_key and len(first.public_key) == 87
    assert (tmp_path / "vapid_private_key").stat().st_mode & 0o077 == 0
    header = first.authorization("https://push.example.com/send/abc")
    assert header.startswith("vapid t=") and header.endswith(f", k={first.public_key}")


def test_the_vapid_settings_come_as_a_pair_and_must_match(tmp_path: Path) -> None:
    one, other = generate_private_key(), generate_private_key()
    base = {"KINTSUGI_DATA_DIR": str(tmp_path), "ENVIRONMENT": "test", "JWT_SECRET": "t" * 40}
    with pytest.raises(SettingsError, match="^VAPID_PUBLIC_KEY: required"):
        load_settings({**base, "VAPID_PRIVATE_KEY": one})
    with pytest.raises(SettingsError, match="^VAPID_PUBLIC_KEY: "):
        load_settings({**base, "VAPID_PUBLIC_KEY": "short", "VAPID_PRIVATE_KEY": one})
    with pytest.raises(SettingsError, match="^VAPID_SUBJECT: "):
        load_settings({**base, "VAPID_SUBJECT": "ops@example.com"})
    production = {
        **base,
        "ENVIRONMENT": "production",
        "DATABASE_URL": "postgresql://db/k",
        "JWT_SECRET": "p" * 48,
    }
    pair = {"VAPID_PRIVATE_KEY": one, "VAPID_PUBLIC_KEY": public_key_of(private_key_from(one))}
    with pytest.raises(SettingsError, match="^VAPID_SUBJECT: required in production"):
        load_settings({**production, **pair})
    settings = load_settings({**production, **pair, "VAPID_SUBJECT": "https://example.com"})
    vapid = load_vapid(settings)
    assert vapid is not None and vapid.public_key == pair["VAPID_PUBLIC_KEY"]
    mismatched = settings.replace(vapid_public_key=public_key_of(private_key_from(other)))
    with pytest.raises(SettingsError, match="^VAPID_PUBLIC_KEY: is not the public key"):
        load_vapid(mismatched)


async def test_before_each_request_production_resolves_the_host_again() -> None:
    """A name may point anywhere by the time a push is sent (DNS rebinding): each request asks again."""
    assert await resolves_publicly("https://8.8.8.8/x")
    assert not await resolves_publicly("https://10.0.0.1/x")
    assert not await resolves_publicly("https://localhost/x")  # a name that resolves to loopback


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://fcm.googleapis.com/fcm/send/x", True),
        ("https://updates.push.services.mozilla.com/wpush/v2/x", True),
        ("https://web.push.apple.com/QGx", True),
        ("https://8.8.8.8/x", True),
        ("http://fcm.googleapis.com/x", False),
        ("https://169.254.169.254/latest", False),
        ("https://[fd00::1]/x", False),
        ("https://printer/x", False),
        ("https://push.local/x", False),
        ("https://push.example.com:99999/x", False),
        ("https://push.example.com/x#frag", False),
        ("javascript:alert(1)", False),
    ],
)
def test_production_endpoint_rules(url: str, allowed: bool) -> None:
    if allowed:
        assert check_endpoint(url, allow_http=False, allow_private=False) == url
    else:
        with pytest.raises(EndpointRefused):
            check_endpoint(url, allow_http=False, allow_private=False)


def test_the_cli_prints_a_key_pair_the_settings_accept(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "kintsugi_rt", "vapid-keys"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    pair = dict(line.split("=", 1) for line in done.stdout.splitlines())
    assert set(pair) == {"VAPID_PRIVATE_KEY", "VAPID_PUBLIC_KEY"}
    settings = make_settings(pair, KINTSUGI_DATA_DIR=str(tmp_path))
    vapid = load_vapid(settings)
    assert vapid is not None and vapid.public_key == pair["VAPID_PUBLIC_KEY"]
    assert not (tmp_path / "vapid_private_key").exists()  # configured keys: nothing generated
