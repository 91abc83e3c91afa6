"""AGENTS: the agent builder (agents with instructions, a model and tools bound to webhooks; each
change a new version; endpoint secrets encrypted at rest) and the webhook caller their tools use."""

from __future__ import annotations

from kintsugi_rt.agents import examples as ex
from kintsugi_rt.agents import frames as f
from kintsugi_rt.agents.service import ERROR_CODES, AgentService, rekey
from kintsugi_rt.agents.webhooks import WebhookCaller
from kintsugi_rt.socket.registry import SocketFeatures, SocketHandler

__all__ = ["AgentService", "WebhookCaller", "rekey", "socket_features"]


def socket_features(agents: AgentService) -> SocketFeatures:
    """The agent builder's frames, bound to ``agents``."""
    return SocketFeatures(
        handlers=(
            SocketHandler(f.AgentCreate, agents.create, ex.CREATE, ex.CREATE_RESULT),
            SocketHandler(f.AgentUpdate, agents.update, ex.UPDATE, ex.UPDATE_RESULT),
            SocketHandler(f.AgentGet, agents.get, ex.GET, ex.GET_RESULT),
            SocketHandler(f.AgentList, agents.list_agents, ex.LIST, ex.LIST_RESULT),
            SocketHandler(f.AgentDelete, agents.delete, ex.DELETE),
            SocketHandler(f.AgentTestTool, agents.test_tool, ex.TEST_TOOL, ex.TEST_TOOL_RESULT),
        ),
        events=ex.EVENTS,
        error_codes=ERROR_CODES,
    )
