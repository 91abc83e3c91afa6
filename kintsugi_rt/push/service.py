"""Web Push: notifications for new messages and incoming calls while a user has no socket open.

The messenger and the calls hand their events to this service (through callables the composition
root gives them) after their transaction has committed; the service only queues them there, so a
request never waits for a push service and never fails because of one. Workers then, per event:
drop the users who have a live socket on any node (presence), look up their browsers' subscriptions
(of logins still alive), apply the per-user rate limit, encrypt the notification for each browser and
POST it, at most ``PUSH_CONCURRENCY`` requests at once per node. 201: sent; 404/410: the browser
unsubscribed, the subscription is deleted; 429, 5xx, a network error: retried with backoff (or the
push service's ``Retry-After``) up to ``PUSH_MAX_RETRIES`` times; any other answer counts as a
refusal, and a subscription refused ten times in a row is deleted. One node handles each event (the
one that committed it), so nobody is notified twice; a node that dies with events in its queue loses
them (pushes are best effort: the durable events themselves wait in the user's stream).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
import msgspec

from kintsugi_rt import metrics
from kintsugi_rt.context import AppContext
from kintsugi_rt.logs import get_logger
from kintsugi_rt.outages import is_outage
from kintsugi_rt.push import storage
from kintsugi_rt.push.endpoints import EndpointRefused, check_endpoint, check_keys, resolves_publicly
from kintsugi_rt.push.frames import (
    NoticeKind,
    PushConfig,
    PushConfigGet,
    PushNotice,
    PushSubscribe,
    PushUnsubscribe,
)
from kintsugi_rt.push.storage import Names, Target
from kintsugi_rt.push.vapid import Vapid, load_vapid
from kintsugi_rt.push.webpush import Delivery, encrypt, post, retry_after
from kintsugi_rt.socket.protocol import BAD_REQUEST
from kintsugi_rt.socket.registry import SocketContext, SocketError

log = get_logger(__name__)

PUSH_DISABLED = "push_disabled"
ERROR_CODES = {
    PUSH_DISABLED: "This server sends no Web Push (production without VAPID keys); `push.config` says so.",
}

QUEUE_SIZE = 10_000  # events waiting for a worker; beyond, new ones are dropped (counted, logged)
MAX_SUBSCRIPTIONS_PER_USER = 20  # browsers per user; subscribing one more forgets the oldest
GIVE_UP_AFTER_FAILURES = 10  # refusals in a row before a subscription is deleted
PREVIEW_CHARS = 120  # a message's text in its push (PUSH_MESSAGE_PREVIEW), at most
TITLE_CHARS = 80
_BACKOFF_SECONDS = 0.5  # the first retry's wait without Retry-After; doubled each time, with jitter
_SENT = frozenset({200, 201, 202})
_GONE = frozenset({404, 410})

OnlineCheck = Callable[[list[str]], Awaitable[set[str]]]
"""``(user ids) -> those with a live socket on any node`` (presence's store)."""


@dataclass(frozen=True, slots=True)
class MessageAlert:
    """A new message in a conversation (from the messenger)."""

    conversation_id: uuid.UUID
    sender_id: uuid.UUID | None
    text: str | None
    attachments: int


@dataclass(frozen=True, slots=True)
class CallAlert:
    """A call ringing for the recipients, or one they missed (from the calls)."""

    call_id: uuid.UUID
    conversation_id: uuid.UUID
    caller_id: uuid.UUID | None
    media: str
    missed: bool


Alert = MessageAlert | CallAlert


@dataclass(frozen=True, slots=True)
class _Job:
    alert: Alert
    recipients: tuple[uuid.UUID, ...]

    @property
    def kind(self) -> NoticeKind:
        if isinstance(self.alert, MessageAlert):
            return "message"
        return "missed_call" if self.alert.missed else "call"


@dataclass(frozen=True, slots=True)
class _Answer:
    """One attempt's outcome: the status (``None``: no answer, a network error), the push service's
    Retry-After, or ``refused`` (production: the endpoint's host resolves to a non-public address)."""

    status: int | None
    wait: float | None = None
    refused: bool = False


class PushService:
    def __init__(self, ctx: AppContext, *, online: OnlineCheck) -> None:
        self.ctx = ctx
        self.settings = ctx.settings
        self._online = online
        self.vapid: Vapid | None = None
        self._queue: asyncio.Queue[_Job] = asyncio.Queue(QUEUE_SIZE)
        self._workers: list[asyncio.Task[None]] = []
        self._http: httpx.AsyncClient | None = None
        self._sending = asyncio.Semaphore(self.settings.push_concurrency)
        on = self.settings.vapid_private_key is not None or not self.settings.is_production
        ctx.features["push"] = "webpush" if on else "off"

    # --- life -------------------------------------------------------------------------------------

    async def start(self) -> None:
        self.vapid = load_vapid(self.settings)  # a mismatched key pair stops the start here
        if self.vapid is None:
            log.warning("push.disabled", fix="set VAPID_PUBLIC_KEY, VAPID_PRIVATE_KEY and VAPID_SUBJECT")
            return
        concurrency = self.settings.push_concurrency
        self._http = httpx.AsyncClient(
            timeout=self.settings.push_timeout.total_seconds(),
            follow_redirects=False,
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
        )
        self._workers = [
            asyncio.create_task(self._work(), name=f"push-worker-{n}") for n in range(concurrency)
        ]

    async def stop(self) -> None:
        for task in self._workers:
            task.cancel()
        for task in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._workers = []
        if self._http is not None:
            await self._http.aclose()
            self._http = None
        if not self._queue.empty():
            log.warning("push.unsent_at_stop", events=self._queue.qsize())

    async def idle(self) -> None:
        """Wait until every queued event has been handled (tests, and a graceful drain)."""
        await self._queue.join()

    # --- frames -------------------------------------------------------------------------------------

    async def config(self, conn: SocketContext, message: PushConfigGet) -> PushConfig:
        if self.vapid is None:
            return PushConfig(enabled=False)
        return PushConfig(enabled=True, vapid_public_key=self.vapid.public_key)

    async def subscribe(self, conn: SocketContext, message: PushSubscribe) -> None:
        if self.vapid is None:
            raise SocketError(PUSH_DISABLED, ERROR_CODES[PUSH_DISABLED])
        settings = self.settings
        try:
            endpoint = check_endpoint(
                message.endpoint,
                allow_http=settings.environment == "test",
                allow_private=not settings.is_production,
            )
        except EndpointRefused as exc:
            raise SocketError(BAD_REQUEST, f"endpoint: {exc}.", {"field": "endpoint"}) from None
        try:
            p256dh, auth = check_keys(message.keys.p256dh, message.keys.auth)
        except EndpointRefused as exc:
            raise SocketError(BAD_REQUEST, f"{exc}.", {"field": exc.field}) from None
        async with self.ctx.db.pool.acquire() as db, db.transaction():
            await storage.subscribe(
                db,
                user_id=conn.user_id,
                session_id=conn.session_id,
                endpoint=endpoint,
                p256dh=p256dh,
                auth=auth,
                now=self.ctx.clock.now(),
                keep=MAX_SUBSCRIPTIONS_PER_USER,
            )
        log.info("push.subscribed", user_id=str(conn.user_id), push_host=urlsplit(endpoint).hostname)

    async def unsubscribe(self, conn: SocketContext, message: PushUnsubscribe) -> None:
        if await storage.unsubscribe(self.ctx.db.pool, conn.user_id, message.endpoint):
            log.info("push.unsubscribed", user_id=str(conn.user_id))

    # --- what the messenger and the calls hand over (after their commit) ----------------------------

    def message_new(self, alert: MessageAlert, recipients: Sequence[uuid.UUID]) -> None:
        """A message was stored: notify the members (``recipients``; the sender is left out)."""
        self._enqueue(_Job(alert, tuple(recipients)))

    def call_alert(self, alert: CallAlert, recipients: Sequence[uuid.UUID]) -> None:
        """A call rings for ``recipients`` (or they missed it)."""
        self._enqueue(_Job(alert, tuple(recipients)))

    def _enqueue(self, job: _Job) -> None:
        if self.vapid is None or not job.recipients:
            return
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            metrics.PUSH_SENT.labels(job.kind, "dropped").inc()
            log.warning("push.dropped", kind=job.kind, reason="queue_full", recipients=len(job.recipients))
        metrics.PUSH_QUEUE.set(self._queue.qsize())

    # --- the workers -------------------------------------------------------------------------------

    async def _work(self) -> None:
        while True:
            job = await self._queue.get()
            metrics.PUSH_QUEUE.set(self._queue.qsize())
            try:
                await self._handle(job)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if is_outage(exc):
                    log.warning("push.unavailable", kind=job.kind, error=repr(exc))
                else:
                    log.exception("push.job_failed", kind=job.kind)
            finally:
                self._queue.task_done()

    async def _handle(self, job: _Job) -> None:
        alert = job.alert
        sender = alert.sender_id if isinstance(alert, MessageAlert) else alert.caller_id
        users = [u for u in dict.fromkeys(job.recipients) if u != sender]
        users = await self._offline(users)
        if not users:
            return
        pool = self.ctx.db.pool
        live_since = self.ctx.clock.now() - self.settings.jwt_refresh_expiry
        targets = await storage.targets(pool, users, live_since)
        if not targets:
            return
        allowed = set()
        for user in {t.user_id for t in targets}:
            if await self._within_limit(user):
                allowed.add(user)
            else:
                metrics.PUSH_SENT.labels(job.kind, "rate_limited").inc()
                log.info("push.rate_limited", kind=job.kind, user_id=str(user))
        targets = [t for t in targets if t.user_id in allowed]
        names = await storage.names(pool, sender, alert.conversation_id)
        if not targets or names is None:
            return
        notice, delivery = self._compose(alert, names)
        payload = msgspec.json.encode(notice)
        await asyncio.gather(*(self._deliver(job.kind, target, payload, delivery) for target in targets))

    async def _offline(self, users: list[uuid.UUID]) -> list[uuid.UUID]:
        """Those of ``users`` without a live socket on any node. Presence unreachable: all of them (an
        extra notification beats a missed call)."""
        if not users:
            return []
        try:
            online = await self._online([str(u) for u in users])
        except Exception as exc:
            log.warning("push.presence_unavailable", error=repr(exc))
            online = set()
        return [u for u in users if str(u) not in online]

    async def _within_limit(self, user: uuid.UUID) -> bool:
        try:
            wait = await self.ctx.rate_limiter.hit("push", str(user), self.settings.push_rate_limit)
        except Exception as exc:  # the shared limiter is down: push anyway
            log.warning("push.rate_limit_unavailable", error=repr(exc))
            return True
        return wait is None

    # --- what a notification says ------------------------------------------------------------------

    def _compose(self, alert: Alert, names: Names) -> tuple[PushNotice, Delivery]:
        group = names.kind == "group"
        place = _clip(names.title or "Group", TITLE_CHARS) if group else _clip(names.sender, TITLE_CHARS)
        if isinstance(alert, MessageAlert):
            text = self._preview(alert) if self.settings.push_message_preview else None
            body = text or "New message"
            notice = PushNotice(
                kind="message",
                title=place,
                body=f"{_clip(names.sender, TITLE_CHARS)}: {body}" if group else body,
                url=f"/messenger/{alert.conversation_id}",
                tag=str(alert.conversation_id),
            )
            ttl = int(self.settings.push_message_ttl.total_seconds())
            return notice, Delivery(ttl, "normal", alert.conversation_id.hex)
        media = "video" if alert.media == "video" else "audio"
        by = f" from {_clip(names.sender, TITLE_CHARS)}" if group else ""
        tag = f"call:{alert.call_id}"
        if alert.missed:
            notice = PushNotice(
                kind="missed_call",
                title=place,
                body=f"Missed {media} call{by}",
                url=f"/messenger/{alert.conversation_id}",
                tag=tag,
            )
            ttl = int(self.settings.push_message_ttl.total_seconds())
            return notice, Delivery(ttl, "normal", alert.call_id.hex)
        notice = PushNotice(
            kind="call",
            title=place,
            body=f"Incoming {media} call{by}",
            url=f"/calls?call={alert.call_id}",
            tag=tag,
        )
        # A ring is worth nothing once the call stopped ringing: the push service drops it after that.
        ttl = max(1, int(self.settings.call_ring_timeout.total_seconds()))
        return notice, Delivery(ttl, "high", alert.call_id.hex)

    @staticmethod
    def _preview(alert: MessageAlert) -> str | None:
        if alert.text and alert.text.strip():
            return _clip(" ".join(alert.text.split()), PREVIEW_CHARS)
        if alert.attachments == 1:
            return "📎 Attachment"
        if alert.attachments > 1:
            return f"📎 {alert.attachments} attachments"
        return None

    # --- sending -------------------------------------------------------------------------------------

    async def _deliver(self, kind: NoticeKind, target: Target, payload: bytes, delivery: Delivery) -> None:
        """Send one notification to one browser, retrying what may pass later; record the outcome."""
        try:
            body = encrypt(target, payload)
        except Exception as exc:  # keys that passed the checks yet cannot be used: never will be
            log.warning("push.bad_keys", subscription_id=str(target.id), error=repr(exc))
            await self._record(kind, "rejected", storage.delete(self.ctx.db.pool, target.id))
            return
        started = time.monotonic()
        retries = 0
        while True:
            answer = await self._attempt(target, body, delivery)
            if answer.status in _SENT:
                await self._record(
                    kind, "sent", storage.succeeded(self.ctx.db.pool, target.id, self.ctx.clock.now())
                )
                log.debug("push.sent", kind=kind, subscription_id=str(target.id))
                return
            if answer.status in _GONE or answer.refused:
                result = "rejected" if answer.refused else "gone"
                log.info(f"push.{result}", kind=kind, subscription_id=str(target.id), status=answer.status)
                await self._record(kind, result, storage.delete(self.ctx.db.pool, target.id))
                return
            retryable = answer.status is None or answer.status == 429 or answer.status >= 500
            if retryable and retries < self.settings.push_max_retries:
                wait = answer.wait if answer.wait is not None else _backoff(retries)
                # Past the push's TTL (a call that stopped ringing) a retry has nothing left to deliver.
                if time.monotonic() - started + wait < delivery.ttl_seconds:
                    retries += 1
                    metrics.PUSH_RETRIES.inc()
                    await asyncio.sleep(wait)
                    continue
            result = "failed" if retryable else "rejected"
            log.warning(
                f"push.{result}",
                kind=kind,
                subscription_id=str(target.id),
                status=answer.status,
                retries=retries,
            )
            await self._record(
                kind, result, storage.failed(self.ctx.db.pool, target.id, GIVE_UP_AFTER_FAILURES)
            )
            return

    async def _attempt(self, target: Target, body: bytes, delivery: Delivery) -> _Answer:
        assert self._http is not None and self.vapid is not None
        async with self._sending:
            try:
                if self.settings.is_production and not await resolves_publicly(target.endpoint):
                    return _Answer(None, refused=True)
                response = await post(self._http, self.vapid, target, body, delivery)
            except (httpx.HTTPError, OSError) as exc:
                log.info("push.network_error", subscription_id=str(target.id), error=repr(exc))
                return _Answer(None)
            return _Answer(response.status_code, retry_after(response))

    @staticmethod
    async def _record(kind: NoticeKind, result: str, update: Awaitable[object]) -> None:
        metrics.PUSH_SENT.labels(kind, result).inc()
        try:
            await update
        except Exception as exc:
            log.warning("push.bookkeeping_failed", result=result, error=repr(exc))


def _backoff(retries: int) -> float:
    base: float = _BACKOFF_SECONDS * 2**retries
    return float(base * (0.5 + random.random()))  # jitter


_SPACE = re.compile(r"\s+")


def _clip(text: str, limit: int) -> str:
    text = _SPACE.sub(" ", text).strip()
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"
