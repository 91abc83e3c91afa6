"""Agent builder frames: create, read, change (each change a new immutable version), delete, and try
one tool. Every frame needs the ``premium_starter`` tier or above.

A tool's endpoint ``secret`` is write-only: replies show ``has_secret`` instead, never the value.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from kintsugi_rt.socket.protocol import ClientMessage, ServerMessage

AgentName = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
# 3 to 32 of a-z, 0-9 and _ (checked by the handler); room for a leading '@' and spaces.
HandleInput = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Instructions = Annotated[str, msgspec.Meta(max_length=20_000)]
ModelId = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
Temperature = Annotated[float, msgspec.Meta(ge=0, le=2)]
Starter = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Starters = Annotated[list[Starter], msgspec.Meta(max_length=6)]
StepLimit = Annotated[int, msgspec.Meta(ge=1, le=20)]
VersionNumber = Annotated[int, msgspec.Meta(ge=1, le=2_147_483_647)]
ToolName = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[a-zA-Z0-9_-]{1,64}$")]
ToolDescription = Annotated[str, msgspec.Meta(max_length=1024)]
Url = Annotated[str, msgspec.Meta(min_length=1, max_length=2048)]
HeaderName = Annotated[
    str, msgspec.Meta(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
]
Secret = Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]
EndpointKind = Literal["n8n", "make", "hmac"]
DurationMs = Annotated[int, msgspec.Meta(ge=0, le=86_400_000)]
HttpStatus = Annotated[int, msgspec.Meta(ge=100, le=599)]
Retries = Annotated[int, msgspec.Meta(ge=0, le=100)]
MAX_TOOLS = 16

# --- shapes ----------------------------------------------------------------------------------------


class EndpointInput(msgspec.Struct, omit_defaults=True):
    """Where a tool is called and how the call authenticates (docs/agents.md). ``secret``: the n8n
    header value, the Make API key or the HMAC key; on ``agent.update`` leave it out to keep the
    secret the tool of the same name had."""

    kind: EndpointKind
    url: Url
    header_name: HeaderName | None = None  # n8n only; default "Authorization"
    secret: Secret | None = None


class ToolInput(msgspec.Struct):
    name: ToolName
    description: ToolDescription
    # A JSON Schema (2020-12) whose top-level type is "object": the tool's arguments.
    parameters: dict[str, Any]
    endpoint: EndpointInput


class EndpointView(msgspec.Struct):
    kind: EndpointKind
    url: str
    header_name: str | None
    has_secret: bool


class ToolView(msgspec.Struct):
    name: str
    description: str
    parameters: dict[str, Any]
    endpoint: EndpointView


class Agent(msgspec.Struct):
    id: uuid.UUID
    version: VersionNumber  # the current version (1, 2, …): each change makes a new one
    version_id: uuid.UUID  # what a running chat keeps
    handle: str  # lower-case, without the '@'
    name: str
    avatar_media_id: uuid.UUID | None
    instructions: str
    model: str
    temperature: float
    conversation_starters: list[str]
    step_limit: StepLimit
    tools: list[ToolView]
    created_at: datetime
    updated_at: datetime


class AgentRef(msgspec.Struct):
    agent: Agent


class AgentPage(msgspec.Struct):
    agents: list[Agent]


class ToolTestResult(msgspec.Struct):
    """The outcome of the one call ``agent.test_tool`` made (see the ``error`` values in docs/agents.md)."""

    ok: bool
    status: HttpStatus | None
    duration_ms: DurationMs
    body: str
    error: str | None
    retried: Retries = 0


# --- client frames ---------------------------------------------------------------------------------


class AgentCreate(ClientMessage, tag="agent.create"):
    """Create an agent (version 1). ``model`` must be one your tier may use; ``handle`` is unique
    among agents whatever its case."""

    name: AgentName
    handle: HandleInput
    model: ModelId
    instructions: Instructions = ""
    avatar_media_id: uuid.UUID | None = None
    temperature: Temperature = 1.0
    conversation_starters: Starters = []
    step_limit: StepLimit = 6
    tools: Annotated[list[ToolInput], msgspec.Meta(max_length=MAX_TOOLS)] = []


class AgentUpdate(ClientMessage, tag="agent.update", omit_defaults=True):
    """Change an agent: a field left out is kept; ``tools`` replaces the whole list. Makes a new
    version; chats already running keep theirs."""

    agent_id: uuid.UUID
    name: AgentName | msgspec.UnsetType = msgspec.UNSET
    handle: HandleInput | msgspec.UnsetType = msgspec.UNSET
    model: ModelId | msgspec.UnsetType = msgspec.UNSET
    instructions: Instructions | msgspec.UnsetType = msgspec.UNSET
    avatar_media_id: uuid.UUID | msgspec.UnsetType | None = msgspec.UNSET
    temperature: Temperature | msgspec.UnsetType = msgspec.UNSET
    conversation_starters: Starters | msgspec.UnsetType = msgspec.UNSET
    step_limit: StepLimit | msgspec.UnsetType = msgspec.UNSET
    tools: Annotated[list[ToolInput], msgspec.Meta(max_length=MAX_TOOLS)] | msgspec.UnsetType = msgspec.UNSET


class AgentGet(ClientMessage, tag="agent.get", omit_defaults=True):
    """One of your agents: its current version, or (``version``) an earlier one."""

    agent_id: uuid.UUID
    version: VersionNumber | None = None


class AgentList(ClientMessage, tag="agent.list"):
    """Your agents (not deleted), oldest first."""


class AgentDelete(ClientMessage, tag="agent.delete"):
    """Delete an agent: it is gone from lists and its handle is free; chats already running keep
    their version."""

    agent_id: uuid.UUID


class AgentTestTool(ClientMessage, tag="agent.test_tool"):
    """Call one tool of the agent's current version once with ``arguments`` (checked against its
    ``parameters`` schema first) and show the outcome."""

    agent_id: uuid.UUID
    tool: ToolName
    arguments: dict[str, Any] = {}


# --- running an agent (runs.py) ---------------------------------------------------------------------

Content = Annotated[str, msgspec.Meta(min_length=1, max_length=20_000)]
RunStatus = Literal["running", "answered", "step_limit", "stopped", "failed"]
DoneStatus = Literal["answered", "step_limit", "stopped", "failed"]
StepStatus = Literal["running", "ok", "error"]


class RunUsage(msgspec.Struct):
    prompt_tokens: int
    completion_tokens: int


class AgentRunInfo(msgspec.Struct):
    id: uuid.UUID
    agent_id: uuid.UUID
    version_id: uuid.UUID  # the agent's version the run uses (its current one when the run began)
    status: RunStatus
    usage: RunUsage  # billed over all of the run's turns
    created_at: datetime
    updated_at: datetime


class AgentRunStep(msgspec.Struct):
    """A tool call the run made (stored when it finished). ``arguments`` with secrets replaced by ***."""

    seq: int
    tool: str
    arguments: Any
    status: StepStatus
    duration_ms: DurationMs | None
    summary: str | None
    created_at: datetime


class AgentChatStarted(msgspec.Struct):
    run_id: uuid.UUID
    turn: int  # which of the run's user messages this is (1, 2, …)


class AgentRunView(msgspec.Struct):
    run: AgentRunInfo
    # The conversation (OpenAI-format messages: user, assistant with tool_calls, tool), without the
    # instructions; while the run is going it holds what was stored when it began.
    messages: list[dict[str, Any]]
    steps: list[AgentRunStep]


class AgentRunPage(msgspec.Struct):
    runs: list[AgentRunInfo]


class AgentChatSend(ClientMessage, tag="agent.chat.send", omit_defaults=True):
    """Ask an agent: a new run (its current version), or with ``run_id`` the next message of an earlier
    run (the version that run began with). Answers at once; ``agent.delta``, ``agent.step`` and
    ``agent.done`` follow."""

    agent_id: uuid.UUID
    content: Content
    run_id: uuid.UUID | None = None


class AgentChatStop(ClientMessage, tag="agent.chat.stop"):
    """Stop a run: it ends (``agent.done`` status ``stopped``) within a second."""

    run_id: uuid.UUID


class AgentChatGet(ClientMessage, tag="agent.chat.get"):
    """One of your runs: its messages and tool steps."""

    run_id: uuid.UUID


class AgentChatList(ClientMessage, tag="agent.chat.list", omit_defaults=True):
    """Your runs (of one agent, with ``agent_id``), newest first, at most 100."""

    agent_id: uuid.UUID | None = None


class AgentDelta(ServerMessage, tag="agent.delta"):
    """Text the agent is writing (not durable): ``index`` counts pieces of the run's message from 0."""

    run_id: uuid.UUID
    turn: int
    index: int
    text: str


class AgentStep(ServerMessage, tag="agent.step"):
    """A tool call started (``status`` running) or ended (ok / error, with ``duration_ms`` and a
    ``summary`` of at most 500 characters). ``arguments`` has secrets replaced by ***."""

    run_id: uuid.UUID
    turn: int
    call_id: str
    tool: str
    arguments: Any
    status: StepStatus
    duration_ms: DurationMs | None = None
    summary: str | None = None
    error: str | None = None


class AgentDone(ServerMessage, tag="agent.done"):
    """A run's message ended: ``text`` the answer (or the text so far), ``usage`` billed for this
    message; on ``failed``, ``error_code`` and ``error``."""

    run_id: uuid.UUID
    turn: int
    status: DoneStatus
    text: str
    usage: RunUsage
    error_code: str | None = None
    error: str | None = None


# --- agents in conversations (docs/agents.md, "Agents in conversations") ----------------------------


class ConversationAddAgent(ClientMessage, tag="conversation.add_agent"):
    """The agent's owner, a member of the conversation, adds it: a mention of its ``@handle`` makes
    it answer (the owner's tokens pay). Reply: the conversation (``conversation.updated`` to all)."""

    conversation_id: uuid.UUID
    agent_id: uuid.UUID


class ConversationRemoveAgent(ClientMessage, tag="conversation.remove_agent"):
    """Whoever added the agent, or a group admin, removes it."""

    conversation_id: uuid.UUID
    agent_id: uuid.UUID


class AgentConversation(ClientMessage, tag="agent.conversation"):
    """The owner's 1:1 with the agent (created on first use): every message in it makes it answer."""

    agent_id: uuid.UUID


class ConversationAgentDelta(ServerMessage, tag="conversation.agent_delta"):
    """The agent's answer as it is written (not durable): ``reply_id`` names one answer, ``index``
    counts its pieces from 0. The whole answer then comes as ``message.new`` with ``message.agent``."""

    conversation_id: uuid.UUID
    agent_id: uuid.UUID
    reply_id: uuid.UUID
    index: int
    text: str


class ConversationAgentStep(ServerMessage, tag="conversation.agent_step"):
    """The agent calls a tool (``running``), then it finished (``ok`` / ``error``); not durable."""

    conversation_id: uuid.UUID
    agent_id: uuid.UUID
    reply_id: uuid.UUID
    tool: str
    status: Literal["running", "ok", "error"]


class ConversationAgentError(ServerMessage, tag="conversation.agent_error", omit_defaults=True):
    """The agent could not answer (nothing is posted; not durable). The agent's owner also gets
    ``error_code`` and ``error``."""

    conversation_id: uuid.UUID
    agent_id: uuid.UUID
    reply_id: uuid.UUID
    error_code: str | None = None
    error: str | None = None
