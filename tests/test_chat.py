"""AI chat through the real socket against the OpenAI-compatible upstream simulator."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Any

import asyncpg
import pytest

from kintsugi_rt.chat.tokens import count_text
from kintsugi_rt.db.migrations import migrate
from kintsugi_rt.settings import Settings
from loadtests.openai_sim import WORDS, OpenAISimulator
from tests.support import Node, RedisServer, serve_node
from tests.test_delivery import hub_settings
from tests.wsclient import Socket, new_user

MODELS = (
    '[{"id": "gpt-4o-mini", "label": "Mini", "context_window": 128000, "max_output": 16384},'
    ' {"id": "gpt-4o", "label": "Big", "context_window": 128000, "max_output": 16384,'
    '  "tiers": ["premium_starter", "premium_pro", "premium_ultra", "unlimited"]},'
    ' {"id": "sim-small", "label": "Small", "context_window": 400, "max_output": 100}]'
)


def chat_settings(settings_for: Callable[..., Settings], sim: OpenAISimulator, **extra: str) -> Settings:
    values = {
        "OPENAI_API_KEY": "sk-sim-test",
        "OPENAI_BASE_URL": sim.base_url,  # type: ignore[attr-defined]
        "OPENAI_MAX_RETRIES": "2",
        "CHAT_MODELS": MODELS,
        "CHAT_DEFAULT_MODEL": "gpt-4o-mini",
        "CHAT_MAX_OUTPUT_TOKENS": "100",
    }
    return settings_for(**{**values, **extra})


async def ledger(database_url: str, message_id: str) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT purpose, model, prompt_tokens, completion_tokens, source FROM usage_ledger "
            "WHERE message_id = $1",
            uuid.UUID(message_id),
        )
    finally:
        await conn.close()
    return [dict(r) for r in rows]


async def stored(database_url: str, message_id: str) -> dict[str, Any]:
    conn = await asyncpg.connect(database_url)
    try:
        row = await conn.fetchrow("SELECT * FROM chat_messages WHERE id = $1", uuid.UUID(message_id))
    finally:
        await conn.close()
    assert row is not None
    return dict(row)


async def open_chat(node: Node, **create: Any) -> tuple[Socket, str]:
    user = await new_user(node.url)
    sock = await Socket.open(node.ws_url, user.token)
    await sock.expect("hello")
    reply = await sock.request("chat.create", **create)
    assert reply["type"] == "ok", reply
    return sock, reply["chat"]["id"]


async def collect_answer(
    sock: Socket, message_id: str, timeout: float = 10
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Deltas of one answer, then its chat.done or chat.error; other frames stay in the backlog."""
    deltas: list[dict[str, Any]] = []
    pending = [f for f in sock.backlog if f.get("message_id") == message_id]
    sock.backlog = [f for f in sock.backlog if f.get("message_id") != message_id]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        frame = pending.pop(0) if pending else await sock.read(max(0.01, deadline - loop.time()))
        if frame.get("message_id") != message_id:
            sock.backlog.append(frame)
        elif frame["type"] == "chat.delta":
            deltas.append(frame)
        elif frame["type"] in ("chat.done", "chat.error"):
            return deltas, frame


async def test_full_exchange_records_provider_usage(
    settings_for: Callable[..., Settings], sim: OpenAISimulator, database_url: str
) -> None:
    sim.config.reply_tokens = 30
    sim.config.tokens_per_second = 300
    async with serve_node(chat_settings(settings_for, sim)) as node:
        sock, chat_id = await open_chat(node)
        sent = await sock.request("chat.send", chat_id=chat_id, content="Tell me about cats.")
        assert sent["type"] == "ok"
        started = await sock.expect("chat.started")
        assert (
            started["message_id"] == sent["message_id"]
            and started["user_message"]["content"] == "Tell me about cats."
        )
        deltas, done = await collect_answer(sock, sent["message_id"])
        text = "".join(d["text"] for d in deltas)
        assert [d["index"] for d in deltas] == list(range(len(deltas)))
        assert 1 < len(deltas) < 30, "tokens are batched into fewer frames"
        assert text == "".join(WORDS[i % len(WORDS)] for i in range(30))
        assert done["type"] == "chat.done" and done["finish_reason"] == "stop" and done["content"] == text
        assert done["usage"]["source"] == "provider" and done["usage"]["completion_tokens"] == 30
        request = sim.requests[0].body
        assert request["stream"] is True and request["stream_options"] == {"include_usage": True}
        assert request["messages"] == [{"role": "user", "content": "Tell me about cats."}]
        assert request["max_tokens"] == 100

        assert await ledger(database_url, sent["message_id"]) == [
            {
                "purpose": "answer",
                "model": "gpt-4o-mini",
                "prompt_tokens": done["usage"]["prompt_tokens"],
                "completion_tokens": 30,
                "source": "provider",
            }
        ]
        row = await stored(database_url, sent["message_id"])
        assert row["status"] == "complete" and row["content"] == text

        # After the first exchange a title is generated (a non-streaming call) and pushed.
        updated = await sock.expect("chat.updated")
        # The simulator's non-streaming reply is the same 30 words: cut at a word, within 80 characters.
        assert (
            updated["chat"]["title"]
            == "the cat sat on a warm mat and then it slept well the cat sat on a warm mat and"
        )
        assert sim.requests[1].body.get("stream") in (None, False)
        await sock.close()


async def test_stop_cancels_upstream_and_bills_what_was_generated(
    settings_for: Callable[..., Settings], sim: OpenAISimulator, database_url: str
) -> None:
    sim.config.reply_tokens = 400
    sim.config.tokens_per_second = 40
    async with serve_node(chat_settings(settings_for, sim)) as node:
        sock, chat_id = await open_chat(node, title="no title call")
        sent = await sock.request("chat.send", chat_id=chat_id, content="Write a long story.")
        for _ in range(3):
            await sock.expect("chat.delta")
        loop = asyncio.get_running_loop()
        asked = loop.time()
        assert (await sock.request("chat.stop", message_id=sent["message_id"]))["type"] == "ok"
        gone = await sim.wait_for_disconnect(0, timeout=2)
        assert gone.disconnected_at is not None and gone.disconnected_at - asked < 1.0
        _, done = await collect_answer(sock, sent["message_id"])
        assert done["type"] == "chat.done" and done["finish_reason"] == "stopped"
        assert done["usage"]["source"] == "estimated"
        received = done["content"]
        assert 0 < done["usage"]["completion_tokens"] == count_text(received) <= gone.tokens_sent < 400
        rows = await ledger(database_url, sent["message_id"])
        assert rows[0]["completion_tokens"] == count_text(received) and rows[0]["source"] == "estimated"
        assert (await stored(database_url, sent["message_id"]))["status"] == "stopped"
        await sock.close()


async def test_disconnect_does_not_stop_and_resume_gets_the_rest(
    settings_for: Callable[..., Settings], sim: OpenAISimulator, database_url: str
) -> None:
    sim.config.reply_tokens = 60
    sim.config.tokens_per_second = 60
    async with serve_node(chat_settings(settings_for, sim)) as node:
        user = await new_user(node.url)
        phone = await Socket.open(node.ws_url, user.token)
        hello = await phone.expect("hello")
        chat = await phone.request("chat.create", title="t")
        sent = await phone.request("chat.send", chat_id=chat["chat"]["id"], content="Go on.")
        first = await phone.expect("chat.delta")
        await phone.close()  # the client drops mid-answer

        await asyncio.sleep(0.3)
        laptop = await Socket.open(node.ws_url, user.token)
        await laptop.expect("hello")
        snapshot = await laptop.expect("chat.snapshot")
        assert snapshot["message_id"] == sent["message_id"]
        assert snapshot["text"].startswith(first["text"]) and snapshot["index"] >= 0
        # Resume catches up the durable events (chat.created, chat.started) the phone may have missed.
        await laptop.send({"type": "resume", "epoch": hello["epoch"], "pos": hello["pos"]})
        deltas, done = await collect_answer(laptop, sent["message_id"])
        later = [d for d in deltas if d["index"] > snapshot["index"]]
        assert snapshot["text"] + "".join(d["text"] for d in later) == done["content"]
        assert done["content"] == "".join(WORDS[i % len(WORDS)] for i in range(60))
        assert sim.requests[0].disconnected_at is None, "the upstream was never cut"
        assert (await stored(database_url, sent["message_id"]))["content"] == done["content"]
        await laptop.close()

        # A client that comes back after the end gets chat.done from its stream.
        again = await Socket.open(node.ws_url, user.token)
        await again.expect("hello")
        await again.send({"type": "resume", "epoch": hello["epoch"], "pos": hello["pos"]})
        done_again = await again.expect("chat.done")
        assert done_again["content"] == done["content"]
        await again.close()


async def test_429_then_success(settings_for: Callable[..., Settings], sim: OpenAISimulator) -> None:
    sim.config.fail_first = 1
    sim.config.fail_status = 429
    async with serve_node(chat_settings(settings_for, sim)) as node:
        sock, chat_id = await open_chat(node, title="t")
        sent = await sock.request("chat.send", chat_id=chat_id, content="Hi")
        _, done = await collect_answer(sock, sent["message_id"])
        assert done["type"] == "chat.done" and done["finish_reason"] == "stop"
        assert [r.status for r in sim.requests[:2]] == [429, 200]
        await sock.close()


async def test_persistent_5xx_ends_in_chat_error(
    settings_for: Callable[..., Settings], sim: OpenAISimulator, database_url: str
) -> None:
    sim.config.fail_first = 10
    sim.config.fail_status = 500
    async with serve_node(chat_settings(settings_for, sim, OPENAI_MAX_RETRIES="1")) as node:
        sock, chat_id = await open_chat(node, title="t")
        sent = await sock.request("chat.send", chat_id=chat_id, content="Hi")
        deltas, error = await collect_answer(sock, sent["message_id"])
        assert deltas == [] and error["type"] == "chat.error" and error["code"] == "provider_error"
        assert len(sim.requests) == 2  # one try and one retry, both before any token
        assert (await stored(database_url, sent["message_id"]))["status"] == "error"
        assert (await ledger(database_url, sent["message_id"]))[0]["completion_tokens"] == 0
        await sock.close()


@pytest.mark.parametrize("mode", ["error_event", "disconnect"])
async def test_mid_stream_failure_keeps_the_partial_text(
    mode: str, settings_for: Callable[..., Settings], sim: OpenAISimulator, database_url: str
) -> None:
    sim.config.reply_tokens = 20
    sim.config.fail_after_tokens = 5
    sim.config.fail_mode = mode
    async with serve_node(chat_settings(settings_for, sim)) as node:
        sock, chat_id = await open_chat(node, title="t")
        sent = await sock.request("chat.send", chat_id=chat_id, content="Hi")
        deltas, error = await collect_answer(sock, sent["message_id"])
        partial = "".join(WORDS[:5])
        assert error["type"] == "chat.error" and error["content"] == partial
        assert error["code"] in ("provider_error", "provider_unreachable")
        assert "".join(d["text"] for d in deltas) == partial
        row = await stored(database_url, sent["message_id"])
        assert row["status"] == "error" and row["content"] == partial
        assert (await ledger(database_url, sent["message_id"]))[0]["completion_tokens"] == 5
        assert len(sim.requests) == 1, "nothing is retried after the first token"
        await sock.close()


async def test_provider_without_stream_usage(
    settings_for: Callable[..., Settings], sim: OpenAISimulator
) -> None:
    sim.config.reject_stream_options = True
    async with serve_node(chat_settings(settings_for, sim)) as node:
        sock, chat_id = await open_chat(node, title="t")
        sent = await sock.request("chat.send", chat_id=chat_id, content="Hi")
        _, done = await collect_answer(sock, sent["message_id"])
        assert done["type"] == "chat.done"
        assert done["usage"] == {
            "prompt_tokens": done["usage"]["prompt_tokens"],
            "completion_tokens": 12,
            "source": "estimated",
        }
        assert "stream_options" not in sim.requests[-1].body
        await sock.close()


async def test_models_tiers_and_unknown_models(
    settings_for: Callable[..., Settings], sim: OpenAISimulator
) -> None:
    async with serve_node(chat_settings(settings_for, sim)) as node:
        user = await new_user(node.url)
        sock = await Socket.open(node.ws_url, user.token)
        models = await sock.request("chat.models")
        by_id = {m["id"]: m for m in models["models"]}
        assert by_id["gpt-4o-mini"]["allowed"] is True
        assert by_id["gpt-4o"]["allowed"] is False and by_id["gpt-4o"]["tier_required"] == "premium_starter"
        unknown = await sock.request("chat.create", model="gpt-99")
        assert unknown["type"] == "error" and unknown["code"] == "unknown_model"
        locked = await sock.request("chat.create", model="gpt-4o")
        assert locked["code"] == "tier_required" and locked["details"] == {"tier": "premium_starter"}
        await sock.close()


async def test_another_users_chat_is_not_found(
    settings_for: Callable[..., Settings], sim: OpenAISimulator
) -> None:
    async with serve_node(chat_settings(settings_for, sim)) as node:
        owner, chat_id = await open_chat(node, title="private")
        sent = await owner.request("chat.send", chat_id=chat_id, content="secret plans")
        await collect_answer(owner, sent["message_id"])
        intruder = await Socket.open(node.ws_url, (await new_user(node.url)).token)
        attempts: list[tuple[str, dict[str, Any]]] = [
            ("chat.get", {"chat_id": chat_id}),
            ("chat.send", {"chat_id": chat_id, "content": "hi"}),
            ("chat.rename", {"chat_id": chat_id, "title": "mine"}),
            ("chat.delete", {"chat_id": chat_id}),
            ("chat.switch", {"message_id": sent["message_id"]}),
            ("chat.regenerate", {"message_id": sent["message_id"]}),
            ("chat.edit", {"message_id": sent["user_message_id"], "content": "x"}),
            ("chat.stop", {"message_id": sent["message_id"]}),
        ]
        for type_, fields in attempts:
            reply = await intruder.request(type_, **fields)
            assert reply["type"] == "error" and reply["code"] == "not_found", (type_, reply)
            assert "secret" not in str(reply)
        assert (await intruder.request("chat.search", query="secret"))["results"] == []
        assert (await owner.request("chat.get", chat_id=chat_id))["chat"]["title"] == "private"
        await owner.close()
        await intruder.close()


async def test_branching(settings_for: Callable[..., Settings], sim: OpenAISimulator) -> None:
    async with serve_node(chat_settings(settings_for, sim)) as node:
        sock, chat_id = await open_chat(node, title="tree")
        q1 = await sock.request("chat.send", chat_id=chat_id, content="Question one")
        await collect_answer(sock, q1["message_id"])

        regen = await sock.request("chat.regenerate", message_id=q1["message_id"])
        assert regen["type"] == "ok"
        await collect_answer(sock, regen["message_id"])
        view = await sock.request("chat.get", chat_id=chat_id)
        answer = view["messages"][-1]
        assert answer["id"] == regen["message_id"]
        assert answer["siblings"] == [q1["message_id"], regen["message_id"]]

        edited = await sock.request(
            "chat.edit", message_id=q1["user_message_id"], content="Question one, better"
        )
        await collect_answer(sock, edited["message_id"])
        view = await sock.request("chat.get", chat_id=chat_id)
        assert view["messages"][0]["content"] == "Question one, better"
        assert view["messages"][0]["siblings"] == [q1["user_message_id"], edited["user_message_id"]]
        assert sim.requests[-1].body["messages"] == [{"role": "user", "content": "Question one, better"}]

        switched = await sock.request("chat.switch", message_id=q1["user_message_id"])
        assert [m["id"] for m in switched["messages"]] == [q1["user_message_id"], regen["message_id"]]
        assert (await sock.expect("chat.updated"))["chat"]["active_leaf_id"] == regen["message_id"]

        in_flight = await sock.request("chat.send", chat_id=chat_id, content="Question two")
        refused = await sock.request("chat.send", chat_id=chat_id, content="Question three")
        assert refused["type"] == "error" and refused["code"] == "generation_in_progress"
        await collect_answer(sock, in_flight["message_id"])
        page = await sock.request("chat.get", chat_id=chat_id, limit=2)
        assert page["has_more"] is True and len(page["messages"]) == 2
        older = await sock.request("chat.get", chat_id=chat_id, limit=2, before=page["messages"][0]["id"])
        assert [m["id"] for m in older["messages"]] == [q1["user_message_id"], regen["message_id"]]
        await sock.close()


async def test_search_list_rename_delete(settings_for: Callable[..., Settings], sim: OpenAISimulator) -> None:
    async with serve_node(chat_settings(settings_for, sim)) as node:
        sock, first = await open_chat(node, title="Holiday planning")
        sent = await sock.request("chat.send", chat_id=first, content="Best coffee in Lviv?")
        await collect_answer(sock, sent["message_id"])
        second = (await sock.request("chat.create", title="Taxes"))["chat"]["id"]

        hits = (await sock.request("chat.search", query="coffee Lviv"))["results"]
        assert [(h["chat_id"], h["message_id"]) for h in hits] == [(first, sent["user_message_id"])]
        assert "<b>" in hits[0]["snippet"]
        assert (await sock.request("chat.search", query="holiday"))["results"][0]["chat_id"] == first

        listed = await sock.request("chat.list", limit=1)
        assert [c["id"] for c in listed["chats"]] == [second] and listed["next_cursor"]
        rest = await sock.request("chat.list", limit=1, before=listed["next_cursor"])
        assert [c["id"] for c in rest["chats"]] == [first] and rest["next_cursor"] is None
        bad = await sock.request("chat.list", before="nonsense")
        assert bad["code"] == "bad_request"

        renamed = await sock.request("chat.rename", chat_id=second, title="  Tax   2026 ")
        assert renamed["chat"]["title"] == "Tax 2026"
        assert (await sock.request("chat.delete", chat_id=first))["type"] == "ok"
        assert (await sock.expect("chat.deleted"))["chat_id"] == first
        assert (await sock.request("chat.get", chat_id=first))["code"] == "not_found"
        assert (await sock.request("chat.search", query="coffee"))["results"] == []
        await sock.close()


async def test_history_is_trimmed_to_the_context_window(
    settings_for: Callable[..., Settings], sim: OpenAISimulator
) -> None:
    sim.config.reply_tokens = 40
    async with serve_node(chat_settings(settings_for, sim)) as node:
        sock, chat_id = await open_chat(node, model="sim-small", title="t", system_prompt="Be brief.")
        for i in range(6):
            sent = await sock.request("chat.send", chat_id=chat_id, content=f"Question {i}: " + "word " * 30)
            await collect_answer(sock, sent["message_id"])
        messages = sim.requests[-1].body["messages"]
        assert messages[0] == {"role": "system", "content": "Be brief."}
        assert messages[-1]["content"].startswith("Question 5:")
        assert not any(m["content"].startswith("Question 0:") for m in messages), "oldest turns dropped"
        size = sum(count_text(m["content"]) + 3 for m in messages) + 3
        assert size <= 400 - 100, "prompt plus the answer's budget fit in the window"
        assert sim.requests[-1].body["max_tokens"] == 100

        too_long = await sock.request("chat.send", chat_id=chat_id, content="word " * 400)
        assert too_long["type"] == "error" and too_long["code"] == "context_too_long"
        huge = await sock.request("chat.send", chat_id=chat_id, content="x" * 40_000)
        assert huge["code"] == "content_too_long"
        await sock.close()


async def test_answers_reach_every_device_and_stop_works_from_another_node(
    settings_for: Callable[..., Settings], sim: OpenAISimulator, redis_server: RedisServer
) -> None:
    sim.config.reply_tokens = 400
    sim.config.tokens_per_second = 50
    prefix = f"t{secrets.token_hex(4)}:"
    settings = chat_settings(settings_for, sim, **hub_settings("redis", redis_server, prefix))
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(serve_node(settings))
        b = await stack.enter_async_context(serve_node(settings))
        user = await new_user(a.url)
        on_a = await Socket.open(a.ws_url, user.token)
        on_b = await Socket.open(b.ws_url, user.token)
        chat = await on_a.request("chat.create", title="t")
        sent = await on_a.request("chat.send", chat_id=chat["chat"]["id"], content="Long please")
        await on_b.expect("chat.delta")  # the other device, on the other node, sees it stream
        assert (await on_b.request("chat.stop", message_id=sent["message_id"]))["type"] == "ok"
        await sim.wait_for_disconnect(0, timeout=2)
        _, done_b = await collect_answer(on_b, sent["message_id"])
        _, done_a = await collect_answer(on_a, sent["message_id"])
        assert done_a["finish_reason"] == done_b["finish_reason"] == "stopped"
        assert done_a["content"] == done_b["content"]
        await on_a.close()
        await on_b.close()


async def test_offline_demo_in_development_and_off_in_production(
    settings_for: Callable[..., Settings],
) -> None:
    async with serve_node(settings_for(ENVIRONMENT="development")) as node:
        sock, chat_id = await open_chat(node)
        assert (await sock.request("chat.models"))["provider"] == "offline-demo"
        sent = await sock.request("chat.send", chat_id=chat_id, content="Hello")
        deltas, done = await collect_answer(sock, sent["message_id"])
        assert len(deltas) > 5 and done["content"].startswith("Offline demo — set OPENAI_API_KEY")
        await sock.close()
    production = settings_for(ENVIRONMENT="production", JWT_SECRET="p" * 48)
    await migrate(production.database_url or "")  # production servers do not migrate themselves
    async with serve_node(production) as node:
        user = await new_user(node.url)
        sock = await Socket.open(node.ws_url, user.token)
        hello = await sock.expect("hello")
        assert hello["features"]["chat"] == "off"
        assert (await sock.request("chat.models"))["models"] == []
        refused = await sock.request("chat.create")
        assert refused["type"] == "error" and refused["code"] == "provider_unavailable"
        await sock.close()


async def test_deleting_a_chat_mid_answer_still_bills_the_tokens(
    settings_for: Callable[..., Settings], sim: OpenAISimulator, database_url: str
) -> None:
    sim.config.reply_tokens = 400
    sim.config.tokens_per_second = 50
    async with serve_node(chat_settings(settings_for, sim)) as node:
        user = await new_user(node.url)
        sock = await Socket.open(node.ws_url, user.token)
        chat_id = (await sock.request("chat.create", title="t"))["chat"]["id"]
        await sock.request("chat.send", chat_id=chat_id, content="Long please")
        await sock.expect("chat.delta")
        assert (await sock.request("chat.delete", chat_id=chat_id))["type"] == "ok"
        await sim.wait_for_disconnect(0, timeout=2)
        conn = await asyncpg.connect(database_url)
        try:
            for _ in range(50):
                rows = await conn.fetch(
                    "SELECT chat_id, message_id, completion_tokens FROM usage_ledger "
                    "WHERE user_id = $1 AND purpose = 'answer'",
                    uuid.UUID(user.id),
                )
                if rows:
                    break
                await asyncio.sleep(0.1)
        finally:
            await conn.close()
        assert len(rows) == 1 and rows[0]["chat_id"] is None and rows[0]["completion_tokens"] > 0
        await sock.close()


def test_the_tokenizer_needs_no_network(tmp_path: Any) -> None:
    """Count tokens in a fresh process whose every download attempt would fail."""
    import os
    import subprocess
    import sys

    env = {
        **os.environ,
        "TIKTOKEN_CACHE_DIR": str(tmp_path),
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "HTTP_PROXY": "http://127.0.0.1:9",
    }
    code = "from kintsugi_rt.chat.tokens import count_text; print(count_text('hello world, привіт світ'))"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) == 10


async def test_concurrent_sends_never_deadlock_a_small_pool(
    settings_for: Callable[..., Settings], sim: OpenAISimulator
) -> None:
    """A send holds one pool connection for its transaction; nothing inside may wait for another."""
    async with serve_node(chat_settings(settings_for, sim, DATABASE_POOL_MAX="2")) as node:
        user = await new_user(node.url)
        devices = [await Socket.open(node.ws_url, user.token) for _ in range(6)]
        chats = [(await d.request("chat.create", title="t"))["chat"]["id"] for d in devices]
        replies = await asyncio.wait_for(
            asyncio.gather(
                *(
                    d.request("chat.send", chat_id=c, content="hi")
                    for d, c in zip(devices, chats, strict=True)
                )
            ),
            timeout=20,
        )
        assert all(r["type"] == "ok" for r in replies), replies
        for device, reply in zip(devices, replies, strict=True):
            _, done = await collect_answer(device, reply["message_id"])
            assert done["type"] == "chat.done"
            await device.close()
