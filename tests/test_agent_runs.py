"""Running an agent over the socket (agent.chat.*): a real node, the OpenAI simulator (tool_script) and
the local fake webhooks. A two-step run with its events and stored history, continuing a run on the
version it began with, stop during a slow webhook, the tier guard, foreign runs, and secrets that never
appear in a frame."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from kintsugi_rt.settings import Settings
from loadtests.openai_sim import OpenAISimulator
from tests.fake_webhooks import FakeWebhooks
from tests.support import Node, serve_node
from tests.test_agents import RecordingSocket, connect, error, ok, set_tier
from tests.wsclient import Socket, new_user

SettingsFor = Callable[..., Settings]
MODEL = "gpt-4o-mini"
ORDER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"order": {"type": "string"}},
    "required": ["order"],
    "additionalProperties": False,
}


@pytest.fixture
async def fake() -> AsyncIterator[FakeWebhooks]:
    service = FakeWebhooks()
    await service.start()
    try:
        yield service
    finally:
        await service.stop()


@pytest.fixture
async def node(settings_for: SettingsFor, sim: OpenAISimulator) -> AsyncIterator[Node]:
    settings = settings_for(
        OPENAI_API_KEY=sim.config.api_key,
        OPENAI_BASE_URL=sim.base_url,  # type: ignore[attr-defined]
        OPENAI_MAX_RETRIES="0",
        AGENT_WEBHOOK_ALLOW="127.0.0.1",
    )
    async with serve_node(settings) as n:
        yield n


def agent_fields(fake: FakeWebhooks, path: str = "/n8n", **more: Any) -> dict[str, Any]:
    return {
        "name": "Orders",
        "handle": f"orders_{time.monotonic_ns() % 10**9}",
        "model": MODEL,
        "instructions": "You look orders up.",
        "tools": [
            {
                "name": "lookup_order",
                "description": "Look an order up.",
                "parameters": ORDER_SCHEMA,
                "endpoint": {
                    "kind": "n8n",
                    "url": fake.url + path,
                    "header_name": fake.n8n_header,
                    "secret": fake.n8n_secret,
                },
            }
        ],
        **more,
    }


async def until_done(sock: Socket, run_id: str, timeout: float = 10) -> list[dict[str, Any]]:
    """The run's frames (agent.delta, agent.step, agent.done) up to and with its agent.done."""
    frames: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        frame = await sock.recv(max(0.01, deadline - loop.time()))
        if frame.get("run_id") != run_id:
            continue
        frames.append(frame)
        if frame["type"] == "agent.done":
            return frames


def assert_no_secret(sock: RecordingSocket, fake: FakeWebhooks) -> None:
    assert fake.n8n_secret not in "".join(getattr(sock, "seen", []))


async def test_two_step_run_then_continue_on_its_version(
    node: Node, sim: OpenAISimulator, fake: FakeWebhooks
) -> None:
    user = await new_user(node.url)
    await set_tier(node, user, "premium_starter")
    sock = await connect(node, user)
    agent = (await ok(sock, "agent.create", **agent_fields(fake)))["agent"]
    sim.config.tool_script = [
        [{"name": "lookup_order", "arguments": {"order": "A-17"}}],
        [{"name": "lookup_order", "arguments": {"order": "B-2"}}],
        "A-17 shipped; B-2 is packed.",
    ]
    started = await ok(sock, "agent.chat.send", agent_id=agent["id"], content="Where are A-17 and B-2?")
    run_id = started["run_id"]
    assert started["turn"] == 1
    frames = await until_done(sock, run_id)
    steps = [f for f in frames if f["type"] == "agent.step"]
    assert [(s["status"], s["arguments"]) for s in steps] == [
        ("running", {"order": "A-17"}),
        ("ok", {"order": "A-17"}),
        ("running", {"order": "B-2"}),
        ("ok", {"order": "B-2"}),
    ]
    assert all(s["tool"] == "lookup_order" and "pos" in s for s in steps)
    assert steps[1]["duration_ms"] is not None and "A-17" in steps[1]["summary"]
    done = frames[-1]
    assert done["status"] == "answered" and done["text"] == "A-17 shipped; B-2 is packed."
    assert done["usage"]["prompt_tokens"] > 0 and "pos" in done
    deltas = [f for f in frames if f["type"] == "agent.delta"]
    assert "".join(d["text"] for d in deltas) == done["text"]
    assert [d["index"] for d in deltas] == list(range(len(deltas)))

    # Every model turn of the run is billed to the owner as an agent turn (three turns: two tool steps
    # and the answer).
    purposes = await node.ctx.db.pool.fetch(
        "SELECT purpose FROM usage_ledger WHERE user_id = $1", uuid.UUID(user.id)
    )
    assert [r["purpose"] for r in purposes] == ["agent", "agent", "agent"]

    view = await ok(sock, "agent.chat.get", run_id=run_id)
    assert view["run"]["status"] == "answered" and view["run"]["version_id"] == agent["version_id"]
    messages = view["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "assistant", "tool", "assistant"]
    assert messages[0] == {"role": "user", "content": "Where are A-17 and B-2?"}
    assert messages[-1] == {"role": "assistant", "content": "A-17 shipped; B-2 is packed."}
    assert [(s["seq"], s["tool"], s["status"]) for s in view["steps"]] == [
        (1, "lookup_order", "ok"),
        (2, "lookup_order", "ok"),
    ]
    assert view["steps"][0]["arguments"] == {"order": "A-17"}
    listed = await ok(sock, "agent.chat.list", agent_id=agent["id"])
    assert [r["id"] for r in listed["runs"]] == [run_id]

    # An edit makes a new version; the run goes on with the one it began with.
    await ok(sock, "agent.update", agent_id=agent["id"], instructions="Talk like a pirate.")
    sim.requests.clear()
    again = await ok(sock, "agent.chat.send", agent_id=agent["id"], run_id=run_id, content="Thanks!")
    assert again == {**again, "run_id": run_id, "turn": 2}
    frames = await until_done(sock, run_id)
    assert frames[-1]["status"] == "answered" and frames[-1]["turn"] == 2
    first = sim.requests[0].body["messages"]
    assert first[0] == {"role": "system", "content": "You look orders up."}
    assert first[-1] == {"role": "user", "content": "Thanks!"}
    view = await ok(sock, "agent.chat.get", run_id=run_id)
    assert len(view["messages"]) == 8 and view["run"]["version_id"] == agent["version_id"]
    assert_no_secret(sock, fake)
    await sock.close()


async def test_stop_during_a_slow_webhook(node: Node, sim: OpenAISimulator, fake: FakeWebhooks) -> None:
    user = await new_user(node.url)
    await set_tier(node, user, "premium_pro")
    sock = await connect(node, user)
    agent = (await ok(sock, "agent.create", **agent_fields(fake, "/n8n?mode=slow")))["agent"]
    sim.config.tool_script = [[{"name": "lookup_order", "arguments": {"order": "A-17"}}], "never"]
    run_id = (await ok(sock, "agent.chat.send", agent_id=agent["id"], content="Where is A-17?"))["run_id"]
    await sock.expect("agent.step", run_id=run_id, status="running")
    await asyncio.sleep(0.2)
    asked = time.monotonic()
    await ok(sock, "agent.chat.stop", run_id=run_id)
    done = await sock.expect("agent.done", timeout=3, run_id=run_id)
    assert time.monotonic() - asked < 1.0
    assert done["status"] == "stopped"
    view = await ok(sock, "agent.chat.get", run_id=run_id)
    assert view["run"]["status"] == "stopped"
    assert [s["status"] for s in view["steps"]] == ["error"]
    # Every tool call in the stored history has its answer: the run can be continued.
    assert [m["role"] for m in view["messages"]] == ["user", "assistant", "tool"]
    assert_no_secret(sock, fake)
    await sock.close()


async def test_tier_guard_and_foreign_runs(node: Node, sim: OpenAISimulator, fake: FakeWebhooks) -> None:
    ann, bob = await new_user(node.url), await new_user(node.url)
    await set_tier(node, ann, "premium_starter")
    ann_sock = await connect(node, ann)
    agent = (await ok(ann_sock, "agent.create", **agent_fields(fake)))["agent"]
    sim.config.tool_script = ["Hello."]
    run_id = (await ok(ann_sock, "agent.chat.send", agent_id=agent["id"], content="Hi"))["run_id"]
    await until_done(ann_sock, run_id)

    bob_sock = await connect(node, bob)  # basic tier
    for frame, args in (
        ("agent.chat.send", {"agent_id": agent["id"], "content": "Hi"}),
        ("agent.chat.stop", {"run_id": run_id}),
        ("agent.chat.get", {"run_id": run_id}),
        ("agent.chat.list", {}),
    ):
        refused = await error(bob_sock, frame, "tier_required", **args)
        assert refused["details"]["tier"] == "premium_starter"

    await set_tier(node, bob, "premium_starter")
    await error(bob_sock, "agent.chat.get", "not_found", run_id=run_id)
    await error(bob_sock, "agent.chat.stop", "not_found", run_id=run_id)
    await error(bob_sock, "agent.chat.send", "not_found", agent_id=agent["id"], content="Hi")
    await error(bob_sock, "agent.chat.send", "not_found", agent_id=agent["id"], run_id=run_id, content="Hi")
    assert (await ok(bob_sock, "agent.chat.list"))["runs"] == []
    await error(ann_sock, "agent.chat.send", "bad_request", agent_id=agent["id"], content="")
    assert_no_secret(ann_sock, fake)
    await ann_sock.close()
    await bob_sock.close()
