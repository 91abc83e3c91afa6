"""The composition root: every long-lived object of a node, built by hand in dependency order.

Read it top to bottom. ``build_services`` constructs everything from the settings, without I/O (so
``kintsugi-rt protocol-doc`` can build a node just to describe it); each service gets its
dependencies as typed arguments, and each module's socket frames and REST routes are bound to those
instances. ``Services.start`` opens connections and starts background work in the order written
there, and the exit stack stops them in reverse. Nothing is looked up by name.

Adding a module (docs/architecture.md has the checklist): construct its service below with what it
needs, add its ``socket_features(...)`` to the registry and its ``routes(...)`` to ``routes()``, and
its ``start``/``stop`` to ``start()`` if it has any.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import uuid
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from starlette.routing import BaseRoute

from kintsugi_rt import (
    agents,
    auth,
    billing,
    calls,
    chat,
    media,
    messenger,
    metrics,
    ops,
    people,
    presence,
    push,
)
from kintsugi_rt.clock import Clock, SystemClock
from kintsugi_rt.context import AppContext
from kintsugi_rt.db.database import Database
from kintsugi_rt.db.migrations import default_migrations_dir, load_migrations, pending_migrations
from kintsugi_rt.db.migrations import migrate as apply_all_migrations
from kintsugi_rt.logs import get_logger
from kintsugi_rt.ratelimit import MemoryRateLimiter, RateLimiter, RedisRateLimiter
from kintsugi_rt.settings import Settings, load_settings
from kintsugi_rt.socket import streams
from kintsugi_rt.socket.events import Events
from kintsugi_rt.socket.gateway import Gateway
from kintsugi_rt.socket.hub import Hub, LocalHub, RedisHub
from kintsugi_rt.socket.local import LocalConnections
from kintsugi_rt.socket.protocol import CORE_CLIENT_MESSAGES
from kintsugi_rt.socket.registry import SocketRegistry

log = get_logger(__name__)

_TRIM_EVERY_SECONDS = 600


@dataclass(slots=True)
class Services:
    """One node's long-lived objects. Tests reach them as ``node.services.<name>``."""

    ctx: AppContext
    hub: Hub
    local: LocalConnections
    auth: auth.AuthService
    presence: presence.PresenceService
    tiers: billing.Tiers
    usage: billing.UsageMeter
    billing: billing.BillingService
    chat: chat.ChatService
    messenger: messenger.MessengerService
    media: media.MediaService
    calls: calls.CallService
    people: people.PeopleService
    push: push.PushService
    # (before ``agents``: that field's name hides the module in the annotations below it)
    agent_runs: agents.AgentRunService
    agent_conversations: agents.AgentConversations
    agents: agents.AgentService
    registry: SocketRegistry
    gateway: Gateway

    def routes(self) -> list[BaseRoute]:
        """Every REST route, bound to the services (the socket's own route is the app's)."""
        settings = self.ctx.settings
        return [
            *ops.routes(self.ctx),
            *metrics.routes(settings.metrics_token),
            *auth.routes(self.auth, max_body=settings.max_request_body_bytes),
            *billing.routes(self.billing, self.auth, max_body=settings.max_request_body_bytes),
            *media.routes(self.media, self.auth),
            *calls.routes(self.calls),
        ]

    async def start(self, stack: AsyncExitStack) -> None:
        """Open and start everything, in this order; ``stack`` stops it all in reverse."""
        ctx, settings = self.ctx, self.ctx.settings
        await ctx.db.open()
        stack.push_async_callback(ctx.db.close)
        await _migrate(ctx)
        if ctx.redis is not None:
            stack.push_async_callback(ctx.redis.aclose)
            await _ping(ctx.redis)
        local = self.local

        async def catch_up() -> None:
            await local.catch_up(ctx.db)

        await self.hub.start(local.deliver, on_resubscribed=catch_up)
        stack.push_async_callback(self.hub.stop)
        stack.push_async_callback(ctx.events.stop)
        billing.check_webhook_secret(settings)
        await self.media.start()
        stack.push_async_callback(self.media.stop)
        await self.presence.start()
        stack.push_async_callback(self.presence.stop)
        await self.chat.start()
        stack.push_async_callback(self.chat.stop)
        await self.calls.start()
        stack.push_async_callback(self.calls.stop)
        await self.push.start()
        stack.push_async_callback(self.push.stop)
        await self.agents.start()
        stack.push_async_callback(self.agents.stop)
        # Stopped before the agents (whose stop closes the webhook caller the runs use).
        await self.agent_runs.start()
        stack.push_async_callback(self.agent_runs.stop)
        await self.agent_conversations.start()
        stack.push_async_callback(self.agent_conversations.stop)
        trimmer = asyncio.create_task(_trim_streams(ctx), name="stream-trim")
        stack.push_async_callback(_cancel, trimmer)
        if settings.is_production and not settings.metrics_token:
            log.warning("metrics.public", fix="set METRICS_TOKEN, or keep /metrics off the public network")


def build_services(settings: Settings, clock: Clock | None = None) -> Services:
    """Construct the node: infrastructure first, then each service with what it needs."""
    the_clock = clock or SystemClock()
    db = Database(settings)
    redis = _redis(settings)
    hub: Hub = RedisHub(redis, settings.redis_key_prefix) if redis else LocalHub()
    events = Events(hub, db)
    limiter: RateLimiter = (
        RedisRateLimiter(redis, settings.redis_key_prefix) if redis else MemoryRateLimiter(the_clock)
    )
    ctx = AppContext(
        settings=settings,
        clock=the_clock,
        db=db,
        redis=redis,
        rate_limiter=limiter,
        events=events,
        node_id=uuid.uuid4().hex[:12],
    )
    local = LocalConnections(on_signal=events.deliver_signal)

    auth_service = auth.AuthService(ctx)
    presence_service = presence.PresenceService(ctx)
    tiers = billing.Tiers(db)
    usage = billing.UsageMeter(ctx, tiers=tiers)
    billing_service = billing.BillingService(ctx, usage)
    chat_service = chat.ChatService(ctx, usage=usage, tiers=tiers)
    messenger_service = messenger.MessengerService(ctx)
    media_service = media.MediaService(ctx, media.open_blob_store(settings), tiers=tiers)
    # The billing plans list the chat models each tier may use.
    billing_service.plans.offer_models(chat_service.catalogue.models_for)
    # What modules grant one another: members see a conversation's attachments and each other's presence.
    media_service.grant_access(messenger_service.can_see_media)
    # Attachments carry signed URLs (<img src>), made by media for the messenger's messages.
    messenger_service.attachment_links = media_service.links_many
    presence_service.audience_providers.append(messenger_service.audience)

    async def sfu_sends(call_id: uuid.UUID, party_id: str, signal: calls.SfuSignal) -> None:
        await calls_service.send_from_sfu(call_id, party_id, signal)  # bound just below

    sfu = calls.Sfu(max_participants=settings.sfu_max_participants, send=sfu_sends)
    calls_service = calls.CallService(
        ctx, messenger=messenger_service, tiers=tiers, livekit=calls.LiveKit(settings), sfu=sfu
    )
    people_service = people.PeopleService(ctx, messenger=messenger_service, media=media_service)
    # Anyone signed in may be shown a profile (user.lookup), so anyone may load a current avatar.
    media_service.grant_access(people_service.can_see_avatar)
    # Web Push: new messages and rings reach members who have no socket open on any node.
    push_service = push.PushService(ctx, online=presence_service.store.online)
    _push_new_messages(messenger_service, push_service)
    _push_calls(calls_service, push_service)
    # The agent builder: paid tiers; an agent's model is one its owner's tier may use.
    webhooks = agents.WebhookCaller(settings)
    agent_service = agents.AgentService(
        ctx, tiers=tiers, models_for=chat_service.catalogue.models_for, webhooks=webhooks
    )
    # Running agents: the chat's model provider (none when chat is off), the same webhook caller, and
    # each model turn billed as a chat answer is.
    provider = chat_service.provider
    runner = (
        None
        if provider is None
        else agents.AgentRunner(
            provider, webhooks, agents.MeterBilling(usage, ctx.db, ctx.clock, purpose="agent")
        )
    )
    agent_run_service = agents.AgentRunService(ctx, agents=agent_service, tiers=tiers, runner=runner)
    # Agents in conversations: the messenger tells them of each new message (after its commit); they
    # answer through the messenger, on the same runner (the agent's owner pays).
    agent_conversations = agents.AgentConversations(
        ctx, agents=agent_service, tiers=tiers, runner=runner, messenger=messenger_service
    )
    messenger_service.on_new_message.append(agent_conversations.on_new_message)

    registry = SocketRegistry(
        CORE_CLIENT_MESSAGES,
        [
            presence.socket_features(presence_service),
            billing.socket_features(usage),
            chat.socket_features(chat_service),
            messenger.socket_features(messenger_service),
            media.socket_features(media_service),
            calls.socket_features(calls_service),
            people.socket_features(people_service),
            push.socket_features(push_service),
            agents.socket_features(agent_service),
            agents.run_socket_features(agent_run_service),
            agents.conversation_socket_features(agent_conversations),
        ],
    )
    gateway = Gateway(
        settings=settings,
        clock=the_clock,
        db=db,
        registry=registry,
        local=local,
        authenticate=auth_service.authenticate,
        features=ctx.features,
    )
    return Services(
        ctx=ctx,
        hub=hub,
        local=local,
        auth=auth_service,
        presence=presence_service,
        tiers=tiers,
        usage=usage,
        billing=billing_service,
        chat=chat_service,
        messenger=messenger_service,
        media=media_service,
        calls=calls_service,
        people=people_service,
        push=push_service,
        agents=agent_service,
        agent_runs=agent_run_service,
        agent_conversations=agent_conversations,
        registry=registry,
        gateway=gateway,
    )


def _push_new_messages(messenger_service: messenger.MessengerService, push_service: push.PushService) -> None:
    """The messenger tells Web Push of each new message (call entries are the calls' own alerts)."""

    def on_new_message(message: messenger.Message, members: Sequence[uuid.UUID]) -> None:
        if message.call is None:
            alert = push.MessageAlert(
                conversation_id=message.conversation_id,
                sender_id=message.sender_id,
                text=message.text,
                attachments=len(message.attachments),
            )
            push_service.message_new(alert, members)

    messenger_service.on_new_message.append(on_new_message)


def _push_calls(calls_service: calls.CallService, push_service: push.PushService) -> None:
    """The calls tell Web Push whom a call rings for, and who missed one."""

    def alert(info: calls.CallInfo, users: Sequence[uuid.UUID], *, missed: bool) -> None:
        push_service.call_alert(
            push.CallAlert(
                call_id=info.id,
                conversation_id=info.conversation_id,
                caller_id=info.caller_id,
                media=info.media,
                missed=missed,
            ),
            users,
        )

    calls_service.on_ringing = functools.partial(alert, missed=False)
    calls_service.on_missed = functools.partial(alert, missed=True)


def documentation_settings() -> Settings:
    """Settings to build a node only to describe it (``kintsugi-rt protocol-doc``, ``schema``)."""
    return load_settings({"ENVIRONMENT": "test", "JWT_SECRET": "protocol-doc-" + "x" * 32})


# --- start-up steps --------------------------------------------------------------------------------


def _redis(settings: Settings) -> Redis | None:
    """The Redis client (it connects on first use; ``_ping`` checks it at start)."""
    if settings.redis_url is None:
        return None
    # Wait for a free connection instead of failing when a burst (a disconnect storm) wants more, but
    # never longer than REDIS_TIMEOUT, like every command: an outage ends in `unavailable`, not a hang.
    # (The hub's pub/sub reads block without a timeout on purpose; see socket/hub.py.)
    timeout = settings.redis_timeout.total_seconds()
    pool = BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=settings.redis_max_connections,
        timeout=timeout,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        # One quick retry covers a pooled connection that died with a Redis restart; more would only
        # stretch an outage's error past the timeout above.
        retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.25), 1),
    )
    return Redis(connection_pool=pool)


async def _ping(redis: Redis) -> None:
    try:
        await redis.ping()
    except Exception as exc:
        raise RuntimeError(f"REDIS_URL: cannot reach Redis ({exc})") from exc


async def _migrate(ctx: AppContext) -> None:
    """Apply migrations outside production; in production only say which are missing."""
    if not ctx.settings.is_production:
        await apply_all_migrations(ctx.db.dsn)
        return
    async with ctx.db.pool.acquire() as conn:
        pending = await pending_migrations(conn, load_migrations(default_migrations_dir()))
    if pending:
        log.error("migrations.pending", files=[m.name for m in pending], fix="run: kintsugi-rt migrate")


async def _trim_streams(ctx: AppContext) -> None:
    """Drop durable events past the retained window, on every node (deleting twice is harmless)."""
    while True:
        try:
            removed = await streams.trim(ctx.db.pool, ctx.clock.now() - ctx.settings.event_retention)
            if removed:
                log.info("streams.trimmed", events=removed)
        except Exception as exc:
            log.warning("streams.trim_failed", error=repr(exc))
        await asyncio.sleep(_TRIM_EVERY_SECONDS)


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
