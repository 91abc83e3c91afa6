"""Issue #10: hostile or merely unusual inputs get typed 4xx answers naming the field, never a 500 or
``internal_error``; idempotency keys, reactions, webhook timestamps and search snippets hold up.

Everything runs through the real socket and REST against PostgreSQL; Stripe is the local fake."""

from __future__ import annotations

import asyncio
import html
import json
import re
import struct
import time
import uuid
import zlib
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from kintsugi_rt.app import create_app
from kintsugi_rt.db.migrations import migrate
from kintsugi_rt.settings import Settings, SettingsError
from loadtests.openai_sim import OpenAISimulator
from tests.fake_stripe import FakeStripe
from tests.support import Node, serve_node
from tests.test_billing import billing_settings, post_event, stripe_fake, subscribe, tier_of
from tests.test_chat import chat_settings, collect_answer, open_chat
from tests.test_media import assert_error, media_rows, upload
from tests.test_messenger import connect
from tests.wsclient import Socket, new_user

__all__ = ["stripe_fake"]  # the fixture, shared with test_billing

INT4_MAX = 2**31 - 1
INT8_MAX = 2**63 - 1


# --- D13: integers from file headers --------------------------------------------------------------


def png_header(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims this size (PNG stores both as unsigned 32-bit), with no pixel data."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def wav_header(rate: int, frames: int) -> bytes:
    """An 8-bit mono WAV whose data chunk claims ``frames`` frames, followed by only 64 of them."""
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate, 1, 8)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", frames)
    return b"RIFF" + struct.pack("<I", 0xFFFFFFFF) + body + bytes(64)


async def test_media_header_integers_beyond_their_columns_are_refused(
    settings_for: Callable[..., Settings],
) -> None:
    async with serve_node(settings_for()) as node, httpx.AsyncClient(base_url=node.url) as client:
        ann = await new_user(node.url, "Ann")
        for width, height in ((2**32 - 1, 10), (10, 2**31), (2**31, 2**31)):
            refused = await upload(client, ann, png_header(width, height), filename="huge.png")
            error = assert_error(refused, 422, "validation_failed")
            assert set(error["fields"]) == {"file"}, error
            assert "width" in error["fields"]["file"] or "height" in error["fields"]["file"], error
        # ~4.3e9 frames at 1 kHz: 4.3e9 ms, beyond an int4 column, as a plain audio file.
        refused = await upload(client, ann, wav_header(1000, 0xFFFFFFF0), filename="long.wav")
        error = assert_error(refused, 422, "validation_failed")
        assert set(error["fields"]) == {"file"} and "duration" in error["fields"]["file"], error
        # The largest sizes that fit are still stored.
        fits = await upload(client, ann, png_header(INT4_MAX, 1), filename="wide.png")
        assert fits.status_code == 201 and fits.json()["width"] == INT4_MAX, fits.text
        assert await media_rows(node.ctx, ann) == 1


# --- D13: Stripe events missing what the handler reads --------------------------------------------


async def post_signed(node: Node, fake: FakeStripe, payload: bytes) -> httpx.Response:
    async with httpx.AsyncClient(base_url=node.url) as http:
        return await http.post(
            "/api/billing/webhook", content=payload, headers={"Stripe-Signature": fake.sign(payload)}
        )


async def test_signed_webhook_without_the_fields_it_needs_is_a_typed_400(
    settings_for: Callable[..., Settings], stripe_fake: FakeStripe, sim: OpenAISimulator
) -> None:
    async with serve_node(billing_settings(settings_for, stripe_fake, sim)) as node:
        user = await new_user(node.url)
        sub = await subscribe(node, stripe_fake, user, "premium_pro")
        good = stripe_fake.event("customer.subscription.updated", stripe_fake.subscriptions[sub["id"]])

        refused_ids: list[str] = []

        def without(**changes: Any) -> dict[str, Any]:
            event = {**good, "id": f"evt_{uuid.uuid4().hex}"}
            refused_ids.append(event["id"])
            for key, value in changes.items():
                if value is None:
                    event.pop(key)
                else:
                    event[key] = value
            return event

        cases: list[tuple[bytes, str]] = [
            (json.dumps(without(data={})).encode(), "data.object"),
            (json.dumps(without(data=[])).encode(), "data"),
            (json.dumps(without(data={"object": "sub_1"})).encode(), "data.object"),
            (json.dumps(without(data=None)).encode(), "data"),
            (json.dumps(without(id=None)).encode(), "id"),
            (json.dumps(without(type=None)).encode(), "type"),
            (json.dumps(without(data={"object": {"object": "subscription"}})).encode(), "data.object.id"),
            (
                json.dumps(
                    without(type="invoice.paid", data={"object": {"object": "invoice", "parent": "x"}})
                ).encode(),
                "data.object.parent",
            ),
            (b"[]", "$"),
        ]
        for payload, field in cases:
            response = await post_signed(node, stripe_fake, payload)
            assert response.status_code == 400, (payload, response.text)
            error = response.json()["error"]
            assert error["code"] == "invalid_event" and field in error["fields"], (payload, error)
        not_json = await post_signed(node, stripe_fake, b"{not json")
        assert not_json.status_code == 400 and not_json.json()["error"]["code"] == "invalid_event"
        stored = await node.ctx.db.pool.fetchval(
            "SELECT count(*) FROM stripe_events WHERE id = ANY($1::text[])", refused_ids
        )
        assert stored == 0, "nothing half-written"
        assert await tier_of(node, user) == "premium_pro"


# --- D13: seqs, dates and cursors beyond their columns --------------------------------------------


async def test_socket_numbers_and_dates_beyond_their_columns_are_bad_request(
    settings_for: Callable[..., Settings], sim: OpenAISimulator
) -> None:
    async with serve_node(chat_settings(settings_for, sim)) as node:
        ann, bo = await new_user(node.url, "Ann"), await new_user(node.url, "Bo")
        sock = await connect(node, ann)
        conv = (await sock.request("conversation.create", kind="direct", user_ids=[bo.id]))["conversation"]
        c = conv["id"]
        requests: list[tuple[str, dict[str, Any], str]] = [
            ("message.read", {"conversation_id": c, "seq": INT8_MAX + 1}, "seq"),
            ("message.history", {"conversation_id": c, "before_seq": INT8_MAX + 1}, "before_seq"),
            ("message.history", {"conversation_id": c, "after_seq": INT8_MAX + 1}, "after_seq"),
            ("conversation.sync", {"since": {c: INT8_MAX + 1}}, "since"),
            ("chat.list", {"before": f"9999-12-31T23:59:59-23:59|{uuid.uuid4()}"}, "before"),
            ("chat.list", {"before": f"0001-01-01T00:00:00+23:59|{uuid.uuid4()}"}, "before"),
        ]
        for type_, fields, field in requests:
            reply = await sock.request(type_, **fields)
            assert reply["type"] == "error" and reply["code"] == "bad_request", (type_, fields, reply)
            assert reply["details"]["field"].startswith(field), (type_, reply)
        # The largest values that fit still work.
        assert (await sock.request("message.read", conversation_id=c, seq=INT8_MAX))["type"] == "ok"
        page = await sock.request("message.history", conversation_id=c, before_seq=INT8_MAX)
        assert page["messages"] == []
        await sock.close()


# --- D14: idempotency keys are per conversation ---------------------------------------------------


async def test_a_client_msg_id_reused_in_another_conversation_sends_a_new_message(
    settings_for: Callable[..., Settings],
) -> None:
    async with serve_node(settings_for()) as node:
        ann, bo, cy = [await new_user(node.url, name) for name in ("Ann", "Bo", "Cy")]
        ann_s, bo_s = await connect(node, ann), await connect(node, bo)
        group = (await bo_s.request("conversation.create", kind="group", user_ids=[ann.id], title="G"))[
            "conversation"
        ]
        direct = (await ann_s.request("conversation.create", kind="direct", user_ids=[cy.id]))["conversation"]

        first = (
            await ann_s.request("message.send", conversation_id=group["id"], client_msg_id="k", text="in G")
        )["message"]
        await bo_s.request("message.react", message_id=first["id"], emoji="👍")
        retry = await ann_s.request(
            "message.send", conversation_id=group["id"], client_msg_id="k", text="in G"
        )
        assert retry["message"]["id"] == first["id"], "a retry in the same conversation is still idempotent"

        other = await ann_s.request(
            "message.send", conversation_id=direct["id"], client_msg_id="k", text="for Cy"
        )
        assert other["type"] == "ok", other
        sent = other["message"]
        assert sent["id"] != first["id"] and sent["conversation_id"] == direct["id"]
        assert sent["text"] == "for Cy" and sent.get("reactions", []) == []

        # Removed from the group, Ann's next message elsewhere never shows her the group's message.
        await ann_s.request("message.send", conversation_id=group["id"], client_msg_id="gone", text="bye")
        await bo_s.request("conversation.remove_member", conversation_id=group["id"], user_id=ann.id)
        after = await ann_s.request(
            "message.send", conversation_id=direct["id"], client_msg_id="gone", text="still here"
        )
        assert after["type"] == "ok" and after["message"]["conversation_id"] == direct["id"], after
        assert after["message"]["text"] == "still here"

        # Forwarding: the same client_msg_id into two conversations makes two copies.
        mine = (await ann_s.request("conversation.create", kind="direct", user_ids=[bo.id]))["conversation"]
        copies = [
            await ann_s.request(
                "message.forward", message_id=sent["id"], conversation_id=target, client_msg_id="fwd"
            )
            for target in (mine["id"], direct["id"])
        ]
        assert [c["message"]["conversation_id"] for c in copies] == [mine["id"], direct["id"]], copies
        again = await ann_s.request(
            "message.forward", message_id=sent["id"], conversation_id=mine["id"], client_msg_id="fwd"
        )
        assert again["message"]["id"] == copies[0]["message"]["id"]
        for sock in (ann_s, bo_s):
            await sock.close()


async def test_concurrent_retries_of_one_send_all_get_the_one_message(
    settings_for: Callable[..., Settings],
) -> None:
    """Retries racing the first send (a flaky network) wait on the conversation's lock, then find it."""
    async with serve_node(settings_for()) as node:
        ann, bo = await new_user(node.url, "Ann"), await new_user(node.url, "Bo")
        socks = [await connect(node, ann) for _ in range(6)]
        conv = (await socks[0].request("conversation.create", kind="direct", user_ids=[bo.id]))[
            "conversation"
        ]
        for attempt in range(3):
            replies = await asyncio.gather(
                *(
                    sock.request(
                        "message.send", conversation_id=conv["id"], client_msg_id=f"x{attempt}", text="hi"
                    )
                    for sock in socks
                )
            )
            assert [r["type"] for r in replies] == ["ok"] * len(socks), replies
            assert len({r["message"]["id"] for r in replies}) == 1
        history = (await socks[0].request("message.history", conversation_id=conv["id"]))["messages"]
        assert [m["seq"] for m in history] == [1, 2, 3]
        for sock in socks:
            await sock.close()


# --- D15: a reaction is exactly one emoji ---------------------------------------------------------

ACCEPTED_EMOJI = ["👍", "👍🏽", "👨\u200d👩\u200d👧", "🇺🇦", "1️⃣", "❤️"]
REFUSED_EMOJI = ["ab", "👍👍", "👍a", "", "x" * 32, "\u200d", "🇺", "👍\u200d"]


async def test_reactions_accept_exactly_one_emoji(settings_for: Callable[..., Settings]) -> None:
    async with serve_node(settings_for()) as node:
        ann, bo = await new_user(node.url, "Ann"), await new_user(node.url, "Bo")
        sock = await connect(node, ann)
        conv = (await sock.request("conversation.create", kind="direct", user_ids=[bo.id]))["conversation"]
        message = (
            await sock.request("message.send", conversation_id=conv["id"], client_msg_id="r", text="react")
        )["message"]
        for emoji in ACCEPTED_EMOJI:
            reply = await sock.request("message.react", message_id=message["id"], emoji=emoji)
            assert reply["type"] == "ok", (emoji, reply)
            assert emoji in [r["emoji"] for r in reply["message"]["reactions"]]
        for emoji in REFUSED_EMOJI:
            reply = await sock.request("message.react", message_id=message["id"], emoji=emoji)
            assert reply["type"] == "error" and reply["code"] == "bad_request", (emoji, reply)
            assert reply["details"]["field"] == "emoji"
        stored = (await sock.request("message.history", conversation_id=conv["id"]))["messages"][0]
        assert sorted(r["emoji"] for r in stored["reactions"]) == sorted(ACCEPTED_EMOJI)
        await sock.close()


# --- D16: webhook timestamps both ways, and a missing webhook secret ------------------------------


async def test_webhook_signed_in_the_future_is_refused(
    settings_for: Callable[..., Settings], stripe_fake: FakeStripe, sim: OpenAISimulator
) -> None:
    async with serve_node(billing_settings(settings_for, stripe_fake, sim)) as node:
        user = await new_user(node.url)
        async with httpx.AsyncClient(base_url=node.url) as http:
            checkout = await http.post(
                "/api/billing/checkout",
                json={"tier": "premium_pro"},
                headers={"Authorization": f"Bearer {user.token}"},
            )
        session_id = checkout.json()["id"]
        stripe_fake.complete_checkout(session_id)
        event = stripe_fake.event("checkout.session.completed", stripe_fake.checkout_sessions[session_id])
        for offset in (3600, 301, -301):
            response = await post_event(node, stripe_fake, event, timestamp=int(time.time()) + offset)
            assert response.status_code == 400, (offset, response.text)
            assert response.json()["error"]["code"] == "invalid_signature"
        assert await tier_of(node, user) == "basic"
        near = await post_event(node, stripe_fake, event, timestamp=int(time.time()) + 60)  # clock skew
        assert near.status_code == 200 and near.json()["applied"] is True, near.text


async def test_stripe_without_a_webhook_secret_says_webhooks_are_off(
    settings_for: Callable[..., Settings], stripe_fake: FakeStripe, sim: OpenAISimulator
) -> None:
    settings = billing_settings(settings_for, stripe_fake, sim).replace(stripe_webhook_secret=None)
    with capture_logs() as logs:
        async with serve_node(settings) as node:
            user = await new_user(node.url)
            sock = await Socket.open(node.ws_url, user.token)
            features = (await sock.expect("hello"))["features"]
            assert features["billing"] == "stripe" and features["billing_webhooks"] == "off"
            await sock.close()
            event = stripe_fake.event("invoice.paid", {"object": "invoice", "id": "in_1"})
            refused = await post_event(node, stripe_fake, event)
            assert refused.status_code == 503, refused.text
            assert "STRIPE_WEBHOOK_SECRET" in refused.json()["error"]["message"]
    warnings = [e for e in logs if e["log_level"] == "warning" and "STRIPE_WEBHOOK_SECRET" in json.dumps(e)]
    assert warnings, logs
    async with serve_node(billing_settings(settings_for, stripe_fake, sim)) as node:
        sock = await Socket.open(node.ws_url, (await new_user(node.url)).token)
        assert (await sock.expect("hello"))["features"]["billing_webhooks"] == "on"
        await sock.close()


async def test_production_refuses_stripe_without_a_webhook_secret(
    settings_for: Callable[..., Settings], stripe_fake: FakeStripe, sim: OpenAISimulator
) -> None:
    settings = billing_settings(
        settings_for, stripe_fake, sim, ENVIRONMENT="production", JWT_SECRET="p" * 48
    ).replace(stripe_webhook_secret=None)
    await migrate(settings.database_url or "")  # production servers do not migrate themselves
    app = create_app(settings)
    with pytest.raises(SettingsError, match="STRIPE_WEBHOOK_SECRET"):
        async with app.router.lifespan_context(app):
            pass


# --- E20: chat.search snippets are safe HTML -------------------------------------------------------


async def test_chat_search_snippet_is_escaped_html_with_only_b_tags(
    settings_for: Callable[..., Settings], sim: OpenAISimulator
) -> None:
    async with serve_node(chat_settings(settings_for, sim)) as node:
        sock, chat_id = await open_chat(node, title="<i>zanzibar</i> notes")
        # The marker characters the server highlights with are in the message too: no tag from them.
        content = "zanzibar <img src=x onerror=alert(1)> &amp; 1 < 2 \ue000evil\ue001 end"
        sent = await sock.request("chat.send", chat_id=chat_id, content=content)
        await collect_answer(sock, sent["message_id"])
        hits = (await sock.request("chat.search", query="zanzibar"))["results"]
        assert {h["message_id"] for h in hits} == {None, sent["user_message_id"]}, hits
        for hit in hits:
            tags = re.findall(r"<[^>]*>", hit["snippet"])
            assert set(tags) <= {"<b>", "</b>"}, hit["snippet"]
        snippet = next(h["snippet"] for h in hits if h["message_id"])
        assert snippet.count("<b>") == snippet.count("</b>") == 1 and "<b>zanzibar</b>" in snippet, snippet
        assert "&lt;img src=x onerror=alert(1)&gt;" in snippet and "&amp;amp;" in snippet, snippet
        assert "1 &lt; 2" in snippet and "evil" in snippet, snippet
        title = next(h["snippet"] for h in hits if h["message_id"] is None)
        assert html.unescape(title) == "<i>zanzibar</i> notes", title
        await sock.close()
