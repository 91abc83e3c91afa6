"""One answer being generated: read the provider's stream, batch it into deltas, finish exactly once.

The answer runs in its own task, independent of any socket: a client that disconnects does not stop
it. ``stop()`` cancels the reading task, which closes the upstream connection at once. Whatever ends
it (done, stopped, failed, shutdown), the message, the usage ledger row and the durable
``chat.done``/``chat.error`` event are written in one transaction.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass

from kintsugi_rt.billing.meter import UsageMeter
from kintsugi_rt.billing.usage import Reservation
from kintsugi_rt.chat import storage
from kintsugi_rt.chat.frames import ChatDelta, ChatDone, ChatError, Usage
from kintsugi_rt.chat.live import LiveAnswers
from kintsugi_rt.chat.provider import End, Piece, Provider, ProviderError
from kintsugi_rt.chat.tokens import count_text
from kintsugi_rt.context import AppContext
from kintsugi_rt.logs import get_logger
from kintsugi_rt.socket import streams
from kintsugi_rt.socket.protocol import ServerMessage

log = get_logger(__name__)

_MAX_BATCH_CHARS = 4000
STOPPED = "stopped"
SERVER_SHUTDOWN = "server_shutdown"


@dataclass(slots=True)
class Request:
    user_id: uuid.UUID
    chat_id: uuid.UUID
    message_id: uuid.UUID
    model: str
    messages: list[dict[str, str]]
    max_tokens: int
    prompt_estimate: int
    reservation: Reservation | None = None


@dataclass(slots=True)
class Outcome:
    status: str  # complete | stopped | error
    finish_reason: str | None
    error: ProviderError | None = None
    usage: Usage | None = None
    text: str = ""


class Generation:
    def __init__(
        self, ctx: AppContext, provider: Provider, live: LiveAnswers, meter: UsageMeter, request: Request
    ) -> None:
        self.ctx = ctx
        self.meter = meter
        self.provider = provider
        self.live = live
        self.request = request
        self._parts: list[str] = []
        self._pending: list[str] = []
        self._index = -1
        self._last_flush = 0.0
        self._wake = asyncio.Event()
        self._reading_done = False
        self._end: End | None = None
        self._stop_reason: str | None = None
        self._reader: asyncio.Task[None] | None = None
        self.first_token_at: float | None = None
        self.finished = asyncio.Event()

    # --- control -------------------------------------------------------------------------------

    def stop(self, reason: str = STOPPED) -> None:
        """Cancel the upstream now; the answer ends as stopped with what was generated."""
        if self._stop_reason is None:
            self._stop_reason = reason
        if self._reader is not None:
            self._reader.cancel()

    def start_upstream(self) -> None:
        """Call the provider now. Deltas are held until ``run`` (after the answer row commits), so the
        provider's time to first token overlaps our own bookkeeping instead of adding to it."""
        if self._reader is None:
            self._reader = asyncio.create_task(self._read(), name=f"chat-read-{self.request.message_id}")

    def abandon(self) -> None:
        """The answer's transaction failed after the call started: cut it; nothing is recorded."""
        if self._reader is not None:
            self._reader.cancel()

    async def run(self) -> None:
        req = self.request
        await self.live.begin(req.user_id, req.chat_id, req.message_id)
        self.start_upstream()
        assert self._reader is not None
        flusher = asyncio.create_task(self._flush_loop(), name=f"chat-flush-{req.message_id}")
        if self._stop_reason is not None:
            self._reader.cancel()
        await asyncio.wait({self._reader})
        self._reading_done = True
        self._wake.set()
        await flusher
        outcome = self._outcome(self._reader)
        try:
            await self._finish(outcome)
        finally:
            await self.live.end(req.user_id, req.message_id)
            self.finished.set()

    # --- reading and batching --------------------------------------------------------------------

    async def _read(self) -> None:
        stream = self.provider.stream(self.request.model, self.request.messages, self.request.max_tokens)
        try:
            async for item in stream:
                if isinstance(item, Piece):
                    if self.first_token_at is None:
                        self.first_token_at = time.monotonic()
                    self._pending.append(item.text)
                    self._wake.set()
                else:
                    self._end = item
        finally:
            await stream.aclose()

    async def _flush_loop(self) -> None:
        interval = self.ctx.settings.chat_delta_interval.total_seconds()
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not self._reading_done and self._index >= 0:
                # The first piece goes out at once (time to first token); later ones in batches.
                wait = self._last_flush + interval - time.monotonic()
                if wait > 0 and sum(map(len, self._pending)) < _MAX_BATCH_CHARS:
                    await asyncio.sleep(wait)
            await self._flush()
            if self._reading_done and not self._pending:
                return

    async def _flush(self) -> None:
        if not self._pending:
            return
        text = "".join(self._pending)
        self._pending.clear()
        self._parts.append(text)
        self._index += 1
        self._last_flush = time.monotonic()
        req = self.request
        # Stored before it is sent: a socket that connects now sees it in the snapshot or as a delta.
        await self.live.append(req.message_id, self._index, text)
        delta = ChatDelta(chat_id=req.chat_id, message_id=req.message_id, index=self._index, text=text)
        await self.ctx.events.push([req.user_id], delta, droppable=False)

    # --- ending ----------------------------------------------------------------------------------

    def _outcome(self, reader: asyncio.Task[None]) -> Outcome:
        text = "".join(self._parts)
        if reader.cancelled():
            reason = self._stop_reason or SERVER_SHUTDOWN
            if reason == STOPPED:
                return Outcome("stopped", STOPPED, text=text)
            return Outcome(
                "error", None, ProviderError(reason, "The server restarted during the answer."), text=text
            )
        failure = reader.exception()
        if isinstance(failure, ProviderError):
            return Outcome("error", None, failure, text=text)
        if failure is not None:
            log.error("chat.generation_crashed", message_id=str(self.request.message_id), error=repr(failure))
            return Outcome(
                "error", None, ProviderError("internal_error", "The answer failed on our side."), text=text
            )
        end = self._end or End("stop", None)
        return Outcome("complete", end.finish_reason, text=text)

    def _usage(self, outcome: Outcome) -> Usage:
        end = self._end
        if end is not None and end.usage is not None:
            return Usage(end.usage.prompt_tokens, end.usage.completion_tokens, "provider")
        if not outcome.text and outcome.error is not None:
            # Failed before any token: providers do not bill such a request.
            return Usage(0, 0, "estimated")
        return Usage(self.request.prompt_estimate, count_text(outcome.text), "estimated")

    async def _finish(self, outcome: Outcome) -> None:
        req = self.request
        usage = self._usage(outcome)
        event: ServerMessage
        if outcome.error is None:
            event = ChatDone(
                chat_id=req.chat_id,
                message_id=req.message_id,
                finish_reason=outcome.finish_reason or "stop",
                usage=usage,
                content=outcome.text,
            )
        else:
            event = ChatError(
                chat_id=req.chat_id,
                message_id=req.message_id,
                code=outcome.error.code,
                message=outcome.error.message,
                content=outcome.text,
            )
        async with self.ctx.db.pool.acquire() as conn, conn.transaction():
            kept = await storage.finish_message(
                conn,
                req.message_id,
                content=outcome.text,
                status=outcome.status,
                finish_reason=outcome.finish_reason,
                error_code=outcome.error.code if outcome.error else None,
                tokens=count_text(outcome.text),
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
            )
            # The chat may have been deleted meanwhile: the tokens were still spent, so still billed.
            await storage.record_usage(
                conn,
                user_id=req.user_id,
                chat_id=req.chat_id if kept else None,
                message_id=req.message_id if kept else None,
                purpose="answer",
                model=req.model,
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
                source=usage.source,
                at=self.ctx.clock.now(),
            )
            await self.meter.settle_in(conn, req.reservation)
            if kept:
                await storage.touch_chat(conn, req.chat_id)
                delivery = await streams.append(conn, [req.user_id], event)
        if kept:
            await self.ctx.events.publish_durable(delivery)
        await self.meter.settled(req.user_id, req.reservation, usage.prompt_tokens + usage.completion_tokens)
        log.info(
            "chat.answer_finished",
            message_id=str(req.message_id),
            status=outcome.status,
            code=outcome.error.code if outcome.error else None,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            usage_source=usage.source,
        )
