"""AI chat: the handlers behind every ``chat.*`` frame, and the answers this node is generating."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg
import msgspec

from kintsugi_rt.billing import TOKEN_LIMIT_EXCEEDED
from kintsugi_rt.billing.meter import UsageMeter
from kintsugi_rt.billing.tiers import TIER_REQUIRED, Tiers
from kintsugi_rt.billing.usage import LimitExceeded, Reservation
from kintsugi_rt.chat import storage
from kintsugi_rt.chat.catalogue import Catalogue
from kintsugi_rt.chat.frames import (
    ChatCreate,
    ChatCreated,
    ChatDelete,
    ChatDeleted,
    ChatEdit,
    ChatGet,
    ChatInfo,
    ChatList,
    ChatModels,
    ChatPage,
    ChatRef,
    ChatRegenerate,
    ChatRename,
    ChatSearch,
    ChatSend,
    ChatSnapshot,
    ChatStarted,
    ChatStop,
    ChatSwitch,
    ChatUpdated,
    ChatView,
    MessageInfo,
    ModelInfo,
    ModelList,
    RegenerateResult,
    SearchResult,
    SendResult,
)
from kintsugi_rt.chat.generation import SERVER_SHUTDOWN, Generation, Request
from kintsugi_rt.chat.live import LiveAnswers, MemoryLiveAnswers, RedisLiveAnswers
from kintsugi_rt.chat.provider import OfflineDemoProvider, OpenAIProvider, Provider, ProviderError
from kintsugi_rt.chat.tokens import count_prompt, count_text
from kintsugi_rt.context import AppContext
from kintsugi_rt.logs import get_logger
from kintsugi_rt.settings import ModelSpec
from kintsugi_rt.socket import streams
from kintsugi_rt.socket.protocol import BAD_REQUEST, NOT_FOUND
from kintsugi_rt.socket.registry import SocketContext, SocketError
from kintsugi_rt.socket.streams import DurableDelivery

log = get_logger(__name__)

PROVIDER_UNAVAILABLE = "provider_unavailable"
UNKNOWN_MODEL = "unknown_model"
GENERATION_IN_PROGRESS = "generation_in_progress"
CONTEXT_TOO_LONG = "context_too_long"
CONTENT_TOO_LONG = "content_too_long"

ERROR_CODES = {
    PROVIDER_UNAVAILABLE: "No model provider is configured on the server (set OPENAI_API_KEY).",
    UNKNOWN_MODEL: "The model is not in this server's catalogue.",
    GENERATION_IN_PROGRESS: "An answer is still streaming in this chat; stop it or wait.",
    CONTEXT_TOO_LONG: "The message alone is longer than the model's context window.",
    CONTENT_TOO_LONG: "The message is longer than CHAT_MAX_INPUT_CHARS.",
    "provider_rate_limited": "(chat.error) The provider kept answering 429 after our retries.",
    "provider_error": "(chat.error) The provider failed (5xx, or an error in the middle of the stream).",
    "provider_unreachable": "(chat.error) The provider could not be reached or dropped the connection.",
    "provider_rejected": "(chat.error) The provider refused the request (4xx).",
    "server_shutdown": "(chat.error) The node running the answer shut down; the text so far is kept.",
}

_TITLE_PROMPT = (
    "Write a title of at most six words for a conversation that starts with the user's message below. "
    "Answer with the title only, no quotes, in the language of the message."
)
_ABANDONED_AFTER = timedelta(minutes=15)
_STOP_SIGNAL = "chat.stop"


@dataclass(frozen=True, slots=True)
class _Started:
    delivery: DurableDelivery
    generation: Generation
    question_id: uuid.UUID
    chat: ChatInfo
    model: ModelSpec


class _StopSignal(msgspec.Struct):
    message_id: uuid.UUID


_decode_stop = msgspec.json.Decoder(_StopSignal)


def _not_found() -> SocketError:
    return SocketError(NOT_FOUND, "No such chat or message.")


class ChatService:
    def __init__(self, ctx: AppContext, *, usage: UsageMeter, tiers: Tiers) -> None:
        self.ctx = ctx
        self.catalogue = Catalogue(ctx.settings)
        self.provider: Provider | None
        if self.catalogue.provider == "openai":
            self.provider = OpenAIProvider(ctx.settings)
        elif self.catalogue.provider == "offline-demo":
            self.provider = OfflineDemoProvider(ctx.settings.chat_demo_tokens_per_second)
        else:
            self.provider = None
        self.live: LiveAnswers = (
            RedisLiveAnswers(ctx.redis, ctx.settings.redis_key_prefix) if ctx.redis else MemoryLiveAnswers()
        )
        self.meter = usage
        self.tiers = tiers
        self.generations: dict[uuid.UUID, Generation] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        ctx.features["chat"] = self.catalogue.provider
        ctx.events.on_signal(_STOP_SIGNAL, self._on_stop_signal)

    async def start(self) -> None:
        if self.catalogue.provider == "offline-demo":
            log.warning("chat.offline_demo", hint="set OPENAI_API_KEY to use a real model")
        elif self.catalogue.provider == "off":
            log.warning("chat.off", hint="set OPENAI_API_KEY; chat.send answers provider_unavailable")
        else:
            log.info(
                "chat.provider", base_url=self.ctx.settings.openai_base_url or "https://api.openai.com/v1"
            )

    async def stop(self) -> None:
        for generation in list(self.generations.values()):
            generation.stop(SERVER_SHUTDOWN)
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=10)
        if isinstance(self.provider, OpenAIProvider):
            await self.provider.close()

    # --- chats --------------------------------------------------------------------------------

    async def create(self, conn: SocketContext, message: ChatCreate) -> ChatRef:
        model_id = message.model or self.catalogue.default
        if model_id is None:
            raise SocketError(PROVIDER_UNAVAILABLE, ERROR_CODES[PROVIDER_UNAVAILABLE])
        await self._allowed_model(conn.user_id, model_id)
        async with self.ctx.db.pool.acquire() as db, db.transaction():
            chat = await storage.create_chat(
                db, conn.user_id, model_id, message.title or "", message.system_prompt
            )
            delivery = await streams.append(db, [conn.user_id], ChatCreated(chat=chat))
        await self.ctx.events.publish_durable(delivery)
        return ChatRef(chat=chat)

    async def list_chats(self, conn: SocketContext, message: ChatList) -> ChatPage:
        cursor = _decode_cursor(message.before) if message.before else None
        chats = await storage.list_chats(self.ctx.db.pool, conn.user_id, cursor, message.limit + 1)
        more = len(chats) > message.limit
        chats = chats[: message.limit]
        next_cursor = f"{chats[-1].updated_at.isoformat()}|{chats[-1].id}" if more and chats else None
        return ChatPage(chats=chats, next_cursor=next_cursor)

    async def get(self, conn: SocketContext, message: ChatGet) -> ChatView:
        chat = await storage.get_chat(self.ctx.db.pool, conn.user_id, message.chat_id)
        if chat is None:
            raise _not_found()
        return await self._view(conn.user_id, chat, message.before, message.limit)

    async def switch(self, conn: SocketContext, message: ChatSwitch) -> ChatView:
        found = await storage.get_message(self.ctx.db.pool, conn.user_id, message.message_id)
        if found is None:
            raise _not_found()
        _, chat_id = found
        async with self.ctx.db.pool.acquire() as db, db.transaction():
            leaf = await storage.newest_leaf_under(db, message.message_id)
            chat = await storage.set_active_leaf(db, chat_id, leaf)
            delivery = await streams.append(db, [conn.user_id], ChatUpdated(chat=chat))
        await self.ctx.events.publish_durable(delivery)
        return await self._view(conn.user_id, chat, None, 50)

    async def rename(self, conn: SocketContext, message: ChatRename) -> ChatRef:
        async with self.ctx.db.pool.acquire() as db, db.transaction():
            chat = await storage.rename_chat(
                db, conn.user_id, message.chat_id, " ".join(message.title.split())
            )
            if chat is None:
                raise _not_found()
            delivery = await streams.append(db, [conn.user_id], ChatUpdated(chat=chat))
        await self.ctx.events.publish_durable(delivery)
        return ChatRef(chat=chat)

    async def delete(self, conn: SocketContext, message: ChatDelete) -> None:
        pool = self.ctx.db.pool
        for answer_id in await storage.streaming_answers(pool, conn.user_id, message.chat_id):
            await self.ctx.events.signal(_STOP_SIGNAL, _StopSignal(answer_id))
        async with pool.acquire() as db, db.transaction():
            if not await storage.delete_chat(db, conn.user_id, message.chat_id):
                raise _not_found()
            delivery = await streams.append(db, [conn.user_id], ChatDeleted(chat_id=message.chat_id))
        await self.ctx.events.publish_durable(delivery)

    async def search(self, conn: SocketContext, message: ChatSearch) -> SearchResult:
        hits = await storage.search(self.ctx.db.pool, conn.user_id, message.query, message.limit)
        return SearchResult(results=hits)

    async def models(self, conn: SocketContext, message: ChatModels) -> ModelList:
        tier = await self.tiers.tier_of(conn.user_id)
        infos = []
        for model in self.catalogue.models.values():
            allowed = tier in model.tiers
            infos.append(
                ModelInfo(
                    id=model.id,
                    label=model.label,
                    context_window=model.context_window,
                    max_output=model.max_output,
                    allowed=allowed,
                    tier_required=None if allowed else self.catalogue.lowest_tier(model),
                )
            )
        return ModelList(models=infos, default=self.catalogue.default, provider=self.catalogue.provider)

    # --- answers ------------------------------------------------------------------------------

    async def send(self, conn: SocketContext, message: ChatSend) -> SendResult:
        self._check_length(message.content)
        return await self._answer(conn.user_id, message.chat_id, message.parent_id, message.content)

    async def edit(self, conn: SocketContext, message: ChatEdit) -> SendResult:
        self._check_length(message.content)
        found = await storage.get_message(self.ctx.db.pool, conn.user_id, message.message_id)
        if found is None or found[0].role != "user":
            raise _not_found()
        original, chat_id = found
        return await self._answer(
            conn.user_id, chat_id, original.parent_id, message.content, sibling_of_root=True
        )

    async def regenerate(self, conn: SocketContext, message: ChatRegenerate) -> RegenerateResult:
        found = await storage.get_message(self.ctx.db.pool, conn.user_id, message.message_id)
        if found is None or found[0].role != "assistant" or found[0].parent_id is None:
            raise _not_found()
        answer, chat_id = found
        result = await self._answer(conn.user_id, chat_id, answer.parent_id, None)
        return RegenerateResult(message_id=result.message_id)

    async def stop_answer(self, conn: SocketContext, message: ChatStop) -> None:
        found = await storage.get_message(self.ctx.db.pool, conn.user_id, message.message_id)
        if found is None:
            raise _not_found()
        # The answer may be running on any node: tell them all.
        await self.ctx.events.signal(_STOP_SIGNAL, _StopSignal(message.message_id))

    def _on_stop_signal(self, payload: bytes) -> None:
        generation = self.generations.get(_decode_stop.decode(payload).message_id)
        if generation is not None:
            generation.stop()

    async def on_connect(self, conn: SocketContext) -> None:
        """A socket that connects mid-answer gets each answer's text so far; deltas follow."""
        for answer in await self.live.of_user(conn.user_id):
            conn.send(
                ChatSnapshot(
                    chat_id=answer.chat_id, message_id=answer.message_id, index=answer.index, text=answer.text
                )
            )

    # --- internals ----------------------------------------------------------------------------

    def _check_length(self, content: str) -> None:
        limit = self.ctx.settings.chat_max_input_chars
        if len(content) > limit:
            raise SocketError(
                CONTENT_TOO_LONG, f"Messages are limited to {limit} characters.", {"limit": limit}
            )

    async def _allowed_model(self, user_id: uuid.UUID, model_id: str) -> ModelSpec:
        return self._model_for(await self.tiers.tier_of(user_id), model_id)

    def _model_for(self, tier: str, model_id: str) -> ModelSpec:
        if self.provider is None:
            raise SocketError(PROVIDER_UNAVAILABLE, ERROR_CODES[PROVIDER_UNAVAILABLE])
        model = self.catalogue.get(model_id)
        if model is None:
            raise SocketError(
                UNKNOWN_MODEL, f"No model {model_id!r} here; see chat.models.", {"model": model_id}
            )
        if tier not in model.tiers:
            needed = self.catalogue.lowest_tier(model)
            raise SocketError(TIER_REQUIRED, f"{model.label} needs the {needed} tier.", {"tier": needed})
        return model

    async def _answer(
        self,
        user_id: uuid.UUID,
        chat_id: uuid.UUID,
        parent_id: uuid.UUID | None,
        content: str | None,
        *,
        sibling_of_root: bool = False,
    ) -> SendResult:
        """Store the user's message (unless regenerating) and start an answer under it.

        Everything before the provider call runs in one transaction, in as few statements as it
        can: their round trips are the time the socket adds to the first token."""
        if self.provider is None:
            raise SocketError(PROVIDER_UNAVAILABLE, ERROR_CODES[PROVIDER_UNAVAILABLE])
        held: list[Reservation] = []
        started_generations: list[Generation] = []
        try:
            async with self.ctx.db.pool.acquire() as db, db.transaction():
                started = await self._store_question(
                    db, user_id, chat_id, parent_id, content, sibling_of_root, held, started_generations
                )
        except BaseException:
            for generation in started_generations:  # cut the call; nothing of it is recorded
                generation.abandon()
            for reservation in held:  # the answer never started: give the tokens back
                await self.meter.release(reservation)
            raise
        await self.ctx.events.publish_durable(started.delivery)
        request = started.generation.request
        log.info(
            "chat.answer_started",
            message_id=str(request.message_id),
            model=started.model.id,
            prompt_estimate=request.prompt_estimate,
        )
        self._launch(started.generation, first_exchange=started.chat.title == "")
        return SendResult(user_message_id=started.question_id, message_id=request.message_id)

    async def _store_question(
        self,
        db: asyncpg.Connection,
        user_id: uuid.UUID,
        chat_id: uuid.UUID,
        parent_id: uuid.UUID | None,
        content: str | None,
        sibling_of_root: bool,
        held: list[Reservation],
        started_generations: list[Generation],
    ) -> _Started:
        """Inside one transaction: checks, the user's message, the token reservation, the empty answer."""
        chat = await storage.get_chat(db, user_id, chat_id, lock=True)  # one answer at a time per chat
        if chat is None:
            raise _not_found()
        tier = await self.tiers.tier_of(user_id, db)  # read once; the reservation below reuses it
        model = self._model_for(tier, chat.model)
        if await storage.claim(db, chat.id, self.ctx.clock.now() - _ABANDONED_AFTER) is not None:
            raise SocketError(GENERATION_IN_PROGRESS, ERROR_CODES[GENERATION_IN_PROGRESS])
        user_message: MessageInfo | None = None
        if content is not None:
            parent = parent_id if (parent_id is not None or sibling_of_root) else chat.active_leaf_id
            await self._check_parent(db, chat.id, parent)
            user_message = await storage.insert_message(
                db, chat.id, parent, "user", content, "complete", None, count_text(content)
            )
            question_id = user_message.id
        else:
            assert parent_id is not None
            question_id = parent_id
        max_tokens = self.catalogue.output_budget(model)
        prompt, estimate = await self._context(db, chat, model, question_id, max_tokens)
        try:
            reservation = await self.meter.reserve(db, user_id, estimate + max_tokens, tier=tier)
        except LimitExceeded as exc:
            state = exc.state
            raise SocketError(
                TOKEN_LIMIT_EXCEEDED,
                f"This needs up to {exc.requested} tokens; {max(0, state.limit - state.used)} are left "
                f"until {state.reset_at.isoformat()}.",
                {
                    "limit": state.limit,
                    "used": state.used,
                    "reset_at": state.reset_at.isoformat(),
                    "tier": state.tier,
                },
            ) from None
        held.append(reservation)
        answer_id = uuid.uuid4()
        request = Request(user_id, chat.id, answer_id, model.id, prompt, max_tokens, estimate, reservation)
        assert self.provider is not None
        generation = Generation(self.ctx, self.provider, self.live, self.meter, request)
        generation.start_upstream()  # the reservation fits: the provider may start while we commit
        started_generations.append(generation)
        answer = await storage.insert_message(
            db, chat.id, question_id, "assistant", "", "streaming", model.id, 0, message_id=answer_id
        )
        await storage.set_active_leaf(db, chat.id, answer.id)
        started = ChatStarted(
            chat_id=chat.id,
            message_id=answer.id,
            parent_id=question_id,
            model=model.id,
            user_message=user_message,
        )
        delivery = await streams.append(db, [user_id], started)
        return _Started(delivery, generation, question_id, chat, model)

    async def _check_parent(
        self, db: asyncpg.Connection, chat_id: uuid.UUID, parent: uuid.UUID | None
    ) -> None:
        if parent is None:
            return
        if not await storage.message_in_chat(db, chat_id, parent):
            raise _not_found()

    async def _context(
        self, db: asyncpg.Connection, chat: ChatInfo, model: ModelSpec, leaf_id: uuid.UUID, max_tokens: int
    ) -> tuple[list[dict[str, str]], int]:
        """The prompt for an answer to ``leaf_id``: system prompt, then as much recent history as fits
        in the model's context window next to the answer's own budget. Oldest turns go first."""
        path = [(m, n) for m, n in await storage.path_to(db, chat.id, leaf_id) if m.content]
        budget = model.context_window - max_tokens
        system = [{"role": "system", "content": chat.system_prompt}] if chat.system_prompt else []
        sizes = [count_text(chat.system_prompt)] if chat.system_prompt else []
        history = list(path)
        while history and count_prompt(sizes + [n for _, n in history]) > budget:
            if len(history) == 1:
                raise SocketError(
                    CONTEXT_TOO_LONG,
                    f"The message does not fit in {model.label}'s context window.",
                    {"context_window": model.context_window},
                )
            history.pop(0)
        messages = system + [{"role": m.role, "content": m.content} for m, _ in history]
        return messages, count_prompt(sizes + [n for _, n in history])

    def _launch(self, generation: Generation, *, first_exchange: bool) -> None:
        message_id = generation.request.message_id
        self.generations[message_id] = generation

        async def run() -> None:
            try:
                await generation.run()
                if first_exchange:
                    await self._title(generation.request)
            finally:
                self.generations.pop(message_id, None)

        task = asyncio.create_task(run(), name=f"chat-answer-{message_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _title(self, request: Request) -> None:
        """After the first exchange, a short title, pushed as chat.updated."""
        first_user = next((m["content"] for m in request.messages if m["role"] == "user"), "")
        if not first_user or self.provider is None:
            return
        prompt = [
            {"role": "system", "content": _TITLE_PROMPT},
            {"role": "user", "content": first_user[:2000]},
        ]
        try:
            text, end = await self.provider.complete(request.model, prompt, 24)
        except ProviderError as exc:
            log.info("chat.title_failed", code=exc.code)
            text, end = "", None
        title = _short_title(text.strip().strip("\"'«»")) or _short_title(" ".join(first_user.split()[:6]))
        spent = 0
        delivery = None
        async with self.ctx.db.pool.acquire() as db, db.transaction():
            chat = await storage.set_title_if_empty(db, request.chat_id, title)
            exists = chat is not None or await storage.chat_exists(db, request.chat_id)
            if end is not None:  # the provider answered: its tokens count, like an answer's
                usage = end.usage
                prompt_tokens = (
                    usage.prompt_tokens
                    if usage
                    else count_prompt([count_text(prompt[0]["content"]), count_text(prompt[1]["content"])])
                )
                completion_tokens = usage.completion_tokens if usage else count_text(text)
                await storage.record_usage(
                    db,
                    user_id=request.user_id,
                    chat_id=request.chat_id if exists else None,
                    message_id=None,
                    purpose="title",
                    model=request.model,
                    prompt_tokens=prompt_tokens,
                    completion_tokens=completion_tokens,
                    source="provider" if usage else "estimated",
                    at=self.ctx.clock.now(),
                )
                spent = prompt_tokens + completion_tokens
            if chat is not None:  # not renamed or deleted meanwhile
                delivery = await streams.append(db, [request.user_id], ChatUpdated(chat=chat))
        if delivery is not None:
            await self.ctx.events.publish_durable(delivery)
        if spent:
            await self.meter.settled(request.user_id, None, spent)

    async def _view(
        self, user_id: uuid.UUID, chat: ChatInfo, before: uuid.UUID | None, limit: int
    ) -> ChatView:
        if chat.active_leaf_id is None:
            return ChatView(chat=chat, messages=[], has_more=False)
        pool = self.ctx.db.pool
        path = [m for m, _ in await storage.path_to(pool, chat.id, chat.active_leaf_id)]
        end = len(path)
        if before is not None:
            positions = {m.id: i for i, m in enumerate(path)}
            if before not in positions:
                raise _not_found()
            end = positions[before]
        page = path[max(0, end - limit) : end]
        family = await storage.siblings(pool, chat.id, page) if page else {}
        live = {a.message_id: a for a in await self.live.of_user(user_id)}
        messages: list[MessageInfo] = []
        for m in page:
            content = live[m.id].text if m.status == "streaming" and m.id in live else m.content
            messages.append(
                msgspec.structs.replace(m, content=content, siblings=family.get(m.parent_id, [m.id]))
            )
        return ChatView(chat=chat, messages=messages, has_more=end - limit > 0)


def _short_title(text: str, limit: int = 80) -> str:
    """Whole words only, at most ``limit`` characters."""
    title = ""
    for word in text.split():
        candidate = f"{title} {word}" if title else word
        if len(candidate) > limit:
            break
        title = candidate
    return title or text[:limit]


def _decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        stamp, _, chat_id = cursor.partition("|")
        return datetime.fromisoformat(stamp), uuid.UUID(chat_id)
    except ValueError:
        raise SocketError(BAD_REQUEST, "Not a cursor from chat.list.", {"field": "before"}) from None
