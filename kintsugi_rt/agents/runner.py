"""The tool loop of an agent: model turn, tool calls in parallel, results back to the model, again.

``AgentRunner.run`` drives one run (docs/agents.md, "The loop"): each model turn streams through
``Provider.stream_turn`` with the agent's tools offered as OpenAI function specs; its text goes out as
``delta`` events; its tool calls are checked (known tool, JSON object arguments matching the tool's
``parameters``) and run all at once through ``WebhookCaller``; each call's outcome goes back to the
model as a ``tool`` message (a failure says why, so the model can recover) and the loop goes on, until
the model answers in text or ``step_limit`` model turns were made.

Billing per model turn, as chat does for an answer: reserve the prompt estimate plus ``max_tokens``
before the call (refused: the run fails with ``token_limit_exceeded`` and the model is not called);
after the turn, one ledger row with the provider's usage (or the local estimate when it reported none)
and the reservation settled in the same transaction; a turn that failed before any output gives its
reservation back. Tool calls are not billed.

Stop: setting ``cancel`` (or cancelling the task) ends the model stream (closing its connection) and
the webhook calls in flight at once; what was settled stays settled.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Literal, Protocol, TypeVar

import jsonschema
import msgspec
import referencing.exceptions

from kintsugi_rt.agents.bindings import ToolEndpoint, ToolResult
from kintsugi_rt.agents.webhooks import WebhookCaller
from kintsugi_rt.billing import TOKEN_LIMIT_EXCEEDED, UsageMeter
from kintsugi_rt.billing.usage import LimitExceeded, Reservation
from kintsugi_rt.chat import storage as chat_storage
from kintsugi_rt.chat.provider import End, Piece, Provider, ProviderError, ToolCall
from kintsugi_rt.chat.tokens import count_prompt, count_text
from kintsugi_rt.clock import Clock, SystemClock
from kintsugi_rt.db.database import Database
from kintsugi_rt.logs import get_logger

log = get_logger(__name__)

T = TypeVar("T")

DEFAULT_MAX_TOKENS = 1024
SUMMARY_CHARS = 500
# What the model reads of a tool's answer (the rest is cut, and the model is told so).
TOOL_CONTENT_CHARS = 16_000
INTERNAL_ERROR = "internal_error"

RunStatus = Literal["answered", "step_limit", "stopped", "failed"]
EventKind = Literal["delta", "tool_started", "tool_finished", "turn"]


class RunnerTool(msgspec.Struct, frozen=True):
    """One tool offered to the model: ``parameters`` is the JSON Schema of its arguments."""

    name: str
    description: str
    parameters: dict[str, Any]
    endpoint: ToolEndpoint

    def spec(self) -> dict[str, Any]:
        function: dict[str, Any] = {"name": self.name, "parameters": self.parameters}
        if self.description:
            function["description"] = self.description
        return {"type": "function", "function": function}


class TurnUsage(msgspec.Struct, frozen=True):
    prompt_tokens: int
    completion_tokens: int
    source: Literal["provider", "estimated"]


class StepEvent(msgspec.Struct, frozen=True, omit_defaults=True):
    """What a run reports as it goes.

    - ``delta``: ``text`` the model wrote (in order; the turn's answer is their concatenation).
    - ``tool_started``: ``call_id``, ``tool``, ``arguments`` (the object, or the raw text when it is
      not one), ``status`` "running"; one per call, all of a turn's calls before any finishes.
    - ``tool_finished``: ``call_id``, ``tool``, ``status`` "ok" | "error", ``duration_ms``, ``summary``
      (at most 500 characters of the answer, or of why it failed), ``error`` (a code, on failure).
    - ``turn``: a model turn ended: ``finish_reason`` and the ``usage`` billed for it.
    """

    kind: EventKind
    turn: int
    text: str | None = None
    call_id: str | None = None
    tool: str | None = None
    arguments: Any = None
    status: Literal["running", "ok", "error"] | None = None
    duration_ms: int | None = None
    summary: str | None = None
    error: str | None = None
    finish_reason: str | None = None
    usage: TurnUsage | None = None


class RunError(msgspec.Struct, frozen=True):
    code: str
    message: str
    details: dict[str, Any] | None = None


class RunOutcome(msgspec.Struct, frozen=True):
    """How a run ended. ``steps``: model turns made; ``tool_calls``: calls answered (run or refused);
    ``prompt_tokens``/``completion_tokens``: what was billed in total; ``text``: the last model turn's
    text (the answer, when ``answered``); ``history``: the conversation after the run, without the
    system message, valid to pass back as ``history`` to continue (every tool call has its answer)."""

    status: RunStatus
    text: str
    steps: int
    tool_calls: int
    prompt_tokens: int
    completion_tokens: int
    history: list[dict[str, Any]]
    error: RunError | None = None


class TurnBilling(Protocol):
    """What the loop needs of billing: hold tokens before a model turn, then settle or give them back."""

    async def reserve(self, user_id: uuid.UUID, amount: int) -> Reservation:
        """Hold ``amount`` tokens or raise ``LimitExceeded`` (nothing held)."""
        ...

    async def settle(self, reservation: Reservation, *, model: str, usage: TurnUsage) -> None:
        """Record ``usage`` and drop the reservation, atomically."""
        ...

    async def release(self, reservation: Reservation) -> None: ...


class MeterBilling:
    """``TurnBilling`` on the usage meter, exactly as a chat answer is billed: the reservation in its own
    transaction; the ledger row and the reservation's removal in one transaction, then ``settled``."""

    def __init__(self, meter: UsageMeter, db: Database, clock: Clock, *, purpose: str = "answer") -> None:
        self._meter = meter
        self._db = db
        self._clock = clock
        self._purpose = purpose

    async def reserve(self, user_id: uuid.UUID, amount: int) -> Reservation:
        async with self._db.pool.acquire() as conn, conn.transaction():
            return await self._meter.reserve(conn, user_id, amount)

    async def settle(self, reservation: Reservation, *, model: str, usage: TurnUsage) -> None:
        async with self._db.pool.acquire() as conn, conn.transaction():
            await chat_storage.record_usage(
                conn,
                user_id=reservation.user_id,
                chat_id=None,
                message_id=None,
                purpose=self._purpose,
                model=model,
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
                source=usage.source,
                at=self._clock.now(),
            )
            await self._meter.settle_in(conn, reservation)
        await self._meter.settled(
            reservation.user_id, reservation, usage.prompt_tokens + usage.completion_tokens
        )

    async def release(self, reservation: Reservation) -> None:
        await self._meter.release(reservation)


class _Stopped(Exception):
    pass


class _Turn:
    """What one model turn produced so far (kept when it is cut short)."""

    __slots__ = ("calls", "end", "parts")

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.calls: list[ToolCall] = []
        self.end: End | None = None

    @property
    def text(self) -> str:
        return "".join(self.parts)


def estimate_prompt(messages: list[dict[str, Any]], specs: list[dict[str, Any]]) -> int:
    """A local estimate of a turn's prompt tokens: the messages (tool calls included) and the tools."""
    sizes: list[int] = []
    for message in messages:
        content = message.get("content")
        n = count_text(content) if isinstance(content, str) else 0
        for call in message.get("tool_calls") or ():
            function = call.get("function") or {}
            n += count_text(str(function.get("name", ""))) + count_text(str(function.get("arguments", "")))
        sizes.append(n)
    if specs:
        sizes.append(count_text(msgspec.json.encode(specs).decode()))
    return count_prompt(sizes)


def _redact(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def _summary(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= SUMMARY_CHARS else text[: SUMMARY_CHARS - 1] + "…"


def _where(path: Any) -> str:
    return "".join(f"[{p!r}]" if isinstance(p, int) else f".{p}" for p in path) or "(root)"


class _CallOutcome(msgspec.Struct, frozen=True):
    call: ToolCall
    ok: bool
    duration_ms: int
    content: str  # what the model reads
    summary: str
    error: str | None


class AgentRunner:
    def __init__(
        self,
        provider: Provider,
        webhooks: WebhookCaller,
        billing: TurnBilling,
        *,
        clock: Clock | None = None,
    ) -> None:
        self.provider = provider
        self.webhooks = webhooks
        self.billing = billing
        self.clock = clock or SystemClock()

    async def run(
        self,
        *,
        user_id: uuid.UUID,
        model: str,
        instructions: str,
        temperature: float | None,
        tools: list[RunnerTool],
        step_limit: int,
        history: list[dict[str, Any]],
        emit: Callable[[StepEvent], None],
        cancel: asyncio.Event,
        max_tokens: int = DEFAULT_MAX_TOKENS,
    ) -> RunOutcome:
        system = [{"role": "system", "content": instructions}] if instructions else []
        messages: list[dict[str, Any]] = [*system, *history]
        specs = [tool.spec() for tool in tools]
        by_name = {tool.name: tool for tool in tools}
        secrets = [tool.endpoint.secret for tool in tools]
        steps = calls_answered = prompt_total = completion_total = 0
        last_text = ""

        def outcome(status: RunStatus, error: RunError | None = None) -> RunOutcome:
            return RunOutcome(
                status=status,
                text=last_text,
                steps=steps,
                tool_calls=calls_answered,
                prompt_tokens=prompt_total,
                completion_tokens=completion_total,
                history=messages[len(system) :],
                error=error,
            )

        while True:
            if cancel.is_set():
                return outcome("stopped")
            if steps >= step_limit:
                return outcome("step_limit")
            steps += 1
            estimate = estimate_prompt(messages, specs)
            try:
                reservation = await self.billing.reserve(user_id, estimate + max_tokens)
            except LimitExceeded as exc:
                steps -= 1
                state = exc.state
                return outcome(
                    "failed",
                    RunError(
                        TOKEN_LIMIT_EXCEEDED,
                        f"This needs up to {exc.requested} tokens; {max(0, state.limit - state.used)} are "
                        f"left until {state.reset_at.isoformat()}.",
                        {
                            "limit": state.limit,
                            "used": state.used,
                            "reset_at": state.reset_at.isoformat(),
                            "tier": state.tier,
                        },
                    ),
                )
            turn = _Turn()
            failure: RunError | None = None
            stopped = False
            try:
                try:
                    await self._race(
                        self._model_turn(turn, steps, model, messages, specs, max_tokens, temperature, emit),
                        cancel,
                    )
                except _Stopped:
                    stopped = True
                except ProviderError as exc:
                    failure = RunError(exc.code, exc.message)
                except Exception as exc:
                    log.error("agents.turn_crashed", error=repr(exc))
                    failure = RunError(INTERNAL_ERROR, "The agent's turn failed on our side.")
                usage = self._usage(turn, estimate, failed=failure is not None)
            except BaseException:  # the task was cancelled (or worse): nothing of this turn is billed
                await asyncio.shield(self.billing.release(reservation))
                raise
            if usage is None:
                await self.billing.release(reservation)
            else:
                await asyncio.shield(self.billing.settle(reservation, model=model, usage=usage))
                prompt_total += usage.prompt_tokens
                completion_total += usage.completion_tokens
            last_text = turn.text
            end = turn.end
            emit(
                StepEvent(
                    kind="turn",
                    turn=steps,
                    finish_reason="stopped" if stopped else (end.finish_reason if end else "error"),
                    usage=usage,
                )
            )
            if stopped or failure is not None:
                if turn.text:
                    messages.append({"role": "assistant", "content": turn.text})
                return outcome("stopped") if stopped else outcome("failed", failure)
            if not turn.calls:
                messages.append({"role": "assistant", "content": turn.text})
                return outcome("answered")

            messages.append(
                {
                    "role": "assistant",
                    "content": turn.text or None,
                    "tool_calls": [
                        {
                            "id": call.id,
                            "type": "function",
                            "function": {"name": call.name, "arguments": call.arguments},
                        }
                        for call in turn.calls
                    ],
                }
            )
            for call in turn.calls:
                emit(
                    StepEvent(
                        kind="tool_started",
                        turn=steps,
                        call_id=call.id,
                        tool=call.name,
                        arguments=_shown_arguments(call, secrets),
                        status="running",
                    )
                )
            results = await asyncio.gather(
                *(self._call_tool(call, by_name, secrets, cancel) for call in turn.calls)
            )
            for result in results:
                calls_answered += 1
                messages.append({"role": "tool", "tool_call_id": result.call.id, "content": result.content})
                emit(
                    StepEvent(
                        kind="tool_finished",
                        turn=steps,
                        call_id=result.call.id,
                        tool=result.call.name,
                        status="ok" if result.ok else "error",
                        duration_ms=result.duration_ms,
                        summary=result.summary,
                        error=result.error,
                    )
                )
            if cancel.is_set():
                return outcome("stopped")

    @staticmethod
    async def _race(work: Awaitable[T], cancel: asyncio.Event) -> T:
        """``work``, unless ``cancel`` is set first: then ``work`` is cancelled and ``_Stopped`` raised."""
        task = asyncio.ensure_future(work)
        stop = asyncio.ensure_future(cancel.wait())
        try:
            await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if task.cancelled():
            raise _Stopped
        return task.result()

    async def _model_turn(
        self,
        turn: _Turn,
        number: int,
        model: str,
        messages: list[dict[str, Any]],
        specs: list[dict[str, Any]],
        max_tokens: int,
        temperature: float | None,
        emit: Callable[[StepEvent], None],
    ) -> None:
        stream = self.provider.stream_turn(
            model, list(messages), max_tokens, specs or None, temperature=temperature
        )
        try:
            async for item in stream:
                if isinstance(item, Piece):
                    turn.parts.append(item.text)
                    emit(StepEvent(kind="delta", turn=number, text=item.text))
                elif isinstance(item, ToolCall):
                    turn.calls.append(item)
                else:
                    turn.end = item
        finally:
            await stream.aclose()

    @staticmethod
    def _usage(turn: _Turn, prompt_estimate: int, *, failed: bool) -> TurnUsage | None:
        """What a turn is billed, as chat bills an answer; None: nothing (give the reservation back)."""
        end = turn.end
        if end is not None and end.usage is not None:
            return TurnUsage(end.usage.prompt_tokens, end.usage.completion_tokens, "provider")
        if failed and not turn.parts and not turn.calls:
            return None  # failed before any output: providers do not bill such a request
        completion = count_text(turn.text) + sum(
            count_text(c.name) + count_text(c.arguments) for c in turn.calls
        )
        return TurnUsage(prompt_estimate, completion, "estimated")

    async def _call_tool(
        self, call: ToolCall, by_name: dict[str, RunnerTool], secrets: list[str], cancel: asyncio.Event
    ) -> _CallOutcome:
        started = time.monotonic()

        def refused(code: str, why: str) -> _CallOutcome:
            why = _redact(why, secrets)
            return _CallOutcome(
                call,
                False,
                int((time.monotonic() - started) * 1000),
                f"Error: the tool call was not made: {why}",
                _summary(why),
                code,
            )

        tool = by_name.get(call.name)
        if tool is None:
            known = ", ".join(sorted(by_name)) or "none"
            return refused("unknown_tool", f"there is no tool named {call.name!r} (tools: {known}).")
        if call.error is not None:
            return refused("invalid_arguments", f"the arguments are invalid: {call.error}.")
        arguments = call.parsed_arguments()
        try:
            jsonschema.Draft202012Validator(tool.parameters).validate(arguments)
        except jsonschema.ValidationError as exc:
            return refused(
                "invalid_arguments",
                f"the arguments do not match the tool's parameters at {_where(exc.absolute_path)}: "
                f"{exc.message[:300]}.",
            )
        except (jsonschema.SchemaError, referencing.exceptions.Unresolvable, RecursionError):
            return refused("invalid_arguments", "the tool's parameters schema cannot be checked.")
        result = await self.webhooks.call(tool.endpoint, tool.name, arguments, cancel=cancel)
        return _tool_outcome(call, result, secrets)


def _tool_outcome(call: ToolCall, result: ToolResult, secrets: list[str]) -> _CallOutcome:
    body = _redact(result.body, secrets)
    if result.ok:
        content = body if len(body) <= TOOL_CONTENT_CHARS else body[:TOOL_CONTENT_CHARS] + " [cut]"
        return _CallOutcome(call, True, result.duration_ms, content or "(empty answer)", _summary(body), None)
    error = result.error or "request_failed"
    if error == "cancelled":
        why = "it was stopped by the user before it finished"
    elif result.status is not None:
        why = f"the tool's webhook answered HTTP {result.status} ({error})"
        if body:
            why += f": {body[:1000]}"
    else:
        why = f"the tool's webhook could not be called ({error})"
    return _CallOutcome(
        call, False, result.duration_ms, f"Error: the tool failed: {why}", _summary(why), error
    )


def _shown_arguments(call: ToolCall, secrets: list[str]) -> Any:
    """The call's arguments as an event shows them: never with a tool's secret in them."""
    if call.error is not None:
        return _redact(call.arguments, secrets)
    return _redact_value(call.parsed_arguments(), secrets)


def _redact_value(value: Any, secrets: list[str]) -> Any:
    if isinstance(value, str):
        return _redact(value, secrets)
    if isinstance(value, list):
        return [_redact_value(v, secrets) for v in value]
    if isinstance(value, dict):
        return {_redact(str(k), secrets): _redact_value(v, secrets) for k, v in value.items()}
    return value
