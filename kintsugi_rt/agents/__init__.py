"""AGENTS: the agent builder (agents with instructions, a model and tools bound to webhooks; each
change a new version; endpoint secrets encrypted at rest) and the webhook caller their tools use."""

from __future__ import annotations

from kintsugi_rt.agents import examples as ex
from kintsugi_rt.agents import frames as f
from kintsugi_rt.agents.conversations import AgentConversations
from kintsugi_rt.agents.runner import AgentRunner, MeterBilling
from kintsugi_rt.agents.runs import ERROR_CODES as RUN_ERROR_CODES
from kintsugi_rt.agents.runs import AgentRunService
from kintsugi_rt.agents.service import ERROR_CODES, AgentService, rekey
from kintsugi_rt.agents.webhooks import WebhookCaller
from kintsugi_rt.socket.registry import SocketFeatures, SocketHandler

__all__ = [
    "AgentConversations",
    "AgentRunService",
    "AgentRunner",
    "AgentService",
    "MeterBilling",
    "WebhookCaller",
    "conversation_socket_features",
    "rekey",
    "run_socket_features",
    "socket_features",
]


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


def run_socket_features(runs: AgentRunService) -> SocketFeatures:
    """Running an agent (agent.chat.*) and its events, bound to ``runs``."""
    return SocketFeatures(
        handlers=(
            SocketHandler(f.AgentChatSend, runs.send, ex.CHAT_SEND, ex.CHAT_SEND_RESULT),
            SocketHandler(f.AgentChatStop, runs.stop_run, ex.CHAT_STOP),
            SocketHandler(f.AgentChatGet, runs.get, ex.CHAT_GET, ex.CHAT_GET_RESULT),
            SocketHandler(f.AgentChatList, runs.list_runs, ex.CHAT_LIST, ex.CHAT_LIST_RESULT),
        ),
        events=ex.RUN_EVENTS,
        error_codes=RUN_ERROR_CODES,
    )


def conversation_socket_features(conversations: AgentConversations) -> SocketFeatures:
    """Agents in conversations (conversation.add_agent / remove_agent, agent.conversation) and the
    events of their answers, bound to ``conversations``."""
    return SocketFeatures(
        handlers=(
            SocketHandler(f.ConversationAddAgent, conversations.add, ex.ADD_AGENT),
            SocketHandler(f.ConversationRemoveAgent, conversations.remove, ex.REMOVE_AGENT),
            SocketHandler(f.AgentConversation, conversations.direct, ex.AGENT_CONVERSATION),
        ),
        events=ex.CONVERSATION_EVENTS,
        error_codes={},
    )
