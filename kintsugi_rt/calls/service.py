"""Calls: ringing, answering, ending, and relaying WebRTC signaling between the devices in a call.

The state of every call lives in PostgreSQL (``calls``, ``call_participants``), changed in one
transaction per request with the durable events it causes (``call.ringing``, ``call.accepted``,
``call.ended``…) appended to the users' streams, so every device on every node hears of it and a
reconnecting device catches up by resuming. Signaling (``call.signal``) is not stored: it goes from one
device to another, on whichever node holds it, only between devices that are in the same call.

Rules (docs/calls.md has the flows):
- One live call per conversation (a partial unique index). Calling a conversation that has one joins
  it; if it is still ringing for you, that is an answer — so when A and B call each other at once
  (glare), the second ``call.start`` answers the first call, whichever node each landed on.
- Busy: calling someone who is in another call ends the new call at once with ``busy`` (no waiting).
- Two-party calls are peer to peer (STUN/TURN from settings, TURN credentials per call); group calls
  use LiveKit when it is configured, else the server's SFU; ``call.fallback`` moves a two-party call
  whose P2P connection failed even through TURN to the SFU.
- Every node sweeps once a second for calls whose ring time or the caller's tier's longest duration
  is over (``FOR UPDATE SKIP LOCKED``: each call is handled once, even if the node that started it
  died).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from kintsugi_rt import metrics
from kintsugi_rt.billing import Tiers
from kintsugi_rt.billing.tiers import TIER_REQUIRED
from kintsugi_rt.calls import ice, storage
from kintsugi_rt.calls.frames import (
    SFU_PARTY,
    CallAccept,
    CallAccepted,
    CallAnsweredElsewhere,
    CallCancel,
    CallDecline,
    CallEnded,
    CallFallback,
    CallHangup,
    CallHistory,
    CallInfo,
    CallJoin,
    CallJoined,
    CallLeave,
    CallModeChanged,
    CallPage,
    CallParticipantChanged,
    CallRef,
    CallRinging,
    CallSignal,
    CallSignalled,
    CallStart,
    CallStats,
    Candidate,
    LiveKitJoin,
    SignalKind,
)
from kintsugi_rt.calls.livekit import LiveKit, LiveKitError, LiveKitEvent
from kintsugi_rt.calls.sfu import Sfu, SfuFull, SfuSignal
from kintsugi_rt.calls.storage import CallRow, PartyRow
from kintsugi_rt.context import AppContext
from kintsugi_rt.logs import get_logger
from kintsugi_rt.messenger import MessengerService
from kintsugi_rt.messenger.frames import CallEntry
from kintsugi_rt.outages import is_outage
from kintsugi_rt.settings import RateLimit
from kintsugi_rt.socket import streams
from kintsugi_rt.socket.protocol import BAD_REQUEST, NOT_FOUND, RATE_LIMITED, Error
from kintsugi_rt.socket.registry import SocketContext, SocketError

log = get_logger(__name__)

CALL_ENDED = "call_ended"
CALL_CAPACITY = "call_capacity"
CALL_TOO_LARGE = "call_too_large"
SIGNAL_TOO_LARGE = "signal_too_large"
PEER_GONE = "peer_gone"

ERROR_CODES = {
    CALL_ENDED: "The call is over (or was answered on another of your devices); nothing was changed.",
    CALL_CAPACITY: "The server's SFU is full on this node; try again later (or ask for a smaller call).",
    CALL_TOO_LARGE: "The conversation has more members than the caller's tier allows in a call; "
    "``details.limit`` says how many.",
    SIGNAL_TOO_LARGE: "The signal's SDP is longer than CALL_SIGNAL_MAX_BYTES.",
    PEER_GONE: "The device you signalled is not in the call (any more); wait for its call.accepted.",
}

_SWEEP_SECONDS = 1.0
_SWEEP_BATCH = 100
_SFU_SIGNAL = "calls.sfu"  # hub signal: a call.signal for the SFU of a call carried by another node

# How each end reason shows in the conversation's timeline.
_OUTCOMES = {
    "hangup": "completed",
    "time_limit": "completed",
    "missed": "missed",
    "declined": "declined",
    "busy": "busy",
    "cancelled": "cancelled",
    "failed": "failed",
}


def _not_found() -> SocketError:
    return SocketError(NOT_FOUND, "No such call.")


def _ended() -> SocketError:
    return SocketError(CALL_ENDED, ERROR_CODES[CALL_ENDED])


class _SfuForward(msgspec.Struct):
    """A client's signal for a call whose SFU runs on another node."""

    node: str
    call_id: uuid.UUID
    party_id: str
    to: str
    kind: SignalKind
    sdp: str | None = None
    candidate: Candidate | None = None


@dataclass(slots=True)
class _Effects:
    """What a request's transaction did that must happen after its commit: durable events to publish,
    calls whose media (SFU room, LiveKit room) must be released."""

    deliveries: list[streams.DurableDelivery] = field(default_factory=list)
    ended: list[CallRow] = field(default_factory=list)
    # Whom to alert (Web Push) after the commit: a call that rings for them, one they missed.
    rang: list[tuple[CallInfo, list[uuid.UUID]]] = field(default_factory=list)
    missed: list[tuple[CallInfo, list[uuid.UUID]]] = field(default_factory=list)


CallHook = Callable[[CallInfo, Sequence[uuid.UUID]], None]
"""``(call, users)``, called after the commit: the call rings for ``users`` (``on_ringing``), or they
missed it (``on_missed``). It must return at once (Web Push queues it); what it raises is logged."""


class _Bucket:
    """Token bucket for one device's signals in one call."""

    __slots__ = ("_rate", "_size", "_stamp", "_tokens")

    def __init__(self, rule: RateLimit) -> None:
        self._size = float(rule.limit)
        self._rate = rule.limit / rule.window.total_seconds()
        self._tokens = self._size
        self._stamp = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self._tokens = min(self._size, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True


class CallService:
    def __init__(
        self, ctx: AppContext, *, messenger: MessengerService, tiers: Tiers, livekit: LiveKit, sfu: Sfu
    ) -> None:
        self.ctx = ctx
        self.settings = ctx.settings
        self.messenger = messenger
        self.tiers = tiers
        self.livekit = livekit
        self.sfu = sfu
        self._buckets: dict[tuple[str, uuid.UUID], _Bucket] = {}
        self._local_parties: dict[str, set[uuid.UUID]] = {}  # this node's sockets that are in calls
        self._tasks: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.Task[None] | None = None
        # Told of rings and missed calls after their commit (wiring.py: Web Push). Must not block.
        self.on_ringing: CallHook | None = None
        self.on_missed: CallHook | None = None
        ctx.features["calls"] = "livekit" if livekit.enabled else "sfu"
        ctx.events.on_signal(_SFU_SIGNAL, self._on_sfu_forward)

    async def start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="calls-sweeper")
        if not ice.turn_configured(self.settings):
            log.warning(
                "calls.no_turn", hint="set TURN_URLS and TURN_SECRET: about 1 call in 5 needs a relay"
            )

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        for task in list(self._tasks):
            task.cancel()
        await self.sfu.close()
        await self.livekit.close()

    # --- starting, answering, joining ----------------------------------------------------------

    async def start_call(self, conn: SocketContext, message: CallStart) -> CallJoined:
        me = conn.user_id
        found = await self.messenger.conversation_for(me, message.conversation_id)
        if found is None:
            raise SocketError(NOT_FOUND, "No such conversation.", {"field": "conversation_id"})
        kind, members = found
        tier = await self.tiers.tier_of(me)
        paid = tier != "basic"
        if message.media == "video" and not (paid or self.settings.call_video_basic):
            raise SocketError(TIER_REQUIRED, "Video calls need a paid tier.", {"tier": "premium_starter"})
        limit = (
            self.settings.call_max_participants_premium if paid else self.settings.call_max_participants_basic
        )
        if len(members) > limit:
            raise SocketError(CALL_TOO_LARGE, f"Calls have at most {limit} participants.", {"limit": limit})
        group = kind == "group"
        mode = ("livekit" if self.livekit.enabled else "sfu") if group else "p2p"
        if mode == "sfu" and not self.sfu.has_room():
            raise SocketError(CALL_CAPACITY, ERROR_CODES[CALL_CAPACITY])
        now = self.ctx.clock.now()
        longest = self.settings.call_max_duration_premium if paid else self.settings.call_max_duration_basic
        fx = _Effects()
        created = False
        async with self.ctx.db.pool.acquire() as db, db.transaction():
            call = await storage.insert_call(
                db,
                conversation_id=message.conversation_id,
                caller_id=me,
                media=message.media,
                mode=mode,
                max_participants=limit,
                now=now,
                ring_deadline=now + self.settings.call_ring_timeout,
                end_deadline=now + longest,
            )
            if call is None:  # a live call exists (glare, or a call in progress): answer or join it
                existing = await storage.live_call_of(db, message.conversation_id, lock=True)
                if existing is None:  # it ended between the two statements: let the client retry
                    raise SocketError(CALL_ENDED, "The conversation's call just ended; call again.")
                await self._join(db, existing, conn, now, fx)
                call = existing
            else:
                created = True
                if mode == "sfu":
                    await storage.set_mode(db, call.id, "sfu", self.ctx.node_id)
                others = [m for m in members if m != me]
                await storage.add_parties(
                    db, call.id, [(me, "joined", conn.conn_id), *((u, "ringing", None) for u in others)], now
                )
                if not group and others and await storage.in_live_call(db, others[0]):
                    await self._end(db, call, "busy", now, fx)  # no waiting: the caller hears "busy"
                else:
                    ringing = CallRinging(call=storage.info(call, await storage.parties(db, call.id)))
                    fx.deliveries.append(await streams.append(db, others, ringing))
                    fx.rang.append((ringing.call, others))
            call = await storage.call(db, call.id)
            assert call is not None
            parties = await storage.parties(db, call.id)
        await self._apply(fx)
        if call.state != "ended":
            self._track(conn.conn_id, call.id)
        if created:
            metrics.CALLS_STARTED.labels(mode).inc()
            if mode == "livekit":
                await self._livekit_room(call)
        return self._joined(conn, call, parties)

    async def accept(self, conn: SocketContext, message: CallAccept) -> CallJoined:
        now = self.ctx.clock.now()
        fx = _Effects()
        async with self.ctx.db.pool.acquire() as db, db.transaction():
            call, mine = await self._locked(db, message.call_id, conn.user_id)
            if call.state == "ended" or mine.state not in ("ringing", "joined"):
                raise _ended()
            if mine.state == "joined" and mine.party_id != conn.conn_id:
                raise SocketError(CALL_ENDED, "You answered this call on another device.")
            await self._join(db, call, conn, now, fx)
            call = await self._reload(db, call.id)
            parties = await storage.parties(db, call.id)
        await self._apply(fx)
        self._track(conn.conn_id, call.id)
        return self._joined(conn, call, parties)

    async def join(self, conn: SocketContext, message: CallJoin) -> CallJoined:
        """A group call in progress, or this user's call again from a new socket (a new party)."""
        found = None
        now = self.ctx.clock.now()
        fx = _Effects()
        async with self.ctx.db.pool.acquire() as db, db.transaction():
            call = await storage.call(db, message.call_id, lock=True)
            if call is not None:
                found = await self.messenger.conversation_for(conn.user_id, call.conversation_id)
            mine = None if call is None else await self._party_of(db, call.id, conn.user_id)
            if call is None or found is None or (mine is None and found[0] != "group"):
                raise _not_found()
            if call.state == "ended":
                raise _ended()
            joined = [p for p in await storage.parties(db, call.id) if p.state == "joined"]
            if (mine is None or mine.state != "joined") and len(joined) >= call.max_participants:
                raise SocketError(CALL_TOO_LARGE, "The call is full.", {"limit": call.max_participants})
            if call.mode == "sfu" and call.sfu_node == self.ctx.node_id and not self.sfu.has_room():
                raise SocketError(CALL_CAPACITY, ERROR_CODES[CALL_CAPACITY])
            await self._join(db, call, conn, now, fx)
            call = await self._reload(db, call.id)
            parties = await storage.parties(db, call.id)
        await self._apply(fx)
        self._track(conn.conn_id, call.id)
        return self._joined(conn, call, parties)

    async def _join(
        self, db: asyncpg.Connection, call: CallRow, conn: SocketContext, now: datetime, fx: _Effects
    ) -> None:
        """This device is in the call now (an answer, a join, a rejoin); tell the others."""
        before = await self._party_of(db, call.id, conn.user_id)
        await storage.join(db, call.id, conn.user_id, conn.conn_id, now)
        if call.state == "ringing" and conn.user_id != call.caller_id:
            await storage.answer(db, call.id, now)
        users = await self._users_of(db, call.id)
        await streams.lock(db, users)  # two appends below: lock every stream first
        accepted = CallAccepted(call_id=call.id, user_id=conn.user_id, party_id=conn.conn_id)
        fx.deliveries.append(await streams.append(db, users, accepted))
        if before is None or before.state != "joined":  # the user's other devices stop ringing
            elsewhere = CallAnsweredElsewhere(call_id=call.id, party_id=conn.conn_id)
            fx.deliveries.append(await streams.append(db, [conn.user_id], elsewhere))

    def _joined(self, conn: SocketContext, call: CallRow, parties: list[PartyRow]) -> CallJoined:
        livekit: LiveKitJoin | None = None
        if call.mode == "livekit" and call.state != "ended":
            ttl = self.settings.turn_credential_ttl
            livekit = self.livekit.join(call.id, conn.user_id, str(conn.user_id), ttl)
        return CallJoined(
            call=storage.info(call, parties),
            party_id=conn.conn_id,
            ice_servers=ice.ice_servers(self.settings, conn.user_id, self.ctx.clock.now()),
            livekit=livekit,
        )

    # --- declining, cancelling, leaving --------------------------------------------------------

    async def decline(self, conn: SocketContext, message: CallDecline) -> None:
        now = self.ctx.clock.now()
        fx = _Effects()
        async with self.ctx.db.pool.acquire() as db, db.transaction():
            call, mine = await self._locked(db, message.call_id, conn.user_id)
            if call.state == "ended" or mine.state != "ringing":
                raise _ended()
            await storage.set_party_state(db, call.id, conn.user_id, "declined", now)
            parties = await storage.parties(db, call.id)
            still_ringing = any(p.state == "ringing" for p in parties)
            if not still_ringing and sum(p.state == "joined" for p in parties) <= 1:
                await self._end(db, call, "declined", now, fx)  # nobody else will answer
            else:
                await self._participant_event(db, call.id, conn.user_id, "declined", fx)
        await self._apply(fx)

    async def cancel(self, conn: SocketContext, message: CallCancel) -> None:
        now = self.ctx.clock.now()
        fx = _Effects()
        async with self.ctx.db.pool.acquire() as db, db.transaction():
            call = await storage.call(db, message.call_id, lock=True)
            if call is None or call.caller_id != conn.user_id:
                raise _not_found()
            if call.state != "ringing":
                raise _ended()
            await self._end(db, call, "cancelled", now, fx)
        await self._apply(fx)
        self._untrack(conn.conn_id, message.call_id)

    async def hangup(self, conn: SocketContext, message: CallHangup) -> None:
        await self._leave(conn.user_id, message.call_id, conn.conn_id, end_for_all=True)

    async def leave(self, conn: SocketContext, message: CallLeave) -> None:
        await self._leave(conn.user_id, message.call_id, conn.conn_id, end_for_all=False)

    async def _leave(
        self, user_id: uuid.UUID, call_id: uuid.UUID, party_id: str | None, *, end_for_all: bool
    ) -> None:
        """The user's device leaves. A two-party call (or a hang-up by the caller of a call nobody
        answered yet) ends for everyone; a group call goes on while someone is in it."""
        now = self.ctx.clock.now()
        fx = _Effects()
        async with self.ctx.db.pool.acquire() as db, db.transaction():
            call, mine = await self._locked(db, call_id, user_id)
            if call.state == "ended" or mine.state != "joined":
                raise _ended()
            if party_id is not None and mine.party_id != party_id:
                raise SocketError(CALL_ENDED, "You are in this call on another device.")
            parties = await storage.parties(db, call.id)
            others_in = [p for p in parties if p.state == "joined" and p.user_id != user_id]
            two_party = call.mode == "p2p" or len(parties) <= 2
            if call.state == "ringing" and user_id == call.caller_id and not others_in:
                await self._end(db, call, "cancelled", now, fx)
            elif (end_for_all and two_party) or not others_in:
                await self._end(db, call, "hangup", now, fx)
            else:
                await storage.set_party_state(db, call.id, user_id, "left", now)
                await self._participant_event(db, call.id, user_id, "left", fx)
        await self._apply(fx)
        if call.mode == "sfu" and mine.party_id is not None and not fx.ended:
            await self._sfu_leave(call, mine.party_id)
        if party_id is not None:
            self._untrack(party_id, call.id)

    # --- ending ----------------------------------------------------------------------------------

    async def _end(
        self, db: asyncpg.Connection, call: CallRow, reason: str, now: datetime, fx: _Effects
    ) -> None:
        """End the call in this transaction: the timeline entry and ``call.ended`` for everyone in it.

        Must come before any other append of the transaction: the timeline entry locks the
        conversation row, then the streams, in the messenger's order (see ``add_call_entry``)."""
        ringing = [p.user_id for p in await storage.parties(db, call.id) if p.state == "ringing"]
        ended = await storage.end(db, call.id, reason, now)
        if ringing and reason != "busy":  # a busy callee was never rung
            fx.missed.append((storage.info(ended, []), ringing))
        users = await self._users_of(db, call.id)
        duration = storage.info(ended, []).duration_s or 0
        if call.caller_id is not None:
            entry = CallEntry(
                call_id=call.id,
                media=call.media,  # type: ignore[arg-type]
                outcome=_OUTCOMES[reason],  # type: ignore[arg-type]
                duration_s=duration,
            )
            fx.deliveries.append(
                await self.messenger.add_call_entry(
                    db, call.conversation_id, call.caller_id, entry, also_lock=users
                )
            )
        else:
            await streams.lock(db, users)
        event = CallEnded(call_id=call.id, reason=reason, ended_at=now, duration_s=duration)  # type: ignore[arg-type]
        fx.deliveries.append(await streams.append(db, users, event))
        fx.ended.append(ended)
        metrics.CALLS_ENDED.labels(reason).inc()

    async def _apply(self, fx: _Effects) -> None:
        """After the commit: publish the durable events, alert (Web Push), release ended calls' media."""
        for delivery in fx.deliveries:
            await self.ctx.events.publish_durable(delivery)
        _alert(self.on_ringing, fx.rang)
        _alert(self.on_missed, fx.missed)
        for call in fx.ended:
            self._background(self._release(call))

    async def _release(self, call: CallRow) -> None:
        """An ended call's media: the SFU room (on its node), the LiveKit room."""
        if call.mode == "sfu":
            if call.sfu_node == self.ctx.node_id:
                await self.sfu.end(call.id)
            else:
                forward = _SfuForward(
                    node=call.sfu_node or "", call_id=call.id, party_id="", to="", kind="ice_end"
                )
                await self.ctx.events.signal(_SFU_SIGNAL, forward)
        elif call.mode == "livekit" and self.livekit.enabled:
            try:
                await self.livekit.delete_room(call.id)
            except LiveKitError as exc:
                log.warning("calls.livekit_delete_failed", call_id=str(call.id), error=str(exc))

    # --- signaling -------------------------------------------------------------------------------

    async def signal(self, conn: SocketContext, message: CallSignal) -> None:
        """Relay to the party ``to`` of the same call (or to the SFU); never to anyone else."""
        limit = self.settings.call_signal_max_bytes
        if message.sdp is not None and len(message.sdp.encode()) > limit:
            raise SocketError(SIGNAL_TOO_LARGE, ERROR_CODES[SIGNAL_TOO_LARGE], {"limit": limit})
        if message.kind in ("offer", "answer") and message.sdp is None:
            raise SocketError(BAD_REQUEST, "An offer or answer carries its SDP.", {"field": "sdp"})
        if message.kind == "ice" and message.candidate is None:
            raise SocketError(BAD_REQUEST, "An ice signal carries its candidate.", {"field": "candidate"})
        if not self._bucket(conn.conn_id, message.call_id).take():
            raise SocketError(RATE_LIMITED, "Too many signals in this call; slow down.")
        pool = self.ctx.db.pool
        to_sfu = message.to == SFU_PARTY or message.to.startswith(SFU_PARTY + "/")
        wanted = [conn.conn_id] if to_sfu else [conn.conn_id, message.to]
        joined = await storage.joined_parties(pool, message.call_id, wanted)
        if joined.get(conn.conn_id) != conn.user_id:
            raise _not_found()  # not in this call from this device: learn nothing more
        metrics.CALL_SIGNALS.labels(message.kind).inc()
        if to_sfu:
            call = await storage.call(pool, message.call_id)
            if call is None or call.mode != "sfu":
                raise SocketError(PEER_GONE, "This call has no SFU.")
            await self._to_sfu(call, conn.conn_id, message)
            return
        if message.to not in joined:
            raise SocketError(PEER_GONE, ERROR_CODES[PEER_GONE])
        relayed = CallSignalled(
            call_id=message.call_id,
            from_party=conn.conn_id,
            from_user=conn.user_id,
            kind=message.kind,
            sdp=message.sdp,
            candidate=message.candidate,
        )
        await self.ctx.events.push_connection(message.to, relayed)

    def _bucket(self, conn_id: str, call_id: uuid.UUID) -> _Bucket:
        key = (conn_id, call_id)
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) > 100_000:  # forgotten on disconnect; this only bounds a leak
                self._buckets.clear()
            bucket = self._buckets[key] = _Bucket(self.settings.call_signal_rate_limit)
        return bucket

    async def fallback(self, conn: SocketContext, message: CallFallback) -> CallRef:
        """P2P failed even through TURN: carry the two-party call on this node's SFU from now on."""
        fx = _Effects()
        async with self.ctx.db.pool.acquire() as db, db.transaction():
            call, _ = await self._locked(db, message.call_id, conn.user_id)
            if call.state == "ended":
                raise _ended()
            if call.mode != "p2p":  # the other device asked first
                return CallRef(call=storage.info(call, await storage.parties(db, call.id)))
            if not self.sfu.has_room(2):
                raise SocketError(CALL_CAPACITY, ERROR_CODES[CALL_CAPACITY])
            await storage.set_mode(db, call.id, "sfu", self.ctx.node_id)
            call = await self._reload(db, call.id)
            info = storage.info(call, await storage.parties(db, call.id))
            fx.deliveries.append(
                await streams.append(db, await self._users_of(db, call.id), CallModeChanged(call=info))
            )
        await self._apply(fx)
        metrics.CALL_P2P_FAILURES.inc()
        log.info("calls.fallback_to_sfu", call_id=str(call.id))
        return CallRef(call=info)

    async def stats(self, conn: SocketContext, message: CallStats) -> None:
        """Client-reported connection state: metrics only (labels are the frame's closed sets)."""
        joined = await storage.joined_parties(self.ctx.db.pool, message.call_id, [conn.conn_id])
        if joined.get(conn.conn_id) != conn.user_id:
            raise _not_found()
        if message.ice_state == "failed":
            metrics.CALL_P2P_FAILURES.inc()
        elif message.ice_state in ("connected", "completed"):
            if message.setup_ms is not None:
                metrics.CALL_SETUP_SECONDS.observe(message.setup_ms / 1000)
            if message.candidate_type is not None:
                metrics.CALL_CONNECTIONS.labels(message.candidate_type).inc()

    async def history(self, conn: SocketContext, message: CallHistory) -> CallPage:
        found = await storage.history(self.ctx.db.pool, conn.user_id, message.before, message.limit + 1)
        calls = [storage.info(c, p) for c, p in found[: message.limit]]
        return CallPage(calls=calls, has_more=len(found) > message.limit)

    # --- the SFU, wherever it runs -----------------------------------------------------------------

    async def _to_sfu(self, call: CallRow, party_id: str, message: CallSignal) -> None:
        if call.sfu_node == self.ctx.node_id:
            await self._sfu_signal(
                call.id, party_id, message.to, message.kind, message.sdp, message.candidate
            )
            return
        forward = _SfuForward(
            node=call.sfu_node or "",
            call_id=call.id,
            party_id=party_id,
            to=message.to,
            kind=message.kind,
            sdp=message.sdp,
            candidate=message.candidate,
        )
        await self.ctx.events.signal(_SFU_SIGNAL, forward)

    async def _sfu_signal(
        self,
        call_id: uuid.UUID,
        party_id: str,
        to: str,
        kind: SignalKind,
        sdp: str | None,
        candidate: Candidate | None,
    ) -> None:
        try:
            await self.sfu.signal(call_id, party_id, to, kind, sdp, candidate)
        except SfuFull:
            details = {"call_id": str(call_id)}
            error = Error(code=CALL_CAPACITY, message=ERROR_CODES[CALL_CAPACITY], details=details)
            await self.ctx.events.push_connection(party_id, error)

    def _on_sfu_forward(self, body: bytes) -> None:
        forward = msgspec.json.decode(body, type=_SfuForward)
        if forward.node != self.ctx.node_id:
            return
        if not forward.party_id:  # the call ended on another node
            self._background(self.sfu.end(forward.call_id))
        else:
            self._background(
                self._sfu_signal(
                    forward.call_id,
                    forward.party_id,
                    forward.to,
                    forward.kind,
                    forward.sdp,
                    forward.candidate,
                )
            )

    async def send_from_sfu(self, call_id: uuid.UUID, party_id: str, signal: SfuSignal) -> None:
        """The SFU's signals to a device (wired in as the Sfu's ``send``)."""
        relayed = CallSignalled(
            call_id=call_id,
            from_party=signal.from_party,
            from_user=None,
            kind=signal.kind,
            sdp=signal.sdp,
            candidate=signal.candidate,
        )
        await self.ctx.events.push_connection(party_id, relayed)

    async def _sfu_leave(self, call: CallRow, party_id: str) -> None:
        if call.sfu_node == self.ctx.node_id:
            await self.sfu.leave(call.id, party_id)
        # On another node the SFU sees the device's peer connection close (ICE consent) by itself.

    # --- LiveKit ---------------------------------------------------------------------------------

    async def _livekit_room(self, call: CallRow) -> None:
        try:
            await self.livekit.create_room(
                call.id, call.max_participants, self.settings.call_ring_timeout * 2
            )
        except LiveKitError as exc:  # joining creates the room too; the call goes on
            log.warning("calls.livekit_room_failed", call_id=str(call.id), error=str(exc))

    async def on_livekit_event(self, event: LiveKitEvent) -> None:
        """LiveKit's webhook (verified by the route): someone left the room, or the room closed."""
        try:
            call_id = uuid.UUID(event.room or "")
        except ValueError:
            return
        if event.event == "room_finished":
            await self._end_if_live(call_id, "hangup")
        elif event.event == "participant_left" and event.identity:
            with contextlib.suppress(SocketError, ValueError):
                await self._leave(uuid.UUID(event.identity), call_id, None, end_for_all=False)

    async def _end_if_live(self, call_id: uuid.UUID, reason: str) -> None:
        now = self.ctx.clock.now()
        fx = _Effects()
        async with self.ctx.db.pool.acquire() as db, db.transaction():
            call = await storage.call(db, call_id, lock=True)
            if call is None or call.state == "ended":
                return
            await self._end(db, call, reason, now, fx)
        await self._apply(fx)

    # --- devices that went away ------------------------------------------------------------------

    async def on_disconnect(self, conn: SocketContext) -> None:
        """A socket in a call dropped: it has CALL_REJOIN_GRACE to come back with ``call.join``."""
        calls = self._local_parties.pop(conn.conn_id, None)
        if not calls:
            return
        loop = asyncio.get_running_loop()
        grace = self.settings.call_rejoin_grace.total_seconds()
        for call_id in calls:
            self._buckets.pop((conn.conn_id, call_id), None)
            loop.call_later(grace, self._lost_later, conn.user_id, call_id, conn.conn_id)

    def _lost_later(self, user_id: uuid.UUID, call_id: uuid.UUID, party_id: str) -> None:
        self._background(self._party_lost(user_id, call_id, party_id))

    async def _party_lost(self, user_id: uuid.UUID, call_id: uuid.UUID, party_id: str) -> None:
        """Still the same (gone) device after the grace: it leaves (a two-party call ends as failed)."""
        now = self.ctx.clock.now()
        fx = _Effects()
        async with self.ctx.db.pool.acquire() as db, db.transaction():
            call = await storage.call(db, call_id, lock=True)
            mine = None if call is None else await self._party_of(db, call_id, user_id)
            if call is None or mine is None or call.state == "ended" or mine.party_id != party_id:
                return  # ended, or back on another socket
            parties = await storage.parties(db, call_id)
            others_in = [p for p in parties if p.state == "joined" and p.user_id != user_id]
            if call.mode == "p2p" or not others_in:
                await self._end(db, call, "failed" if call.answered_at else "cancelled", now, fx)
            else:
                await storage.set_party_state(db, call_id, user_id, "left", now)
                await self._participant_event(db, call_id, user_id, "left", fx)
        await self._apply(fx)
        if call.mode == "sfu" and not fx.ended:
            await self._sfu_leave(call, party_id)

    # --- the sweeper -------------------------------------------------------------------------------

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(_SWEEP_SECONDS)
            try:
                await self.sweep()
            except Exception as exc:
                if is_outage(exc):
                    log.warning("calls.sweep_unavailable", error=repr(exc))
                else:
                    log.exception("calls.sweep_failed")

    async def sweep(self) -> None:
        """Ring time over: missed; the tier's longest call over: ``time_limit``. One transaction per
        call (each locks its own streams), each call handled by one node (``SKIP LOCKED``)."""
        pool = self.ctx.db.pool
        for call_id in await storage.due_ends(pool, self.ctx.clock.now(), _SWEEP_BATCH):
            await self._sweep_one(call_id, "time_limit")
        for call_id in await storage.due_rings(pool, self.ctx.clock.now(), _SWEEP_BATCH):
            await self._sweep_one(call_id, "missed")
        for call_id in await storage.due_group_rings(pool, self.ctx.clock.now(), _SWEEP_BATCH):
            await self._sweep_one(call_id, "missed_some")

    async def _sweep_one(self, call_id: uuid.UUID, what: str) -> None:
        now = self.ctx.clock.now()
        fx = _Effects()
        async with self.ctx.db.pool.acquire() as db, db.transaction():
            call = await storage.claim(db, call_id)
            if call is None or call.state == "ended":
                return  # another node has it, or it ended meanwhile
            if what == "time_limit" and call.end_deadline <= now:
                await self._end(db, call, "time_limit", now, fx)
            elif what == "missed" and call.state == "ringing" and call.ring_deadline <= now:
                await self._end(db, call, "missed", now, fx)
            elif what == "missed_some" and call.ring_deadline <= now:
                missed = await storage.miss_unanswered(db, call_id)
                for user_id in missed:
                    await self._participant_event(db, call_id, user_id, "missed", fx)
                if missed:
                    fx.missed.append((storage.info(call, []), missed))
        await self._apply(fx)

    # --- helpers -----------------------------------------------------------------------------------

    async def _locked(
        self, db: asyncpg.Connection, call_id: uuid.UUID, user_id: uuid.UUID
    ) -> tuple[CallRow, PartyRow]:
        """The call, locked for this transaction, and the user's place in it; ``not_found`` for anyone
        who is not a participant."""
        call = await storage.call(db, call_id, lock=True)
        mine = None if call is None else await self._party_of(db, call_id, user_id)
        if call is None or mine is None:
            raise _not_found()
        return call, mine

    async def _reload(self, db: asyncpg.Connection, call_id: uuid.UUID) -> CallRow:
        call = await storage.call(db, call_id)
        assert call is not None  # locked by this transaction
        return call

    async def _party_of(
        self, db: asyncpg.Connection, call_id: uuid.UUID, user_id: uuid.UUID
    ) -> PartyRow | None:
        for party in await storage.parties(db, call_id):
            if party.user_id == user_id:
                return party
        return None

    async def _users_of(self, db: asyncpg.Connection, call_id: uuid.UUID) -> list[uuid.UUID]:
        return [p.user_id for p in await storage.parties(db, call_id)]

    async def _participant_event(
        self, db: asyncpg.Connection, call_id: uuid.UUID, user_id: uuid.UUID, state: str, fx: _Effects
    ) -> None:
        event = CallParticipantChanged(call_id=call_id, user_id=user_id, state=state)  # type: ignore[arg-type]
        fx.deliveries.append(await streams.append(db, await self._users_of(db, call_id), event))

    def _track(self, conn_id: str, call_id: uuid.UUID) -> None:
        self._local_parties.setdefault(conn_id, set()).add(call_id)

    def _untrack(self, conn_id: str, call_id: uuid.UUID) -> None:
        calls = self._local_parties.get(conn_id)
        if calls is not None:
            calls.discard(call_id)
            if not calls:
                del self._local_parties[conn_id]

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` after the request; its failures are logged, never raised."""
        task = asyncio.ensure_future(self._logged(work))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _logged(work: Coroutine[Any, Any, None]) -> None:
        try:
            await work
        except Exception as exc:
            log.warning("calls.background_failed", error=repr(exc))


def _alert(hook: CallHook | None, alerts: list[tuple[CallInfo, list[uuid.UUID]]]) -> None:
    """Hand rings or missed calls to ``hook``; it only queues, and what it raises is logged."""
    if hook is None:
        return
    for info, users in alerts:
        try:
            hook(info, users)
        except Exception:
            log.exception("calls.alert_failed", call_id=str(info.id))
