"""Tool calls through the real OpenAIProvider (the official SDK) against the upstream simulator."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from kintsugi_rt.chat.provider import (
    PROVIDER_REJECTED,
    End,
    OfflineDemoProvider,
    OpenAIProvider,
    Piece,
    ProviderError,
    ToolCall,
)
from loadtests.openai_sim import OpenAISimulator
from tests.support import make_settings

TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city now.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "get_time",
            "description": "The local time in a city.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    },
]
QUESTION: list[dict[str, Any]] = [
    {"role": "system", "content": "You are a helpful agent."},
    {"role": "user", "content": "Weather and time in Lviv?"},
]


@pytest.fixture
async def provider(sim: OpenAISimulator) -> AsyncIterator[OpenAIProvider]:
    settings = make_settings(
        OPENAI_API_KEY=sim.config.api_key,
        OPENAI_BASE_URL=sim.base_url,  # type: ignore[attr-defined]
        OPENAI_MAX_RETRIES="0",
    )
    p = OpenAIProvider(settings)
    yield p
    await p.close()


async def turn(
    provider: OpenAIProvider, messages: list[dict[str, Any]], **kwargs: Any
) -> tuple[str, list[ToolCall], End]:
    text: list[str] = []
    calls: list[ToolCall] = []
    ends: list[End] = []
    async for item in provider.stream_turn("gpt-4o-mini", messages, 200, TOOLS, **kwargs):
        assert not ends, "nothing comes after the End"
        if isinstance(item, Piece):
            text.append(item.text)
        elif isinstance(item, ToolCall):
            calls.append(item)
        else:
            ends.append(item)
    assert len(ends) == 1
    return "".join(text), calls, ends[0]


async def test_one_call_assembled_from_split_arguments(
    provider: OpenAIProvider, sim: OpenAISimulator
) -> None:
    sim.config.tool_script = [[{"name": "get_weather", "arguments": {"city": "Lviv", "unit": "celsius"}}]]
    sim.config.tool_argument_chunks = 5
    text, calls, end = await turn(provider, QUESTION, tool_choice="auto", temperature=0.2)
    assert text == ""
    assert calls == [ToolCall(0, "call_0_0", "get_weather", json.dumps({"city": "Lviv", "unit": "celsius"}))]
    assert calls[0].valid and calls[0].parsed_arguments() == {"city": "Lviv", "unit": "celsius"}
    assert end.finish_reason == "tool_calls"
    body = sim.requests[0].body
    assert body["tools"] == TOOLS
    assert body["tool_choice"] == "auto"
    assert body["temperature"] == 0.2
    assert sim.requests[0].script_turn == 0


async def test_parallel_calls_interleaved(provider: OpenAIProvider, sim: OpenAISimulator) -> None:
    sim.config.tool_script = [
        [
            {"name": "get_weather", "arguments": {"city": "Lviv"}},
            {"name": "get_time", "arguments": {"city": "Kyiv", "format": "24h"}},
        ]
    ]
    sim.config.tool_interleave = True
    _, calls, end = await turn(provider, QUESTION)
    assert [(c.index, c.id, c.name) for c in calls] == [
        (0, "call_0_0", "get_weather"),
        (1, "call_0_1", "get_time"),
    ]
    assert calls[0].parsed_arguments() == {"city": "Lviv"}
    assert calls[1].parsed_arguments() == {"city": "Kyiv", "format": "24h"}
    assert end.finish_reason == "tool_calls"


async def test_two_step_exchange_sends_the_tool_results(
    provider: OpenAIProvider, sim: OpenAISimulator
) -> None:
    sim.config.tool_script = [
        [
            {"name": "get_weather", "arguments": {"city": "Lviv"}},
            {"name": "get_time", "arguments": {"city": "Lviv"}},
        ],
        "It is 21 degrees and sunny in Lviv, and 22:05 there.",
    ]
    _, calls, first = await turn(provider, QUESTION)
    assert first.finish_reason == "tool_calls" and len(calls) == 2

    messages = [
        *QUESTION,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                for c in calls
            ],
        },
        {"role": "tool", "tool_call_id": calls[0].id, "content": '{"temp_c": 21, "sky": "sunny"}'},
        {"role": "tool", "tool_call_id": calls[1].id, "content": '{"time": "22:05"}'},
    ]
    text, more_calls, end = await turn(provider, messages)
    assert text == "It is 21 degrees and sunny in Lviv, and 22:05 there."
    assert more_calls == []
    assert end.finish_reason == "stop"

    second = sim.requests[1]
    assert second.status == 200 and second.script_turn == 1
    sent = second.body["messages"]
    assert sent[2]["tool_calls"][1]["id"] == "call_0_1"
    assert [(m["role"], m.get("tool_call_id"), m["content"]) for m in sent[3:]] == [
        ("tool", "call_0_0", '{"temp_c": 21, "sky": "sunny"}'),
        ("tool", "call_0_1", '{"time": "22:05"}'),
    ]


async def test_usage_is_reported(provider: OpenAIProvider, sim: OpenAISimulator) -> None:
    sim.config.tool_script = [[{"name": "get_weather", "arguments": {"city": "Lviv"}}]]
    sim.config.tool_argument_chunks = 3
    _, _, end = await turn(provider, QUESTION)
    assert sim.requests[0].body["stream_options"] == {"include_usage": True}
    assert end.usage is not None
    assert end.usage.prompt_tokens > 0
    assert end.usage.completion_tokens == 1 + 3  # the sim counts chunks: the call's head + 3 fragments


async def test_malformed_arguments_are_surfaced(provider: OpenAIProvider, sim: OpenAISimulator) -> None:
    sim.config.tool_script = [
        [
            {"name": "get_weather", "arguments": '{"city": "Lv'},
            {"name": "get_time", "arguments": '["Lviv"]'},
            {"name": "get_time", "arguments": ""},
        ]
    ]
    _, calls, end = await turn(provider, QUESTION)
    assert end.finish_reason == "tool_calls"
    broken, not_object, empty = calls
    assert broken.arguments == '{"city": "Lv'
    assert not broken.valid and broken.error is not None and "JSON" in broken.error
    with pytest.raises(ValueError):
        broken.parsed_arguments()
    assert not not_object.valid and not_object.error == "the arguments are not a JSON object"
    assert empty.valid and empty.parsed_arguments() == {}


async def test_a_tool_message_without_its_call_is_refused(
    provider: OpenAIProvider, sim: OpenAISimulator
) -> None:
    messages = [*QUESTION, {"role": "tool", "tool_call_id": "call_x", "content": "{}"}]
    with pytest.raises(ProviderError) as caught:
        await turn(provider, messages)
    assert caught.value.code == PROVIDER_REJECTED
    assert sim.requests[0].status == 400


async def test_cancelling_mid_stream_closes_the_upstream_within_a_second(
    provider: OpenAIProvider, sim: OpenAISimulator
) -> None:
    sim.config.tool_script = [[{"name": "get_weather", "arguments": {"city": "Lviv" * 50}}]]
    sim.config.tool_argument_chunks = 200
    sim.config.tokens_per_second = 20  # 10 s for the whole call
    started = asyncio.Event()

    async def consume() -> None:
        async for _ in provider.stream_turn("gpt-4o-mini", QUESTION, 200, TOOLS):
            pass

    async def watch_first_fragments() -> None:
        while not sim.requests or sim.requests[0].tokens_sent < 3:
            await asyncio.sleep(0.01)
        started.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(watch_first_fragments(), 5)
    assert started.is_set() and not task.done()
    cancelled_at = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    record = await sim.wait_for_disconnect(0, timeout=1)
    assert record.disconnected_at is not None
    assert record.disconnected_at - cancelled_at < 1
    assert record.finished_at is None


async def test_chat_stream_ignores_tool_calls_and_still_works(
    provider: OpenAIProvider, sim: OpenAISimulator
) -> None:
    sim.config.tool_script = [[{"name": "get_weather", "arguments": {"city": "Lviv"}}]]
    items = [i async for i in provider.stream("gpt-4o-mini", [{"role": "user", "content": "hi"}], 50)]
    assert all(isinstance(i, Piece) for i in items[:-1]) and isinstance(items[-1], End)
    assert "tools" not in sim.requests[0].body  # no tools offered: a plain text reply


async def test_offline_demo_never_calls_a_tool() -> None:
    demo = OfflineDemoProvider(tokens_per_second=1000, first_token_delay=0)
    items = [i async for i in demo.stream_turn("offline-demo", QUESTION, 5, TOOLS)]
    assert [type(i) for i in items] == [Piece] * 5 + [End]


async def test_the_simulator_interleaves_split_fragments_on_the_wire(sim: OpenAISimulator) -> None:
    sim.config.tool_script = [
        [{"name": "get_weather", "arguments": {"city": "Lviv"}}, {"name": "get_time", "arguments": {}}]
    ]
    body = {
        "model": "gpt-4o-mini",
        "messages": QUESTION,
        "tools": TOOLS,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    headers = {"authorization": f"Bearer {sim.config.api_key}"}
    async with httpx.AsyncClient(base_url=sim.base_url) as client:  # type: ignore[attr-defined]
        response = await client.post("/chat/completions", json=body, headers=headers)
    events = [
        line[6:] for line in response.text.split("\n") if line.startswith("data: ") and line != "data: [DONE]"
    ]
    chunks = [json.loads(e) for e in events]
    deltas = [
        c["choices"][0]["delta"]["tool_calls"][0]
        for c in chunks
        if c["choices"][:1] and c["choices"][0]["delta"]
    ]
    assert [d["index"] for d in deltas] == [0, 1, 0, 1, 0, 1, 0]  # heads, then fragments in turn
    assert [d.get("id") for d in deltas[:2]] == ["call_0_0", "call_0_1"]
    assert all("id" not in d and "name" not in d["function"] for d in deltas[2:])
    assert "".join(d["function"]["arguments"] for d in deltas if d["index"] == 0) == '{"city": "Lviv"}'
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == len(deltas)
