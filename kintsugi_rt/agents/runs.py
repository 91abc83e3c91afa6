"""Running an agent from the socket (``agent.chat.*``; docs/agents.md, "Running an agent").

``agent.chat.send`` answers at once with the run's id; the run goes on in a background task on this
node (``AgentRunner``), whatever happens to the socket that asked. A new run uses the agent's current
version and keeps its id: continuing the run (``run_id``) uses that version again, whatever was edited
since. As the run goes:

- its text goes to every device of the owner as ``agent.delta`` (not durable, batched like chat's
  deltas every ``CHAT_DELTA_INTERVAL``);
- each tool call as ``agent.step`` (durable): ``running`` when it starts, then ``ok`` / ``error`` with
  its duration and summary, stored in ``agent_run_steps`` in the same transaction;
- the end as ``agent.done`` (durable), in the transaction that stores the conversation
  (``agent_runs.history``) and the tokens billed.

``agent.chat.stop`` sets the run's cancel event (on whichever node runs it, through a signal): the
model stream and the webhook calls in flight end within a second and the run ends ``stopped``.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, cast

import msgspec

from kintsugi_rt.agents import storage
from kintsugi_rt.agents.batching import batched
from kintsugi_rt.agents.frames import (
    AgentChatGet,
    AgentChatList,
    AgentChatSend,
    AgentChatStarted,
    AgentChatStop,
    AgentDelta,
    AgentDone,
    AgentRunInfo,
    AgentRunPage,
    AgentRunStep,
    AgentRunView,
    AgentStep,
    RunStatus,
    RunUsage,
    StepStatus,
)
from kintsugi_rt.agents.runner import INTERNAL_ERROR, AgentRunner, RunError, RunnerTool, RunOutcome, StepEvent
from kintsugi_rt.agents.service import NEEDED_TIER, AgentService
from kintsugi_rt.billing import Tiers
from kintsugi_rt.context import AppContext
from kintsugi_rt.logs import get_logger
from kintsugi_rt.socket import streams
from kintsugi_rt.socket.protocol import NOT_FOUND
from kintsugi_rt.socket.registry import SocketContext, SocketError

log = get_logger(__name__)

RUN_IN_PROGRESS = "agent_run_in_progress"
# Described by the chat module, which defines it.
PROVIDER_UNAVAILABLE = "provider_unavailable"
ERROR_CODES = {
    RUN_IN_PROGRESS: "agent.chat.send with the run_id of a run still going: stop it or wait for agent.done.",
}
LIST_LIMIT = 100
_STOP_SIGNAL = "agent.chat.stop"
# A run still marked running after this long was left by a node that went away: it may be continued.
_ABANDONED_AFTER = timedelta(minutes=15)
_SHUTDOWN_WAIT_SECONDS = 10


class _StopSignal(msgspec.Struct):
    run_id: uuid.UUID


_decode_stop = msgspec.json.Decoder(_StopSignal)


@dataclass(slots=True)
class _Live:
    cancel: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


def _no_run() -> SocketError:
    return SocketError(NOT_FOUND, "No such run.", {"field": "run_id"})


def _no_agent() -> SocketError:
    return SocketError(NOT_FOUND, "No such agent.", {"field": "agent_id"})


def _info(row: storage.RunRow) -> AgentRunInfo:
    return AgentRunInfo(
        id=row.id,
        agent_id=row.agent_id,
        version_id=row.version_id,
        status=cast(RunStatus, row.status),
        usage=RunUsage(prompt_tokens=row.prompt_tokens, completion_tokens=row.completion_tokens),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


class AgentRunService:
    def __init__(
        self, ctx: AppContext, *, agents: AgentService, tiers: Tiers, runner: AgentRunner | None
    ) -> None:
        self.ctx = ctx
        self.agents = agents
        self.tiers = tiers
        self.runner = runner
        self.live: dict[uuid.UUID, _Live] = {}
        ctx.events.on_signal(_STOP_SIGNAL, self._on_stop_signal)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        """Stop every run of this node (each ends ``stopped``, stored) and wait for them to finish."""
        for live in self.live.values():
            live.cancel.set()
        tasks = [live.task for live in self.live.values() if live.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=_SHUTDOWN_WAIT_SECONDS)

    # --- frames --------------------------------------------------------------------------------------

    async def send(self, conn: SocketContext, message: AgentChatSend) -> AgentChatStarted:
        me = conn.user_id
        await self.tiers.require(me, NEEDED_TIER)
        if self.runner is None:
            raise SocketError(PROVIDER_UNAVAILABLE, "No model provider is configured on the server.")
        pool = self.ctx.db.pool
        asked = {"role": "user", "content": message.content}
        if message.run_id is None:
            agent = await storage.current(pool, me, message.agent_id)
            if agent is None:
                raise _no_agent()
            tools = self._tools(agent.config)
            run_id = uuid.uuid4()
            history: list[dict[str, Any]] = [asked]
            await storage.create_run(pool, run_id, agent.id, agent.version_id, me, history)
        else:
            run_id = message.run_id
            found = await storage.get_run(pool, me, run_id)
            if found is None or found.agent_id != message.agent_id:
                raise _no_run()
            version = await self.agents.version_config(found.version_id)
            if version is None:
                raise _no_run()
            agent = version
            tools = self._tools(agent.config)
            async with pool.acquire() as db, db.transaction():
                run = await storage.get_run(db, me, run_id, lock=True)
                if run is None:
                    raise _no_run()
                if run.status == "running" and (
                    run_id in self.live or self.ctx.clock.now() - run.updated_at < _ABANDONED_AFTER
                ):
                    raise SocketError(RUN_IN_PROGRESS, "The run is still going: stop it or wait.")
                history = [*run.history, asked]
                await storage.restart_run(db, run_id, history)
        turn = sum(1 for m in history if m.get("role") == "user")
        live = _Live()
        self.live[run_id] = live
        live.task = asyncio.create_task(
            self._run(me, run_id, turn, agent.config, tools, history, live), name=f"agent-run-{run_id}"
        )
        log.info("agents.run_started", user_id=str(me), run_id=str(run_id), agent_id=str(agent.id), turn=turn)
        return AgentChatStarted(run_id=run_id, turn=turn)

    async def stop_run(self, conn: SocketContext, message: AgentChatStop) -> None:
        me = conn.user_id
        await self.tiers.require(me, NEEDED_TIER)
        if await storage.get_run(self.ctx.db.pool, me, message.run_id) is None:
            raise _no_run()
        live = self.live.get(message.run_id)
        if live is not None:
            live.cancel.set()
        else:  # it may be running on another node
            await self.ctx.events.signal(_STOP_SIGNAL, _StopSignal(message.run_id))

    async def get(self, conn: SocketContext, message: AgentChatGet) -> AgentRunView:
        me = conn.user_id
        await self.tiers.require(me, NEEDED_TIER)
        pool = self.ctx.db.pool
        run = await storage.get_run(pool, me, message.run_id)
        if run is None:
            raise _no_run()
        steps = await storage.run_steps(pool, run.id)
        return AgentRunView(
            run=_info(run),
            messages=run.history,
            steps=[
                AgentRunStep(
                    seq=s.seq,
                    tool=s.tool,
                    arguments=s.arguments,
                    status=cast(StepStatus, s.status),
                    duration_ms=s.duration_ms,
                    summary=s.summary,
                    created_at=s.created_at,
                )
                for s in steps
            ],
        )

    async def list_runs(self, conn: SocketContext, message: AgentChatList) -> AgentRunPage:
        me = conn.user_id
        await self.tiers.require(me, NEEDED_TIER)
        rows = await storage.list_runs(self.ctx.db.pool, me, message.agent_id, LIST_LIMIT)
        return AgentRunPage(runs=[_info(r) for r in rows])

    def _on_stop_signal(self, payload: bytes) -> None:
        live = self.live.get(_decode_stop.decode(payload).run_id)
        if live is not None:
            live.cancel.set()

    # --- the run -------------------------------------------------------------------------------------

    def _tools(self, config: dict[str, Any]) -> list[RunnerTool]:
        return [
            RunnerTool(t["name"], t["description"], t["parameters"], self.agents.endpoint(t))
            for t in config["tools"]
        ]

    async def _run(
        self,
        me: uuid.UUID,
        run_id: uuid.UUID,
        turn: int,
        config: dict[str, Any],
        tools: list[RunnerTool],
        history: list[dict[str, Any]],
        live: _Live,
    ) -> None:
        assert self.runner is not None
        queue: asyncio.Queue[StepEvent | None] = asyncio.Queue()
        consumer: asyncio.Task[None] | None = None
        try:
            seq = await storage.next_step_seq(self.ctx.db.pool, run_id)
            consumer = asyncio.create_task(
                self._publish(me, run_id, turn, seq, queue), name=f"agent-pub-{run_id}"
            )
            try:
                outcome = await self.runner.run(
                    user_id=me,
                    model=config["model"],
                    instructions=config["instructions"],
                    temperature=config["temperature"],
                    tools=tools,
                    step_limit=config["step_limit"],
                    history=history,
                    emit=queue.put_nowait,
                    cancel=live.cancel,
                )
            except Exception as exc:
                log.error("agents.run_crashed", run_id=str(run_id), error=repr(exc))
                outcome = RunOutcome(
                    status="failed",
                    text="",
                    steps=0,
                    tool_calls=0,
                    prompt_tokens=0,
                    completion_tokens=0,
                    history=history,
                    error=RunError(INTERNAL_ERROR, "The run failed on our side."),
                )
            queue.put_nowait(None)
            await consumer
            await self._finish(me, run_id, turn, outcome)
        finally:
            if consumer is not None and not consumer.done():
                consumer.cancel()
            self.live.pop(run_id, None)

    async def _publish(
        self, me: uuid.UUID, run_id: uuid.UUID, turn: int, seq: int, queue: asyncio.Queue[StepEvent | None]
    ) -> None:
        """The run's events, in order: deltas batched, tool steps stored and sent as durable events."""
        interval = self.ctx.settings.chat_delta_interval.total_seconds()
        index = 0
        arguments: dict[str, Any] = {}
        async for item in batched(queue, interval):
            if isinstance(item, str):
                delta = AgentDelta(run_id=run_id, turn=turn, index=index, text=item)
                index += 1
                try:
                    await self.ctx.events.push([me], delta, droppable=False)
                except Exception as exc:
                    log.warning("agents.delta_failed", run_id=str(run_id), error=repr(exc))
                continue
            if item.kind == "tool_started":
                arguments[item.call_id or ""] = item.arguments
                step = AgentStep(
                    run_id=run_id,
                    turn=turn,
                    call_id=item.call_id or "",
                    tool=item.tool or "",
                    arguments=item.arguments,
                    status="running",
                )
                try:
                    await self.ctx.events.emit([me], step)
                except Exception as exc:
                    log.warning("agents.step_failed", run_id=str(run_id), error=repr(exc))
            elif item.kind == "tool_finished":
                shown = arguments.pop(item.call_id or "", None)
                status: StepStatus = item.status or "error"
                step = AgentStep(
                    run_id=run_id,
                    turn=turn,
                    call_id=item.call_id or "",
                    tool=item.tool or "",
                    arguments=shown,
                    status=status,
                    duration_ms=item.duration_ms,
                    summary=item.summary,
                    error=item.error,
                )
                try:
                    async with self.ctx.db.pool.acquire() as db, db.transaction():
                        await storage.add_step(
                            db,
                            run_id,
                            seq,
                            tool=item.tool or "",
                            arguments=shown,
                            status=status,
                            duration_ms=item.duration_ms,
                            summary=item.summary,
                        )
                        delivery = await streams.append(db, [me], step)
                    seq += 1
                    await self.ctx.events.publish_durable(delivery)
                except Exception as exc:
                    log.warning("agents.step_failed", run_id=str(run_id), error=repr(exc))

    async def _finish(self, me: uuid.UUID, run_id: uuid.UUID, turn: int, outcome: RunOutcome) -> None:
        error = outcome.error
        done = AgentDone(
            run_id=run_id,
            turn=turn,
            status=outcome.status,
            text=outcome.text,
            usage=RunUsage(prompt_tokens=outcome.prompt_tokens, completion_tokens=outcome.completion_tokens),
            error_code=error.code if error else None,
            error=error.message if error else None,
        )
        async with self.ctx.db.pool.acquire() as db, db.transaction():
            await storage.finish_run(
                db,
                run_id,
                status=outcome.status,
                history=outcome.history,
                prompt_tokens=outcome.prompt_tokens,
                completion_tokens=outcome.completion_tokens,
            )
            delivery = await streams.append(db, [me], done)
        await self.ctx.events.publish_durable(delivery)
        log.info(
            "agents.run_finished",
            run_id=str(run_id),
            status=outcome.status,
            code=error.code if error else None,
            steps=outcome.steps,
            tool_calls=outcome.tool_calls,
            prompt_tokens=outcome.prompt_tokens,
            completion_tokens=outcome.completion_tokens,
        )
