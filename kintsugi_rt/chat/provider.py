"""Where answers come from: any OpenAI-compatible API through the official SDK, or the offline demo.

A provider streams ``Piece``s and ends with one ``End``; ``stream_turn`` (for agents) also offers the
model tools and yields a ``ToolCall`` for each call the model makes. Closing the iterator (``aclose``), as a
stop does, closes the upstream HTTP connection at once. Retries of 429/5xx happen inside the SDK,
with backoff, before the response starts, which is before the first token; nothing is retried
once tokens have flowed.

The request goes through the SDK (auth, base URL, retries, typed status errors); the streamed
body is read through its raw-response interface and each ``chat.completion.chunk`` decoded with
msgspec into just the fields we use. Building the SDK's pydantic model for every chunk cost a node
more CPU than everything else it does for a streaming answer (see ``docs/performance-chat.md``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol, cast

import msgspec
import openai

from kintsugi_rt.logs import get_logger
from kintsugi_rt.settings import Settings

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Piece:
    text: str


@dataclass(frozen=True, slots=True)
class ProviderUsage:
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True, slots=True)
class End:
    finish_reason: str
    usage: ProviderUsage | None


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One complete function call of the model, assembled from its streamed fragments.

    ``arguments`` is the raw text the model wrote. ``error`` is None when it is a JSON object (an
    empty text counts as ``{}``), else why not: the call is still emitted, so that the agent loop can
    answer it with a tool error instead of failing the turn.
    """

    index: int
    id: str
    name: str
    arguments: str
    error: str | None = None

    @property
    def valid(self) -> bool:
        return self.error is None

    def parsed_arguments(self) -> dict[str, Any]:
        """The arguments as a JSON object; ValueError if they are not one."""
        if self.error is not None:
            raise ValueError(self.error)
        return _arguments_object(self.arguments)


def _arguments_object(text: str) -> dict[str, Any]:
    if not text.strip():
        return {}
    try:
        value = msgspec.json.decode(text)
    except msgspec.DecodeError as exc:
        raise ValueError(f"the arguments are not valid JSON ({exc})") from exc
    if not isinstance(value, dict):
        raise ValueError("the arguments are not a JSON object")
    return value


def _tool_call(index: int, call_id: str | None, name: str, arguments: str) -> ToolCall:
    try:
        _arguments_object(arguments)
    except ValueError as exc:
        error: str | None = str(exc)
    else:
        error = None
    return ToolCall(index, call_id or f"call_{index}", name, arguments, error)


class _PendingCall:
    """A tool call whose fragments are still arriving."""

    __slots__ = ("arguments", "id", "name")

    def __init__(self) -> None:
        self.id: str | None = None
        self.name = ""
        self.arguments: list[str] = []


class ProviderError(Exception):
    """The provider failed; ``code`` is what the client sees in ``chat.error``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


PROVIDER_RATE_LIMITED = "provider_rate_limited"
PROVIDER_ERROR = "provider_error"
PROVIDER_UNREACHABLE = "provider_unreachable"
PROVIDER_REJECTED = "provider_rejected"


class Provider(Protocol):
    def stream(
        self, model: str, messages: list[dict[str, str]], max_tokens: int
    ) -> AsyncGenerator[Piece | End, None]: ...

    def stream_turn(
        self,
        model: str,
        messages: list[dict[str, Any]],
        max_tokens: int,
        tools: list[dict[str, Any]] | None = None,
        *,
        tool_choice: str | dict[str, Any] | None = None,
        temperature: float | None = None,
    ) -> AsyncGenerator[Piece | ToolCall | End, None]: ...

    async def complete(
        self, model: str, messages: list[dict[str, str]], max_tokens: int
    ) -> tuple[str, End]: ...


def _translate(exc: Exception) -> ProviderError:
    if isinstance(exc, openai.RateLimitError):
        return ProviderError(
            PROVIDER_RATE_LIMITED, "The model provider is rate limiting us; try again shortly."
        )
    if isinstance(exc, openai.APIStatusError) and exc.status_code < 500:
        return ProviderError(
            PROVIDER_REJECTED, f"The model provider refused the request ({exc.status_code})."
        )
    if isinstance(exc, openai.APIConnectionError):
        return ProviderError(PROVIDER_UNREACHABLE, "The model provider could not be reached.")
    return ProviderError(PROVIDER_ERROR, "The model provider failed.")


class _FunctionDelta(msgspec.Struct):
    name: str | None = None
    arguments: Any = None  # a string fragment; a few compatible servers send a whole object


class _ToolCallDelta(msgspec.Struct):
    index: int | None = None  # missing on a few compatible servers: the position in the list then
    id: str | None = None
    function: _FunctionDelta | None = None


class _Delta(msgspec.Struct):
    content: str | None = None
    tool_calls: list[_ToolCallDelta] | None = None


class _Choice(msgspec.Struct):
    delta: _Delta | None = None
    finish_reason: str | None = None


class _Usage(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0


class _Chunk(msgspec.Struct):
    """The fields of a streamed ``chat.completion.chunk`` that we read; the rest are skipped."""

    choices: list[_Choice] = []
    usage: _Usage | None = None
    error: Any = None  # an error event in the middle of the stream


_decode_chunk = msgspec.json.Decoder(_Chunk).decode


async def sse_data(body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The ``data`` of each server-sent event in ``body`` (multi-line data joined with newlines).

    Other fields (``event``, ``id``, ``retry``) and comment lines are skipped: chat completion
    streams carry everything in ``data``.
    """
    pending = b""
    data: list[bytes] = []
    async for block in body:
        pending += block
        *lines, pending = pending.split(b"\n")
        for line in lines:
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line:  # a blank line ends the event
                if data:
                    yield b"\n".join(data)
                    data = []
            elif line.startswith(b"data:"):
                value = line[5:]
                data.append(value[1:] if value.startswith(b" ") else value)
    if pending.startswith(b"data:"):
        value = pending[5:]
        data.append(value[1:] if value.startswith(b" ") else value)
    if data:
        yield b"\n".join(data)


class OpenAIProvider:
    def __init__(self, settings: Settings) -> None:
        timeout = settings.openai_timeout.total_seconds()
        self._client = openai.AsyncOpenAI(
            api_key=settings.openai_api_key,
            base_url=settings.openai_base_url,
            organization=settings.openai_org_id,
            max_retries=settings.openai_max_retries,
            timeout=timeout,
            # aiohttp's connection pool, not httpx's: with hundreds of streams open, httpx's pool
            # scans every connection on each request and response close (see docs/performance-chat.md).
            http_client=openai.DefaultAioHttpClient(timeout=timeout),
        )
        self._include_usage = settings.openai_stream_usage

    async def close(self) -> None:
        await self._client.close()

    async def _open(
        self,
        stack: contextlib.AsyncExitStack,
        model: str,
        messages: list[dict[str, Any]],
        max_tokens: int,
        extra: dict[str, Any],
    ) -> Any:
        """The streaming response, its status checked (and retried) by the SDK."""
        kwargs: dict[str, Any] = {
            "model": model,
            "messages": messages,
            "max_tokens": max_tokens,
            "stream": True,
            **extra,
        }
        if self._include_usage:
            kwargs["stream_options"] = {"include_usage": True}
        create = self._client.chat.completions.with_streaming_response.create
        try:
            return await stack.enter_async_context(create(**kwargs))
        except openai.BadRequestError as exc:
            if not self._include_usage or "stream_options" not in str(exc):
                raise
            # Some OpenAI-compatible servers refuse stream_options: stop asking, count locally.
            log.warning("chat.provider_rejects_stream_usage")
            self._include_usage = False
            kwargs.pop("stream_options")
            return await stack.enter_async_context(create(**kwargs))

    def stream(
        self, model: str, messages: list[dict[str, str]], max_tokens: int
    ) -> AsyncGenerator[Piece | End, None]:
        # No tools offered, so no ToolCall can come out (tool_calls deltas are ignored then).
        return cast("AsyncGenerator[Piece | End, None]", self._stream(model, messages, max_tokens, None, {}))

    def stream_turn(
        self,
        model: str,
        messages: list[dict[str, Any]],
        max_tokens: int,
        tools: list[dict[str, Any]] | None = None,
        *,
        tool_choice: str | dict[str, Any] | None = None,
        temperature: float | None = None,
    ) -> AsyncGenerator[Piece | ToolCall | End, None]:
        """One model turn of an agent: like ``stream``, with ``tools`` offered to the model.

        ``messages`` are full chat messages: ``{"role": "assistant", "content": None, "tool_calls":
        [...]}`` and ``{"role": "tool", "tool_call_id": ..., "content": ...}`` included. ``tools`` are
        OpenAI function specs (``{"type": "function", "function": {"name", "description",
        "parameters"}}``), sent as they are. Each call is yielded once, complete, as a ``ToolCall``
        (in index order, when its choice finishes), before the ``End``.
        """
        extra: dict[str, Any] = {}
        if tools:
            extra["tools"] = tools
            if tool_choice is not None:
                extra["tool_choice"] = tool_choice
        if temperature is not None:
            extra["temperature"] = temperature
        return self._stream(model, messages, max_tokens, tools or None, extra)

    async def _stream(
        self,
        model: str,
        messages: list[dict[str, Any]] | list[dict[str, str]],
        max_tokens: int,
        tools: list[dict[str, Any]] | None,
        extra: dict[str, Any],
    ) -> AsyncGenerator[Piece | ToolCall | End, None]:
        finish_reason = "stop"
        usage: ProviderUsage | None = None
        calls: dict[int, _PendingCall] = {}  # tool calls being assembled, by index
        # Leaving this block (the end, a failure, or a stop's aclose) closes the HTTP response.
        async with contextlib.AsyncExitStack() as stack:
            try:
                response = await self._open(
                    stack, model, cast("list[dict[str, Any]]", messages), max_tokens, extra
                )
            except openai.APIError as exc:
                raise _translate(exc) from exc
            events = sse_data(response.iter_bytes())
            done = False
            while True:
                try:
                    data = await anext(events)
                except StopAsyncIteration:
                    break
                except Exception as exc:  # the body broke off: a reset, a timeout, bad chunking
                    log.warning("chat.provider_stream_broken", error=repr(exc))
                    raise ProviderError(
                        PROVIDER_UNREACHABLE, "The model provider's stream broke off."
                    ) from exc
                if done:
                    continue  # read to the end, so the connection can be reused
                if data == b"[DONE]":
                    done = True
                    continue
                try:
                    chunk = _decode_chunk(data)
                except msgspec.DecodeError as exc:
                    log.warning("chat.provider_bad_chunk", error=str(exc))
                    raise ProviderError(
                        PROVIDER_ERROR, "The model provider sent a malformed stream."
                    ) from exc
                if chunk.error is not None:
                    log.warning("chat.provider_stream_error", error=repr(chunk.error)[:500])
                    raise ProviderError(PROVIDER_ERROR, "The model provider failed.")
                if chunk.usage is not None:
                    usage = ProviderUsage(chunk.usage.prompt_tokens, chunk.usage.completion_tokens)
                for choice in chunk.choices:
                    delta = choice.delta
                    if delta is not None:
                        if delta.content:
                            yield Piece(delta.content)
                        if delta.tool_calls and tools is not None:
                            _gather(calls, delta.tool_calls)
                    if choice.finish_reason:
                        finish_reason = choice.finish_reason
                        for call in _complete(calls):
                            yield call
        for call in _complete(calls):  # a server that ended the stream without a finish_reason
            yield call
        yield End(finish_reason, usage)

    async def complete(self, model: str, messages: list[dict[str, str]], max_tokens: int) -> tuple[str, End]:
        try:
            response = await self._client.chat.completions.create(
                model=model,
                messages=messages,  # type: ignore[arg-type]
                max_tokens=max_tokens,
            )
        except openai.APIError as exc:
            raise _translate(exc) from exc
        choice = response.choices[0] if response.choices else None
        text = (choice.message.content or "") if choice else ""
        usage = (
            ProviderUsage(response.usage.prompt_tokens, response.usage.completion_tokens)
            if response.usage
            else None
        )
        return text, End(choice.finish_reason if choice else "stop", usage)


def _gather(calls: dict[int, _PendingCall], deltas: list[_ToolCallDelta]) -> None:
    """Add one chunk's tool call fragments to the calls being assembled."""
    for position, delta in enumerate(deltas):
        index = delta.index if delta.index is not None else position
        call = calls.get(index)
        if call is None:
            call = calls[index] = _PendingCall()
        if delta.id:
            call.id = delta.id
        function = delta.function
        if function is None:
            continue
        if function.name:
            call.name += function.name  # the whole name comes in the first fragment with OpenAI
        arguments = function.arguments
        if isinstance(arguments, str):
            call.arguments.append(arguments)
        elif arguments is not None:
            call.arguments.append(msgspec.json.encode(arguments).decode())


def _complete(calls: dict[int, _PendingCall]) -> list[ToolCall]:
    """The calls assembled so far, in index order; forgets them."""
    done = [
        _tool_call(index, call.id, call.name, "".join(call.arguments))
        for index, call in sorted(calls.items())
    ]
    calls.clear()
    return done


OFFLINE_REPLY = (
    "Offline demo — set OPENAI_API_KEY to talk to a real model. This fixed reply streams at a realistic "
    "pace so that you can try the whole flow here: streaming, stop, regenerate, edit, history and search."
)


class OfflineDemoProvider:
    """Development without a provider key: an honest, fixed reply, one word (token) at a time at
    ``tokens_per_second`` (CHAT_DEMO_TOKENS_PER_SECOND, 20 by default: slow enough to send
    ``chat.stop`` by hand from wscat)."""

    def __init__(self, tokens_per_second: float, first_token_delay: float = 0.3) -> None:
        self._first = first_token_delay
        self._interval = 1.0 / tokens_per_second

    async def stream(
        self, model: str, messages: list[dict[str, str]], max_tokens: int
    ) -> AsyncGenerator[Piece | End, None]:
        await asyncio.sleep(self._first)
        words = OFFLINE_REPLY.split(" ")
        for i, word in enumerate(words[:max_tokens]):
            if i:
                await asyncio.sleep(self._interval)
            yield Piece(word if i == 0 else " " + word)
        yield End("stop" if max_tokens >= len(words) else "length", None)

    def stream_turn(
        self,
        model: str,
        messages: list[dict[str, Any]],
        max_tokens: int,
        tools: list[dict[str, Any]] | None = None,
        *,
        tool_choice: str | dict[str, Any] | None = None,
        temperature: float | None = None,
    ) -> AsyncGenerator[Piece | ToolCall | End, None]:
        """The offline demo never calls a tool: whatever the tools, it streams its fixed text reply."""
        return self.stream(model, [], max_tokens)

    async def complete(self, model: str, messages: list[dict[str, str]], max_tokens: int) -> tuple[str, End]:
        first_user = next((m["content"] for m in messages if m["role"] == "user"), "")
        return " ".join(first_user.split()[:6]), End("stop", None)
