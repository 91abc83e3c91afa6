"""Where answers come from: any OpenAI-compatible API through the official SDK, or the offline demo.

A provider streams ``Piece``s and ends with one ``End``. Closing the iterator (``aclose``), as a
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
from typing import Any, Protocol

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


class _Delta(msgspec.Struct):
    content: str | None = None


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
        self, stack: contextlib.AsyncExitStack, model: str, messages: list[dict[str, str]], max_tokens: int
    ) -> Any:
        """The streaming response, its status checked (and retried) by the SDK."""
        kwargs: dict[str, Any] = {
            "model": model,
            "messages": messages,
            "max_tokens": max_tokens,
            "stream": True,
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

    async def stream(
        self, model: str, messages: list[dict[str, str]], max_tokens: int
    ) -> AsyncGenerator[Piece | End, None]:
        finish_reason = "stop"
        usage: ProviderUsage | None = None
        # Leaving this block (the end, a failure, or a stop's aclose) closes the HTTP response.
        async with contextlib.AsyncExitStack() as stack:
            try:
                response = await self._open(stack, model, messages, max_tokens)
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
                    if choice.delta is not None and choice.delta.content:
                        yield Piece(choice.delta.content)
                    if choice.finish_reason:
                        finish_reason = choice.finish_reason
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

    async def complete(self, model: str, messages: list[dict[str, str]], max_tokens: int) -> tuple[str, End]:
        first_user = next((m["content"] for m in messages if m["role"] == "user"), "")
        return " ".join(first_user.split()[:6]), End("stop", None)
