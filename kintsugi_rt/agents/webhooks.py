"""Calling an agent's tool: one POST of JSON to the tool's webhook, safely.

The body is ``{"tool": <name>, "arguments": {...}}`` (n8n's Webhook node and Make's custom webhook
receive it as-is), with the endpoint's authentication (``bindings``). Every hop is checked by
``ssrf.check_url`` and connected to the address that was checked (Host and TLS SNI carry the name).
Redirects are followed by hand, at most 3, and the authentication never goes to another origin.

Limits: ``AGENT_WEBHOOK_TIMEOUT`` bounds one attempt (connecting, sending, reading, redirects);
``AGENT_WEBHOOK_MAX_BYTES`` bounds the answer (read as a stream, stopped past it). A tool's POST may not
be idempotent, so an attempt is repeated (at most twice, with backoff) only when the receiver cannot
have acted on it: the connection failed before anything was sent, or it answered 502, 503, 504 or
429 with no ``Retry-After`` or one of at most ``MAX_RETRY_AFTER`` seconds. A timeout is never retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urljoin

import httpx
import msgspec
import structlog

from kintsugi_rt.agents.bindings import SIGNATURE_HEADER, ToolEndpoint, ToolResult, sign
from kintsugi_rt.agents.ssrf import AllowList, Refused, Target, check_url
from kintsugi_rt.settings import Settings

log = structlog.get_logger("kintsugi_rt.agents.webhooks")

MAX_REDIRECTS = 3
MAX_RETRIES = 2
MAX_RETRY_AFTER = 3.0
RETRY_STATUSES = frozenset({429, 502, 503, 504})
BACKOFF = (0.25, 1.0)
EXCERPT_CHARS = 500
USER_AGENT = "Kintsugi-RT-Agents/1"


class _Failed(Exception):
    def __init__(self, error: str, status: int | None = None, *, retryable: bool = False) -> None:
        super().__init__(error)
        self.error = error
        self.status = status
        self.retryable = retryable


def auth_headers(endpoint: ToolEndpoint, body: bytes) -> dict[str, str]:
    """The headers that authenticate a call to ``endpoint`` (n8n Header Auth, Make API key, HMAC)."""
    if endpoint.kind == "n8n":
        return {endpoint.header_name or "Authorization": endpoint.secret}
    if endpoint.kind == "make":
        return {"x-make-apikey": endpoint.secret}
    return {SIGNATURE_HEADER: sign(endpoint.secret, body)}


class WebhookCaller:
    """Calls tools' webhooks; one HTTP client per node (``aclose`` at shutdown)."""

    def __init__(
        self, settings: Settings, *, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    ) -> None:
        self._timeout = settings.agent_webhook_timeout.total_seconds()
        self._max_bytes = settings.agent_webhook_max_bytes
        self._allow = AllowList.parse(settings.agent_webhook_allow)
        self._allow_http = not settings.is_production
        self._sleep = sleep
        self._client: httpx.AsyncClient | None = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self._timeout),
                follow_redirects=False,
                trust_env=False,
                limits=httpx.Limits(max_keepalive_connections=0),
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def call(
        self,
        endpoint: ToolEndpoint,
        tool_name: str,
        arguments: dict[str, Any],
        *,
        cancel: asyncio.Event | None = None,
    ) -> ToolResult:
        """POST the call to the tool's webhook; never raises (but for task cancellation)."""
        started = time.monotonic()
        if cancel is None:
            return await self._call(endpoint, tool_name, arguments, started)
        work = asyncio.ensure_future(self._call(endpoint, tool_name, arguments, started))
        stop = asyncio.ensure_future(cancel.wait())
        try:
            await asyncio.wait({work, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            if not work.done():
                work.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await work
        if not work.cancelled():
            return work.result()
        log.info("agents.webhook_cancelled", tool=tool_name, kind=endpoint.kind)
        return ToolResult(False, None, _ms(started), "", "cancelled")

    async def _call(
        self, endpoint: ToolEndpoint, tool_name: str, arguments: dict[str, Any], started: float
    ) -> ToolResult:
        body = msgspec.json.encode({"tool": tool_name, "arguments": arguments})
        retried = 0
        while True:
            try:
                async with asyncio.timeout(self._timeout):
                    status, text = await self._attempt(endpoint, tool_name, body)
            except Refused as exc:
                log.warning(
                    "agents.webhook_blocked",
                    tool=tool_name,
                    kind=endpoint.kind,
                    reason=exc.reason,
                    detail=exc.detail,
                )
                return ToolResult(False, None, _ms(started), "", exc.reason, retried)
            except TimeoutError:
                log.warning("agents.webhook_failed", tool=tool_name, kind=endpoint.kind, error="timeout")
                return ToolResult(False, None, _ms(started), "", "timeout", retried)
            except _Failed as exc:
                if exc.retryable and retried < MAX_RETRIES:
                    delay = BACKOFF[retried]
                    retried += 1
                    log.info(
                        "agents.webhook_retry",
                        tool=tool_name,
                        kind=endpoint.kind,
                        error=exc.error,
                        status=exc.status,
                        attempt=retried,
                    )
                    await self._sleep(delay)
                    continue
                log.warning(
                    "agents.webhook_failed",
                    tool=tool_name,
                    kind=endpoint.kind,
                    error=exc.error,
                    status=exc.status,
                    retried=retried,
                )
                return ToolResult(False, exc.status, _ms(started), "", exc.error, retried)
            except _Retry as again:
                if retried < MAX_RETRIES:
                    retried += 1
                    log.info(
                        "agents.webhook_retry",
                        tool=tool_name,
                        kind=endpoint.kind,
                        status=again.status,
                        attempt=retried,
                    )
                    await self._sleep(again.delay if again.delay is not None else BACKOFF[retried - 1])
                    continue
                status, text = again.status, again.text
            ok = 200 <= status < 300
            log.info(
                "agents.webhook_called",
                tool=tool_name,
                kind=endpoint.kind,
                status=status,
                ok=ok,
                duration_ms=_ms(started),
                retried=retried,
            )
            if ok:
                return ToolResult(True, status, _ms(started), text, None, retried)
            return ToolResult(False, status, _ms(started), text[:EXCERPT_CHARS], "http_error", retried)

    async def _attempt(self, endpoint: ToolEndpoint, tool_name: str, body: bytes) -> tuple[int, str]:
        url = endpoint.url
        first: Target | None = None
        method, content = "POST", body
        for _hop in range(MAX_REDIRECTS + 1):
            try:
                target = await check_url(url, allow=self._allow, allow_http=self._allow_http)
            except OSError:
                raise _Failed("connect_failed", retryable=first is None) from None
            first = first or target
            headers = {
                "Content-Type": "application/json",
                "User-Agent": USER_AGENT,
                "Accept-Encoding": "identity",
                "Host": target.host_header,
            }
            if target.origin == first.origin:
                headers |= auth_headers(endpoint, content)
            response = await self._send(target, method, headers, content)
            try:
                location = response.headers.get("location")
                if response.status_code in (301, 302, 303, 307, 308) and location:
                    url = urljoin(url, location)
                    if response.status_code in (301, 302, 303):
                        method, content = "GET", b""
                    continue
                text = await self._read(response)
            finally:
                await response.aclose()
            if response.status_code in RETRY_STATUSES:
                delay = _retry_after(response.headers.get("retry-after"))
                if delay is None or delay <= MAX_RETRY_AFTER:
                    raise _Retry(response.status_code, text[:EXCERPT_CHARS], delay)
            return response.status_code, text
        raise _Failed("too_many_redirects")

    async def _send(
        self, target: Target, method: str, headers: dict[str, str], content: bytes
    ) -> httpx.Response:
        """Send to the checked addresses in turn (the next one only when connecting failed)."""
        for address in target.addresses:
            request = self._http().build_request(
                method,
                httpx.URL(target.url).copy_with(host=address),
                headers=headers,
                content=content if method == "POST" else None,
                extensions={"sni_hostname": target.host} if target.scheme == "https" else {},
            )
            try:
                return await self._http().send(request, stream=True)
            except httpx.ConnectError:
                continue
            except httpx.TimeoutException:
                raise TimeoutError from None
            except httpx.HTTPError:
                raise _Failed("request_failed") from None
        raise _Failed("connect_failed", retryable=True)

    async def _read(self, response: httpx.Response) -> str:
        declared = response.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self._max_bytes:
            raise _Failed("response_too_large", response.status_code)
        chunks: list[bytes] = []
        size = 0
        try:
            async for chunk in response.aiter_raw():
                size += len(chunk)
                if size > self._max_bytes:
                    raise _Failed("response_too_large", response.status_code)
                chunks.append(chunk)
        except httpx.TimeoutException:
            raise TimeoutError from None
        except httpx.HTTPError:
            raise _Failed("request_failed", response.status_code) from None
        return b"".join(chunks).decode(response.encoding or "utf-8", errors="replace")


class _Retry(Exception):
    """An answer that says "try again" (502, 503, 504, 429 with a short or no Retry-After)."""

    def __init__(self, status: int, text: str, delay: float | None) -> None:
        super().__init__(status)
        self.status = status
        self.text = text
        self.delay = delay


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value.strip()))
    except ValueError:
        return MAX_RETRY_AFTER + 1  # an HTTP date: further away than we wait


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
