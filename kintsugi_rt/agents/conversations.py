"""Agents in conversations (docs/agents.md, "Agents in conversations").

An agent's owner adds it to a conversation they are a member of (``conversation.add_agent``), or opens
a 1:1 with it (``agent.conversation``). After a ``message.new`` commits (the messenger's
``on_new_message`` hook, wired by the composition root), a message that mentions ``@<handle>`` (any
case, a whole word), or any message in the agent's 1:1, makes the agent answer: a run of
``AgentRunner`` on the conversation's last messages, billed to the owner. Members see it being
written (``conversation.agent_delta``, ``conversation.agent_step``; not durable) and then the answer as
a durable ``message.new`` from the agent (``message.agent`` names it and the tools it used). A failed
run posts nothing: members get ``conversation.agent_error``, the owner with the reason.

One run per agent and conversation at a time, on any node (``conversation_agents.run_started_at``): a
mention while it is answering is skipped (the message is in the history of its next answer). The
agent's own messages never trigger anything.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Sequence
from typing import Any

from kintsugi_rt.agents import storage
from kintsugi_rt.agents.batching import batched
from kintsugi_rt.agents.frames import (
    AgentConversation,
    ConversationAddAgent,
    ConversationAgentDelta,
    ConversationAgentError,
    ConversationAgentStep,
    ConversationRemoveAgent,
)
from kintsugi_rt.agents.runner import INTERNAL_ERROR, AgentRunner, RunnerTool, StepEvent
from kintsugi_rt.agents.service import NEEDED_TIER, AgentService
from kintsugi_rt.billing import Tiers
from kintsugi_rt.context import AppContext
from kintsugi_rt.logs import get_logger
from kintsugi_rt.messenger import Message, MessengerService
from kintsugi_rt.messenger.frames import ConversationRef, MessageAgent, ToolUse
from kintsugi_rt.socket.protocol import NOT_FOUND, ServerMessage
from kintsugi_rt.socket.registry import SocketContext, SocketError

log = get_logger(__name__)

HISTORY_MESSAGES = 20
_SHUTDOWN_WAIT_SECONDS = 10


def mentions(text: str, handle: str) -> bool:
    """``@handle`` in ``text``, any case, as a whole word (not inside an e-mail address or a longer
    handle)."""
    pattern = r"(?<![\w@.])@" + re.escape(handle) + r"(?![\w])"
    return re.search(pattern, text, re.IGNORECASE) is not None


class AgentConversations:
    def __init__(
        self,
        ctx: AppContext,
        *,
        agents: AgentService,
        tiers: Tiers,
        runner: AgentRunner | None,
        messenger: MessengerService,
    ) -> None:
        self.ctx = ctx
        self.agents = agents
        self.tiers = tiers
        self.runner = runner
        self.messenger = messenger
        self.tasks: set[asyncio.Task[None]] = set()
        self.cancel = asyncio.Event()

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        """Stop the answers being written on this node (nothing is posted for them)."""
        self.cancel.set()
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=_SHUTDOWN_WAIT_SECONDS)

    # --- frames --------------------------------------------------------------------------------------

    async def add(self, conn: SocketContext, message: ConversationAddAgent) -> ConversationRef:
        me = conn.user_id
        await self.tiers.require(me, NEEDED_TIER)
        if await storage.current(self.ctx.db.pool, me, message.agent_id) is None:
            raise SocketError(NOT_FOUND, "No such agent.", {"field": "agent_id"})
        view = await self.messenger.add_agent(me, message.conversation_id, message.agent_id)
        return ConversationRef(conversation=view)

    async def remove(self, conn: SocketContext, message: ConversationRemoveAgent) -> ConversationRef:
        view = await self.messenger.remove_agent(conn.user_id, message.conversation_id, message.agent_id)
        return ConversationRef(conversation=view)

    async def direct(self, conn: SocketContext, message: AgentConversation) -> ConversationRef:
        me = conn.user_id
        await self.tiers.require(me, NEEDED_TIER)
        if await storage.current(self.ctx.db.pool, me, message.agent_id) is None:
            raise SocketError(NOT_FOUND, "No such agent.", {"field": "agent_id"})
        return ConversationRef(conversation=await self.messenger.agent_direct(me, message.agent_id))

    # --- the trigger ---------------------------------------------------------------------------------

    def on_new_message(self, message: Message, members: Sequence[uuid.UUID]) -> None:
        """The messenger's after-commit hook: look for agents to answer, in the background."""
        if message.agent is not None or message.call is not None or not message.text:
            return  # an agent never answers itself (nor another agent: no loops)
        if self.runner is None or self.cancel.is_set():
            return
        task = asyncio.create_task(self._triggered(message), name=f"agent-conv-{message.id}")
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _triggered(self, message: Message) -> None:
        try:
            agents, own = await self.messenger.agents_of(message.conversation_id)
            text = message.text or ""
            for agent in agents:
                if agent.agent_id == own or mentions(text, agent.handle):
                    if await self.messenger.claim_agent_run(message.conversation_id, agent.agent_id):
                        await self._answer(message.conversation_id, agent.agent_id, agent.added_by)
                    else:
                        log.info("agents.conversation_busy", conversation_id=str(message.conversation_id))
        except Exception:
            log.exception("agents.conversation_trigger_failed", message_id=str(message.id))

    async def _answer(self, conversation_id: uuid.UUID, agent_id: uuid.UUID, owner: uuid.UUID) -> None:
        reply_id = uuid.uuid4()
        try:
            await self._run(conversation_id, agent_id, owner, reply_id)
        except Exception:
            log.exception("agents.conversation_run_crashed", conversation_id=str(conversation_id))
            await self._failed(
                conversation_id, agent_id, owner, reply_id, INTERNAL_ERROR, "The agent failed on our side."
            )
        finally:
            try:
                await self.messenger.release_agent_run(conversation_id, agent_id)
            except Exception:
                log.exception("agents.conversation_release_failed", conversation_id=str(conversation_id))

    async def _failed(
        self,
        conversation_id: uuid.UUID,
        agent_id: uuid.UUID,
        owner: uuid.UUID,
        reply_id: uuid.UUID,
        code: str,
        reason: str,
    ) -> None:
        members = await self.messenger.members_of(conversation_id)
        plain = ConversationAgentError(conversation_id=conversation_id, agent_id=agent_id, reply_id=reply_id)
        told = ConversationAgentError(
            conversation_id=conversation_id,
            agent_id=agent_id,
            reply_id=reply_id,
            error_code=code,
            error=reason,
        )
        await self._push([m for m in members if m != owner], plain)
        await self._push([owner], told)

    async def _push(self, users: list[uuid.UUID], event: ServerMessage) -> None:
        if not users:
            return
        try:
            await self.ctx.events.push(users, event, droppable=False)
        except Exception as exc:
            log.warning("agents.conversation_push_failed", error=repr(exc))

    async def _run(
        self, conversation_id: uuid.UUID, agent_id: uuid.UUID, owner: uuid.UUID, reply_id: uuid.UUID
    ) -> None:
        assert self.runner is not None
        try:
            await self.tiers.require(owner, NEEDED_TIER)
        except SocketError as exc:
            await self._failed(conversation_id, agent_id, owner, reply_id, exc.code, str(exc))
            return
        agent = await storage.current(self.ctx.db.pool, owner, agent_id)
        if agent is None:
            await self._failed(
                conversation_id, agent_id, owner, reply_id, NOT_FOUND, "The agent was deleted."
            )
            return
        config = agent.config
        history = self._history(
            agent_id, await self.messenger.recent_messages(conversation_id, HISTORY_MESSAGES)
        )
        tools = [
            RunnerTool(t["name"], t["description"], t["parameters"], self.agents.endpoint(t))
            for t in config["tools"]
        ]
        members = await self.messenger.members_of(conversation_id)
        if owner not in members:  # the owner left: nobody pays for it any more
            log.info("agents.conversation_owner_gone", conversation_id=str(conversation_id))
            return
        used: list[ToolUse] = []
        queue: asyncio.Queue[StepEvent | None] = asyncio.Queue()
        publisher = asyncio.create_task(
            self._publish(conversation_id, agent_id, reply_id, members, queue, used),
            name=f"agent-conv-pub-{reply_id}",
        )
        try:
            outcome = await self.runner.run(
                user_id=owner,
                model=config["model"],
                instructions=config["instructions"],
                temperature=config["temperature"],
                tools=tools,
                step_limit=config["step_limit"],
                history=history,
                emit=queue.put_nowait,
                cancel=self.cancel,
            )
        finally:
            queue.put_nowait(None)
            await publisher
        text = outcome.text.strip()
        if outcome.status in ("answered", "step_limit") and text:
            tag = MessageAgent(agent_id=agent_id, name=config["name"], handle=agent.handle, tools_used=used)
            await self.messenger.post_as_agent(conversation_id, tag, outcome.text, f"agent:{reply_id}")
            log.info(
                "agents.conversation_answered", conversation_id=str(conversation_id), agent_id=str(agent_id)
            )
            return
        error = outcome.error
        await self._failed(
            conversation_id,
            agent_id,
            owner,
            reply_id,
            error.code if error else outcome.status,
            error.message if error else f"The agent's run ended {outcome.status} without an answer.",
        )

    @staticmethod
    def _history(agent_id: uuid.UUID, recent: list[tuple[str, Message]]) -> list[dict[str, Any]]:
        """The conversation as the model reads it: this agent's messages as its own, everyone else's
        (people and other agents) as user messages headed by their name."""
        history: list[dict[str, Any]] = []
        for author, message in recent:
            if not message.text or message.call is not None:
                continue
            if message.agent is not None and message.agent.agent_id == agent_id:
                history.append({"role": "assistant", "content": message.text})
                continue
            name = f"{message.agent.name} (agent)" if message.agent is not None else (author or "someone")
            history.append({"role": "user", "content": f"{name}: {message.text}"})
        return history

    async def _publish(
        self,
        conversation_id: uuid.UUID,
        agent_id: uuid.UUID,
        reply_id: uuid.UUID,
        members: list[uuid.UUID],
        queue: asyncio.Queue[StepEvent | None],
        used: list[ToolUse],
    ) -> None:
        """The answer's pieces to every member (batched like chat's deltas) and its tool steps."""
        interval = self.ctx.settings.chat_delta_interval.total_seconds()
        index = 0
        async for item in batched(queue, interval):
            if isinstance(item, str):
                delta = ConversationAgentDelta(
                    conversation_id=conversation_id,
                    agent_id=agent_id,
                    reply_id=reply_id,
                    index=index,
                    text=item,
                )
                index += 1
                await self._push(members, delta)
                continue
            if item.kind in ("tool_started", "tool_finished"):
                status = "running" if item.kind == "tool_started" else (item.status or "error")
                if item.kind == "tool_finished":
                    used.append(ToolUse(tool=item.tool or "", status="ok" if status == "ok" else "error"))
                step = ConversationAgentStep(
                    conversation_id=conversation_id,
                    agent_id=agent_id,
                    reply_id=reply_id,
                    tool=item.tool or "",
                    status=status,
                )
                await self._push(members, step)
