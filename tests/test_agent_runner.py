"""The agent tool loop: the real OpenAIProvider against the simulator, real webhooks (the local fakes),
real billing on a real node's database."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import pytest

from kintsugi_rt.agents.bindings import ToolEndpoint
from kintsugi_rt.agents.runner import (
    AgentRunner,
    MeterBilling,
    RunnerTool,
    RunOutcome,
    StepEvent,
    TurnUsage,
)
from kintsugi_rt.agents.webhooks import WebhookCaller
from kintsugi_rt.billing.usage import LimitExceeded, Reservation, UsageState
from kintsugi_rt.chat.provider import OpenAIProvider
from loadtests.openai_sim import OpenAISimulator, count_prompt_tokens
from tests.fake_webhooks import FakeWebhooks
from tests.support import Node, make_settings, serve_node
from tests.wsclient import new_user

MODEL = "gpt-4o-mini"
ORDER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"order": {"type": "string"}},
    "required": ["order"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
async def node(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Node]:
    data = tmp_path_factory.mktemp("runner")
    async with serve_node(make_settings(DATABASE_URL=database_url, KINTSUGI_DATA_DIR=str(Path(data)))) as n:
        yield n


@pytest.fixture
async def fake() -> AsyncIterator[FakeWebhooks]:
    service = FakeWebhooks()
    await service.start()
    try:
        yield service
    finally:
        await service.stop()


@dataclass
class Env:
    node: Node
    sim: OpenAISimulator
    fake: FakeWebhooks
    runner: AgentRunner
    user_id: uuid.UUID
    database_url: str
    events: list[StepEvent] = field(default_factory=list)
    cancel: asyncio.Event = field(default_factory=asyncio.Event)

    def tool(self, path: str = "/n8n", secret: str | None = None, name: str = "lookup_order") -> RunnerTool:
        endpoint = ToolEndpoint(
            "n8n", self.fake.url + path, self.fake.n8n_header, secret or self.fake.n8n_secret
        )
        return RunnerTool(name, "Look an order up.", ORDER_SCHEMA, endpoint)

    async def run(
        self, tools: list[RunnerTool], *, step_limit: int = 6, history: list[dict[str, Any]] | None = None
    ) -> RunOutcome:
        return await self.runner.run(
            user_id=self.user_id,
            model=MODEL,
            instructions="You look orders up.",
            temperature=0.3,
            tools=tools,
            step_limit=step_limit,
            history=history if history is not None else [{"role": "user", "content": "Where is A-17?"}],
            emit=self.events.append,
            cancel=self.cancel,
        )

    def kinds(self) -> list[str]:
        return [e.kind for e in self.events]

    def finished(self) -> list[StepEvent]:
        return [e for e in self.events if e.kind == "tool_finished"]

    def assert_no_secret(self) -> None:
        shown = msgspec.json.encode(self.events).decode()
        for secret in (self.fake.n8n_secret, "wrong-secret-value-4242"):
            assert secret not in shown

    async def ledger(self) -> tuple[int, int, int]:
        """(prompt, completion) billed to the user, and the reservations still held."""
        conn = await asyncpg.connect(self.database_url)
        try:
            row = await conn.fetchrow(
                "SELECT coalesce(sum(prompt_tokens), 0) AS p, coalesce(sum(completion_tokens), 0) AS c "
                "FROM usage_ledger WHERE user_id = $1",
                self.user_id,
            )
            held = await conn.fetchval(
                "SELECT count(*) FROM usage_reservations WHERE user_id = $1", self.user_id
            )
        finally:
            await conn.close()
        assert row is not None
        return int(row["p"]), int(row["c"]), int(held)


@pytest.fixture
async def env(node: Node, sim: OpenAISimulator, fake: FakeWebhooks, database_url: str) -> AsyncIterator[Env]:
    settings = make_settings(
        OPENAI_API_KEY=sim.config.api_key,
        OPENAI_BASE_URL=sim.base_url,  # type: ignore[attr-defined]
        OPENAI_MAX_RETRIES="0",
        AGENT_WEBHOOK_ALLOW=fake.url.removeprefix("http://"),
    )
    provider = OpenAIProvider(settings)
    webhooks = WebhookCaller(settings)
    billing = MeterBilling(node.services.usage, node.ctx.db, node.ctx.clock)
    user = await new_user(node.url)
    e = Env(node, sim, fake, AgentRunner(provider, webhooks, billing), uuid.UUID(user.id), database_url)
    yield e
    e.assert_no_secret()
    await webhooks.aclose()
    await provider.close()


def _received(fake: FakeWebhooks) -> list[dict[str, Any]]:
    return [json.loads(r.body) for r in fake.requests]


def _tool_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for m in body["messages"] if m["role"] == "tool"]


async def test_two_step_loop_then_answer(env: Env) -> None:
    env.sim.config.tool_script = [
        [{"name": "lookup_order", "arguments": {"order": "A-17"}}],
        [{"name": "lookup_order", "arguments": {"order": "B-2"}}],
        "A-17 shipped; B-2 is packed.",
    ]
    outcome = await env.run([env.tool()])
    assert outcome.status == "answered" and outcome.error is None
    assert outcome.text == "A-17 shipped; B-2 is packed."
    assert outcome.steps == 3 and outcome.tool_calls == 2
    assert _received(env.fake) == [
        {"tool": "lookup_order", "arguments": {"order": "A-17"}},
        {"tool": "lookup_order", "arguments": {"order": "B-2"}},
    ]
    requests = env.sim.requests
    assert len(requests) == 3
    first = requests[0].body
    assert first["messages"][0] == {"role": "system", "content": "You look orders up."}
    assert first["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "lookup_order",
                "description": "Look an order up.",
                "parameters": ORDER_SCHEMA,
            },
        }
    ]
    assert first["temperature"] == 0.3
    second = _tool_messages(requests[1].body)
    assert len(second) == 1 and second[0]["tool_call_id"] == "call_0_0"
    assert json.loads(second[0]["content"]) == {
        "received": {"tool": "lookup_order", "arguments": {"order": "A-17"}}
    }
    third = _tool_messages(requests[2].body)
    assert [m["tool_call_id"] for m in third] == ["call_0_0", "call_1_0"]
    assert "B-2" in third[1]["content"]

    assert env.kinds() == [
        "turn",
        "tool_started",
        "tool_finished",
        "turn",
        "tool_started",
        "tool_finished",
        *["delta"] * (len(env.kinds()) - 7),
        "turn",
    ]
    started = [e for e in env.events if e.kind == "tool_started"]
    assert started[0].arguments == {"order": "A-17"} and started[0].status == "running"
    assert started[0].tool == "lookup_order" and started[0].call_id == "call_0_0"
    done = env.finished()
    assert all(e.status == "ok" and e.duration_ms is not None and e.error is None for e in done)
    assert done[0].summary is not None and "A-17" in done[0].summary and len(done[0].summary) <= 500
    assert "".join(e.text or "" for e in env.events if e.kind == "delta") == outcome.text

    history = outcome.history
    assert history[0] == {"role": "user", "content": "Where is A-17?"}
    assert [m["role"] for m in history] == ["user", "assistant", "tool", "assistant", "tool", "assistant"]
    assert history[-1] == {"role": "assistant", "content": outcome.text}

    # Billing: each turn settled with the simulator's own usage; nothing left reserved.
    turns = [e for e in env.events if e.kind == "turn"]
    assert all(t.usage is not None and t.usage.source == "provider" for t in turns)
    sim_prompt = sum(count_prompt_tokens(r.body["messages"]) for r in requests)
    assert outcome.prompt_tokens == sim_prompt
    assert sum(t.usage.completion_tokens for t in turns if t.usage) == outcome.completion_tokens
    assert await env.ledger() == (outcome.prompt_tokens, outcome.completion_tokens, 0)


async def test_parallel_calls_in_one_turn(env: Env) -> None:
    env.fake.slow_seconds = 0.6
    env.sim.config.tool_script = [
        [
            {"name": "lookup_order", "arguments": {"order": "A-1"}},
            {"name": "lookup_order", "arguments": {"order": "A-2"}},
        ],
        "Both found.",
    ]
    started = time.monotonic()
    outcome = await env.run([env.tool("/n8n?mode=slow")])
    took = time.monotonic() - started
    assert outcome.status == "answered" and outcome.tool_calls == 2
    assert took < 1.1, f"the two 0.6 s calls ran one after the other ({took:.2f} s)"
    assert sorted(r["arguments"]["order"] for r in _received(env.fake)) == ["A-1", "A-2"]
    kinds = env.kinds()
    assert kinds[:5] == ["turn", "tool_started", "tool_started", "tool_finished", "tool_finished"]
    tool_results = _tool_messages(env.sim.requests[1].body)
    assert [m["tool_call_id"] for m in tool_results] == ["call_0_0", "call_0_1"]
    assert "A-1" in tool_results[0]["content"] and "A-2" in tool_results[1]["content"]


async def test_step_limit_then_continue(env: Env) -> None:
    env.sim.config.tool_script = [
        [{"name": "lookup_order", "arguments": {"order": "A-1"}}],
        [{"name": "lookup_order", "arguments": {"order": "A-2"}}],
        "All done.",
    ]
    outcome = await env.run([env.tool()], step_limit=2)
    assert outcome.status == "step_limit" and outcome.steps == 2 and outcome.tool_calls == 2
    assert len(env.sim.requests) == 2 and len(env.fake.requests) == 2
    assert outcome.history[-1]["role"] == "tool"  # every call answered: the history can go on

    more = await env.run([env.tool()], step_limit=2, history=outcome.history)
    assert more.status == "answered" and more.text == "All done." and more.steps == 1
    assert len(env.sim.requests) == 3 and len(env.fake.requests) == 2
    p, c, held = await env.ledger()
    assert (p, c, held) == (
        outcome.prompt_tokens + more.prompt_tokens,
        outcome.completion_tokens + more.completion_tokens,
        0,
    )


async def test_stop_during_a_slow_webhook(env: Env) -> None:
    env.fake.slow_seconds = 30
    env.sim.config.tool_script = [[{"name": "lookup_order", "arguments": {"order": "A-1"}}], "never"]
    task = asyncio.create_task(env.run([env.tool("/n8n?mode=slow")]))
    while not env.fake.requests:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)
    stopped_at = time.monotonic()
    env.cancel.set()
    outcome = await asyncio.wait_for(task, 5)
    assert time.monotonic() - stopped_at < 1.0
    assert outcome.status == "stopped" and outcome.steps == 1
    done = env.finished()
    assert len(done) == 1 and done[0].status == "error" and done[0].error == "cancelled"
    assert len(env.sim.requests) == 1, "no model turn after the stop"
    last = outcome.history[-1]
    assert last["role"] == "tool" and "stopped" in last["content"]
    # The first turn stays billed; nothing else is, nothing stays reserved.
    assert await env.ledger() == (outcome.prompt_tokens, outcome.completion_tokens, 0)
    assert outcome.prompt_tokens > 0


async def test_stop_and_task_cancel_during_the_model_stream(env: Env) -> None:
    env.sim.config.tool_script = None
    env.sim.config.ttft = 30
    task = asyncio.create_task(env.run([env.tool()]))
    while not env.sim.requests:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)
    stopped_at = time.monotonic()
    env.cancel.set()
    outcome = await asyncio.wait_for(task, 5)
    assert time.monotonic() - stopped_at < 1.0
    assert outcome.status == "stopped"
    await env.sim.wait_for_disconnect(0)
    assert (await env.ledger())[2] == 0

    env.cancel.clear()
    before = await env.ledger()
    task = asyncio.create_task(env.run([env.tool()]))
    while len(env.sim.requests) < 2:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 1)
    await env.sim.wait_for_disconnect(1)
    assert await env.ledger() == before, "a cancelled task bills nothing and holds nothing"


async def test_failing_webhook_becomes_a_tool_error_the_model_sees(env: Env) -> None:
    env.sim.config.tool_script = [
        [{"name": "lookup_order", "arguments": {"order": "A-1"}}],
        "Sorry, the order service refused me.",
    ]
    outcome = await env.run([env.tool(secret="wrong-secret-value-4242")])
    assert outcome.status == "answered" and outcome.text == "Sorry, the order service refused me."
    done = env.finished()
    assert done[0].status == "error" and done[0].error == "http_error"
    assert done[0].summary is not None and "403" in done[0].summary
    content = _tool_messages(env.sim.requests[1].body)[0]["content"]
    assert content.startswith("Error: the tool failed") and "403" in content


async def test_invalid_arguments_never_reach_the_webhook(env: Env) -> None:
    env.sim.config.tool_script = [
        [
            {"name": "lookup_order", "arguments": {"order": 17}},
            {"name": "lookup_order", "arguments": "{not json"},
            {"name": "cancel_order", "arguments": {"order": "A-1"}},
        ],
        "I could not look it up.",
    ]
    outcome = await env.run([env.tool()])
    assert outcome.status == "answered" and outcome.tool_calls == 3
    assert env.fake.requests == []
    done = env.finished()
    assert [e.error for e in done] == ["invalid_arguments", "invalid_arguments", "unknown_tool"]
    started = [e for e in env.events if e.kind == "tool_started"]
    assert started[1].arguments == "{not json"
    contents = [m["content"] for m in _tool_messages(env.sim.requests[1].body)]
    assert "order" in contents[0] and "not of type 'string'" in contents[0]
    assert "not valid JSON" in contents[1]
    assert "no tool named 'cancel_order'" in contents[2]


class _Refusing:
    async def reserve(self, user_id: uuid.UUID, amount: int) -> Reservation:
        raise LimitExceeded(
            UsageState(tier="basic", used=990, limit=1000, reset_at=datetime.now(UTC)), amount
        )

    async def settle(self, reservation: Reservation, *, model: str, usage: TurnUsage) -> None:
        raise AssertionError("nothing to settle")

    async def release(self, reservation: Reservation) -> None:
        raise AssertionError("nothing to release")


async def test_refused_reservation_ends_the_run_before_the_model(env: Env) -> None:
    runner = AgentRunner(env.runner.provider, env.runner.webhooks, _Refusing())
    env.runner = runner
    outcome = await env.run([env.tool()])
    assert outcome.status == "failed" and outcome.steps == 0
    assert outcome.error is not None and outcome.error.code == "token_limit_exceeded"
    assert outcome.error.details is not None and outcome.error.details["limit"] == 1000
    assert env.sim.requests == []


async def test_a_secret_echoed_back_is_never_shown(env: Env) -> None:
    """Even when the model writes the secret into the arguments and the receiver echoes it back."""
    secret = env.fake.n8n_secret
    env.sim.config.tool_script = [[{"name": "lookup_order", "arguments": {"order": secret}}], "Done."]
    outcome = await env.run([env.tool()])
    assert outcome.status == "answered"
    assert secret in env.fake.requests[0].body.decode()  # the webhook got what the model wrote
    started = next(e for e in env.events if e.kind == "tool_started")
    assert started.arguments == {"order": "***"}
    done = env.finished()[0]
    assert done.status == "ok" and done.summary is not None and "***" in done.summary
    assert secret not in _tool_messages(env.sim.requests[1].body)[0]["content"]


async def test_provider_failure_ends_the_run_and_bills_nothing(env: Env) -> None:
    env.sim.config.tool_script = [[{"name": "lookup_order", "arguments": {"order": "A-1"}}], "Done."]
    env.sim.config.fail_first = 1
    env.sim.config.fail_status = 429
    outcome = await env.run([env.tool()])
    assert outcome.status == "failed" and outcome.steps == 1
    assert outcome.error is not None and outcome.error.code == "provider_rate_limited"
    assert env.fake.requests == []
    assert await env.ledger() == (0, 0, 0)
