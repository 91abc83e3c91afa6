"""Agents in conversations: added to a group, an @mention makes the agent answer (the OpenAI simulator
with a tool_script calling a tool on the local fake webhooks) on two nodes with Redis; members on both
nodes see the pieces and the durable agent message with the tools it used; only the owner pays; no
mention, no answer; a 1:1 answers any message; the agent's own message never answers itself; who may
add it."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import pytest

from kintsugi_rt.agents.conversations import mentions
from kintsugi_rt.settings import Settings
from loadtests.openai_sim import OpenAISimulator
from tests.fake_webhooks import FakeWebhooks
from tests.support import Node, RedisServer, serve_node
from tests.test_agent_runs import agent_fields
from tests.test_agents import connect, error, ok, set_tier
from tests.wsclient import Socket, new_user

SettingsFor = Callable[..., Settings]


@pytest.fixture
async def fake() -> AsyncIterator[FakeWebhooks]:
    service = FakeWebhooks()
    await service.start()
    try:
        yield service
    finally:
        await service.stop()


@asynccontextmanager
async def two_nodes(
    settings_for: SettingsFor, redis_server: RedisServer, sim: OpenAISimulator
) -> AsyncIterator[tuple[Node, Node]]:
    settings = settings_for(
        REDIS_URL=redis_server.url,
        REDIS_KEY_PREFIX=f"am{secrets.token_hex(4)}:",
        OPENAI_API_KEY=sim.config.api_key,
        OPENAI_BASE_URL=sim.base_url,  # type: ignore[attr-defined]
        OPENAI_MAX_RETRIES="0",
        AGENT_WEBHOOK_ALLOW="127.0.0.1",
    )
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(serve_node(settings))
        b = await stack.enter_async_context(serve_node(settings))
        yield a, b


async def usage(node: Node, user_id: str) -> int:
    total: int = await node.services.ctx.db.pool.fetchval(
        "SELECT coalesce(sum(prompt_tokens + completion_tokens), 0) FROM usage_ledger WHERE user_id = $1",
        uuid.UUID(user_id),
    )
    return total


async def agent_message(sock: Socket, conversation_id: str, timeout: float = 10) -> dict[str, Any]:
    while True:
        frame = await sock.expect("message.new", timeout=timeout)
        message: dict[str, Any] = frame["message"]
        if message["conversation_id"] == conversation_id and "agent" in message:
            return message


async def nothing_from_agent(sock: Socket, seconds: float = 1.0) -> None:
    await asyncio.sleep(seconds)
    assert (await sock.request("ping"))["type"] == "pong"
    assert not [
        f
        for f in sock.backlog
        if f.get("type", "").startswith("conversation.agent_")
        or (f.get("type") == "message.new" and "agent" in f["message"])
    ], sock.backlog


def test_mentions() -> None:
    assert mentions("hi @Orders_1, where is it?", "orders_1")
    assert mentions("@orders_1", "orders_1")
    assert not mentions("hi @orders_12", "orders_1")
    assert not mentions("mail me at x@orders_1", "orders_1")
    assert not mentions("orders_1", "orders_1")


async def test_a_mention_in_a_group_makes_the_agent_answer_on_two_nodes(
    settings_for: SettingsFor, redis_server: RedisServer, sim: OpenAISimulator, fake: FakeWebhooks
) -> None:
    async with two_nodes(settings_for, redis_server, sim) as (na, nb):
        owner = await new_user(na.url, "Owner")
        other = await new_user(nb.url, "Other")
        await set_tier(na, owner, "premium_starter")
        sa = await connect(na, owner)
        sb = await connect(nb, other)
        agent = (await ok(sa, "agent.create", **agent_fields(fake)))["agent"]
        group = await ok(sa, "conversation.create", kind="group", user_ids=[other.id], title="Team")
        cid = group["conversation"]["id"]
        # who may add it: a stranger to the agent (even a paying one) does not find it
        await set_tier(nb, other, "premium_starter")
        await error(sb, "conversation.add_agent", "not_found", conversation_id=cid, agent_id=agent["id"])
        added = await ok(sa, "conversation.add_agent", conversation_id=cid, agent_id=agent["id"])
        assert [a["handle"] for a in added["conversation"]["agents"]] == [agent["handle"]]
        updated = await sb.expect("conversation.updated")
        while not updated["conversation"].get("agents"):  # the group's creation came first
            updated = await sb.expect("conversation.updated")
        assert updated["conversation"]["agents"][0]["agent_id"] == agent["id"]

        # no mention: no answer
        await ok(sb, "message.send", conversation_id=cid, client_msg_id="m1", text="hello all")
        await nothing_from_agent(sb)

        sim.config.tool_script = [
            [{"name": "lookup_order", "arguments": {"order": "A-17"}}],
            "A-17 shipped yesterday.",
        ]
        before_owner, before_other = await usage(na, owner.id), await usage(na, other.id)
        mention = f"@{agent['handle'].upper()} where is A-17?"
        await ok(sb, "message.send", conversation_id=cid, client_msg_id="m2", text=mention)
        seen: dict[str, dict[str, Any]] = {}
        for name, sock in (("owner", sa), ("other", sb)):
            seen[name] = await agent_message(sock, cid)
            steps = [f for f in sock.backlog if f.get("type") == "conversation.agent_step"]
            assert [(s["tool"], s["status"]) for s in steps] == [
                ("lookup_order", "running"),
                ("lookup_order", "ok"),
            ]
            deltas = [f for f in sock.backlog if f.get("type") == "conversation.agent_delta"]
            assert deltas and "".join(d["text"] for d in deltas) == "A-17 shipped yesterday."
            assert all(d["conversation_id"] == cid for d in deltas)
        for message in seen.values():
            assert message["text"] == "A-17 shipped yesterday."
            assert message.get("sender_id") is None
            assert message["agent"] == {
                "agent_id": agent["id"],
                "name": "Orders",
                "handle": agent["handle"],
                "tools_used": [{"tool": "lookup_order", "status": "ok"}],
            }
            assert "pos" not in message
        assert fake.requests and b"A-17" in fake.requests[-1].body
        assert await usage(na, owner.id) > before_owner
        assert await usage(na, other.id) == before_other
        # the history shows the agent's message too
        page = await ok(sb, "message.history", conversation_id=cid)
        assert page["messages"][-1]["agent"]["tools_used"] == [{"tool": "lookup_order", "status": "ok"}]

        # the owner removes it: members are told
        removed = await ok(sa, "conversation.remove_agent", conversation_id=cid, agent_id=agent["id"])
        assert removed["conversation"].get("agents", []) == []


async def test_a_one_to_one_answers_every_message_and_never_itself(
    settings_for: SettingsFor, redis_server: RedisServer, sim: OpenAISimulator, fake: FakeWebhooks
) -> None:
    async with two_nodes(settings_for, redis_server, sim) as (na, _):
        owner = await new_user(na.url, "Owner")
        await set_tier(na, owner, "premium_starter")
        sa = await connect(na, owner)
        agent = (await ok(sa, "agent.create", **agent_fields(fake)))["agent"]
        first = await ok(sa, "agent.conversation", agent_id=agent["id"])
        again = await ok(sa, "agent.conversation", agent_id=agent["id"])
        cid = first["conversation"]["id"]
        assert again["conversation"]["id"] == cid
        assert first["conversation"]["kind"] == "direct"
        assert [m["user_id"] for m in first["conversation"]["members"]] == [owner.id]
        sim.config.tool_script = ["Hello, how can I help?"]
        await ok(sa, "message.send", conversation_id=cid, client_msg_id="d1", text="hi")
        answer = await agent_message(sa, cid)
        assert answer["text"] == "Hello, how can I help?"
        assert answer["agent"]["tools_used"] == []
        # the agent's own message did not make it answer again
        sa.backlog.clear()
        await nothing_from_agent(sa, 1.5)


async def test_tier_and_membership_rules(
    settings_for: SettingsFor, redis_server: RedisServer, sim: OpenAISimulator, fake: FakeWebhooks
) -> None:
    async with two_nodes(settings_for, redis_server, sim) as (na, _):
        owner = await new_user(na.url, "Owner")
        other = await new_user(na.url, "Other")
        await set_tier(na, owner, "premium_starter")
        sa = await connect(na, owner)
        so = await connect(na, other)
        agent = (await ok(sa, "agent.create", **agent_fields(fake)))["agent"]
        mine = await ok(so, "conversation.create", kind="direct", user_ids=[owner.id])
        cid = mine["conversation"]["id"]
        theirs = await ok(so, "conversation.create", kind="group", user_ids=[other.id], title="Solo")
        # not a member of that conversation: not_found
        await error(
            sa,
            "conversation.add_agent",
            "not_found",
            conversation_id=theirs["conversation"]["id"],
            agent_id=agent["id"],
        )
        # the owner back on the basic tier: tier_required
        await set_tier(na, owner, "basic")
        await error(sa, "conversation.add_agent", "tier_required", conversation_id=cid, agent_id=agent["id"])
        await error(sa, "agent.conversation", "tier_required", agent_id=agent["id"])


async def test_a_failed_answer_posts_nothing_and_tells_the_owner_why(
    settings_for: SettingsFor, redis_server: RedisServer, sim: OpenAISimulator, fake: FakeWebhooks
) -> None:
    async with two_nodes(settings_for, redis_server, sim) as (na, nb):
        owner = await new_user(na.url, "Owner")
        other = await new_user(nb.url, "Other")
        await set_tier(na, owner, "premium_starter")
        sa = await connect(na, owner)
        sb = await connect(nb, other)
        agent = (await ok(sa, "agent.create", **agent_fields(fake)))["agent"]
        group = await ok(sa, "conversation.create", kind="group", user_ids=[other.id], title="Team")
        cid = group["conversation"]["id"]
        await ok(sa, "conversation.add_agent", conversation_id=cid, agent_id=agent["id"])
        sim.config.tool_script = ["never read"]
        sim.config.fail_first, sim.config.fail_status = 1, 500
        try:
            await ok(
                sb, "message.send", conversation_id=cid, client_msg_id="f1", text=f"@{agent['handle']} hi"
            )
            told = await sa.expect("conversation.agent_error", timeout=10)
            plain = await sb.expect("conversation.agent_error", timeout=10)
        finally:
            sim.config.fail_first = 0
        assert told["conversation_id"] == cid and told["error_code"] and told["error"]
        assert plain["reply_id"] == told["reply_id"] and "error_code" not in plain
        await nothing_from_agent(sb, 0.5)
