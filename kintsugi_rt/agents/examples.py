"""Example frames and replies of the agent builder, for docs/protocol.md."""

from __future__ import annotations

import uuid
from typing import Any

from kintsugi_rt.agents import frames as m
from kintsugi_rt.socket.registry import ServerEvent

_AGENT = uuid.UUID("7a1e4c2b-3d5f-4a6b-8c9d-0e1f2a3b4c5d")
_V1 = uuid.UUID("1b2c3d4e-5f60-4718-9a2b-3c4d5e6f7a8b")
_V2 = uuid.UUID("2c3d4e5f-6071-4829-8b3c-4d5e6f7a8b9c")
_PARAMS: dict[str, Any] = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 100}},
    "required": ["city"],
    "additionalProperties": False,
}
_TOOL = m.ToolInput(
    name="get_weather",
    description="The current weather in a city.",
    parameters=_PARAMS,
    endpoint=m.EndpointInput(
        kind="n8n",
        url="https://n8n.example.com/webhook/weather",
        header_name="X-Api-Key",
        secret="s3cr3t-value",  # noqa: S106 - an example
    ),
)


def _agent(version: int, version_id: uuid.UUID, name: str, updated: str) -> dict[str, Any]:
    return {
        "id": str(_AGENT),
        "version": version,
        "version_id": str(version_id),
        "handle": "weatherbot",
        "name": name,
        "avatar_media_id": None,
        "instructions": "Answer questions about the weather; call get_weather for current conditions.",
        "model": "gpt-4o-mini",
        "temperature": 0.3,
        "conversation_starters": ["What's the weather in Lisbon?"],
        "step_limit": 6,
        "tools": [
            {
                "name": "get_weather",
                "description": "The current weather in a city.",
                "parameters": _PARAMS,
                "endpoint": {
                    "kind": "n8n",
                    "url": "https://n8n.example.com/webhook/weather",
                    "header_name": "X-Api-Key",
                    "has_secret": True,
                },
            }
        ],
        "created_at": "2026-12-01T19:30:00Z",
        "updated_at": updated,
    }


_V1_AGENT = _agent(1, _V1, "Weather bot", "2026-12-01T19:30:00Z")
_V2_AGENT = _agent(2, _V2, "Weather helper", "2026-12-01T19:45:00Z")

CREATE = m.AgentCreate(
    id="ag1",
    name="Weather bot",
    handle="@weatherbot",
    model="gpt-4o-mini",
    instructions="Answer questions about the weather; call get_weather for current conditions.",
    temperature=0.3,
    conversation_starters=["What's the weather in Lisbon?"],
    step_limit=6,
    tools=[_TOOL],
)
CREATE_RESULT: dict[str, Any] = {"agent": _V1_AGENT}
UPDATE = m.AgentUpdate(id="ag2", agent_id=_AGENT, name="Weather helper")
UPDATE_RESULT: dict[str, Any] = {"agent": _V2_AGENT}
GET = m.AgentGet(id="ag3", agent_id=_AGENT)
GET_RESULT: dict[str, Any] = {"agent": _V2_AGENT}
LIST = m.AgentList(id="ag4")
LIST_RESULT: dict[str, Any] = {"agents": [_V2_AGENT]}
DELETE = m.AgentDelete(id="ag5", agent_id=_AGENT)
TEST_TOOL = m.AgentTestTool(id="ag6", agent_id=_AGENT, tool="get_weather", arguments={"city": "Lisbon"})
TEST_TOOL_RESULT: dict[str, Any] = {
    "ok": True,
    "status": 200,
    "duration_ms": 182,
    "body": '{"temperature_c": 21, "sky": "clear"}',
    "error": None,
    "retried": 0,
}

EVENTS: tuple[ServerEvent, ...] = ()

# --- running an agent --------------------------------------------------------------------------------

_RUN = uuid.UUID("3d4e5f60-7182-4930-9c4d-5e6f7a8b9cad")
_RUN_INFO: dict[str, Any] = {
    "id": str(_RUN),
    "agent_id": str(_AGENT),
    "version_id": str(_V2),
    "status": "answered",
    "usage": {"prompt_tokens": 412, "completion_tokens": 38},
    "created_at": "2026-12-01T20:00:00Z",
    "updated_at": "2026-12-01T20:00:04Z",
}
CHAT_SEND = m.AgentChatSend(id="ar1", agent_id=_AGENT, content="What's the weather in Lisbon?")
CHAT_SEND_RESULT: dict[str, Any] = {"run_id": str(_RUN), "turn": 1}
CHAT_STOP = m.AgentChatStop(id="ar2", run_id=_RUN)
CHAT_GET = m.AgentChatGet(id="ar3", run_id=_RUN)
CHAT_GET_RESULT: dict[str, Any] = {
    "run": _RUN_INFO,
    "messages": [
        {"role": "user", "content": "What's the weather in Lisbon?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Lisbon"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temperature_c": 21, "sky": "clear"}'},
        {"role": "assistant", "content": "It's 21 °C and clear in Lisbon."},
    ],
    "steps": [
        {
            "seq": 1,
            "tool": "get_weather",
            "arguments": {"city": "Lisbon"},
            "status": "ok",
            "duration_ms": 182,
            "summary": '{"temperature_c": 21, "sky": "clear"}',
            "created_at": "2026-12-01T20:00:02Z",
        }
    ],
}
CHAT_LIST = m.AgentChatList(id="ar4", agent_id=_AGENT)
CHAT_LIST_RESULT: dict[str, Any] = {"runs": [_RUN_INFO]}

RUN_EVENTS: tuple[ServerEvent, ...] = (
    ServerEvent(m.AgentDelta, m.AgentDelta(run_id=_RUN, turn=1, index=0, text="It's 21 °C")),
    ServerEvent(
        m.AgentStep,
        m.AgentStep(
            run_id=_RUN,
            turn=1,
            call_id="call_1",
            tool="get_weather",
            arguments={"city": "Lisbon"},
            status="ok",
            duration_ms=182,
            summary='{"temperature_c": 21, "sky": "clear"}',
        ),
        durable=True,
    ),
    ServerEvent(
        m.AgentDone,
        m.AgentDone(
            run_id=_RUN,
            turn=1,
            status="answered",
            text="It's 21 °C and clear in Lisbon.",
            usage=m.RunUsage(prompt_tokens=412, completion_tokens=38),
        ),
        durable=True,
    ),
)

# --- agents in conversations -----------------------------------------------------------------------

_CONVERSATION = uuid.UUID("5e6f7a8b-9c0d-4e1f-8a2b-3c4d5e6f7a8b")
_REPLY = uuid.UUID("6f7a8b9c-0d1e-4f2a-9b3c-4d5e6f7a8b9c")
ADD_AGENT = m.ConversationAddAgent(id="ac1", conversation_id=_CONVERSATION, agent_id=_AGENT)
REMOVE_AGENT = m.ConversationRemoveAgent(id="ac2", conversation_id=_CONVERSATION, agent_id=_AGENT)
AGENT_CONVERSATION = m.AgentConversation(id="ac3", agent_id=_AGENT)
CONVERSATION_EVENTS: tuple[ServerEvent, ...] = (
    ServerEvent(
        m.ConversationAgentDelta,
        m.ConversationAgentDelta(
            conversation_id=_CONVERSATION, agent_id=_AGENT, reply_id=_REPLY, index=0, text="It's 21 °C"
        ),
    ),
    ServerEvent(
        m.ConversationAgentStep,
        m.ConversationAgentStep(
            conversation_id=_CONVERSATION, agent_id=_AGENT, reply_id=_REPLY, tool="get_weather", status="ok"
        ),
    ),
    ServerEvent(
        m.ConversationAgentError,
        m.ConversationAgentError(
            conversation_id=_CONVERSATION,
            agent_id=_AGENT,
            reply_id=_REPLY,
            error_code="token_limit_exceeded",
            error="The owner's token limit is reached.",
        ),
    ),
)
