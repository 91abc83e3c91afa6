"""The built-in SFU: group calls without LiveKit, and two-party calls whose P2P connection failed.

Each device in an SFU call (a *participant*, keyed by its party id) holds up to two WebRTC connections
with this node, both signaled over its one socket through ``call.signal``:

- the **publishing** connection, addressed ``"sfu"``: the client offers its tracks (audio, and video if
  any; sendonly), the SFU answers from ``"sfu"``. The client renegotiates it by sending a new offer; an
  offer with a new ICE username fragment is a new connection (the old one and its tracks are dropped).
- the **receiving** connection, addressed ``"sfu/sub"``: the SFU offers every other participant's
  tracks from ``"sfu/sub"`` and renegotiates (a new offer) whenever a track is added or removed; the
  client answers to ``"sfu/sub"``. Each track's ``msid`` stream id is the publisher's party id. A
  ``renegotiate`` from ``"sfu/sub"`` means "drop your receiving connection, a new offer follows"
  (the SFU rebuilds it when ended tracks' sections pile up). A client whose receiving connection
  failed, or that could not apply an offer, sends ``renegotiate`` to ``"sfu/sub"``; the SFU waits for it.

ICE candidates trickle both ways with ``ice`` / ``ice_end`` to and from the same address (the SFU's own
candidates are in its SDP). One offerer per connection means no glare; signaling for one call is handled
one message at a time (a lock per call), so no two changes to a connection interleave.

**Forwarding** (``media_mode="forward"``, the default) sends every subscriber the publisher's encoded
frames without decoding them: see ``sfu_media`` (how), ``sfu_frames`` (frames as soon as they are
whole) and ``sfu_aiortc`` (the hooks into aiortc it takes). Only Opus and VP8 are negotiated, so every
subscriber can take what a publisher sends. Measured on one core of the 2-core development machine
(docs/performance.md, "Built-in SFU"): 0.2-0.3 % of a core per forwarded Opus stream, 0.5-0.6 % per
forwarded Opus + 360p VP8 pair; about 120 audio or 57 video participants per core in calls of 4; about
1 ms added latency. ``media_mode="reencode"`` decodes each published track once and encodes it once per
subscriber, aiortc's default way: 14-15 times the CPU (one 4-person 360p video call saturates a core).

**Capacity**: ``max_participants`` devices on this node over all its calls (``SFU_MAX_PARTICIPANTS``);
the one past it gets ``SfuFull`` from ``signal``. A device is admitted by its first publishing offer
(or its first ``renegotiate`` to ``"sfu/sub"``), and removed by ``leave``, by ``end``, when its last
connection fails or is closed from its side (ICE consent, RFC 7675: about 30 s after the device
vanished), or when it has no connection up ``CONNECT_TIMEOUT`` after it was admitted.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec
from aiortc import (
    RTCBundlePolicy,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc.exceptions import InvalidStateError
from aiortc.rtcicetransport import RTCIceCandidate
from aiortc.sdp import SessionDescription

from kintsugi_rt import metrics
from kintsugi_rt.calls import sfu_aiortc
from kintsugi_rt.calls.frames import SFU_PARTY, Candidate, IceServer, SignalKind
from kintsugi_rt.calls.sfu_aiortc import AiortcMismatch
from kintsugi_rt.calls.sfu_media import ForwardedTrack, MediaMode, Publication
from kintsugi_rt.logs import get_logger

log = get_logger(__name__)

SUBSCRIBER_PARTY = "sfu/sub"  # the SFU's side of a participant's receiving connection
CONNECT_TIMEOUT = 30.0  # seconds for a new connection (and a new participant) to get media going
MAX_MEDIA_SECTIONS = 4  # audio and video sections in one publishing offer (camera, microphone, screen...)
# Inactive sections a receiving connection may gather (tracks that ended) before it is rebuilt with the
# live ones only, so its SDP stays small: the larger of this and the number of live tracks.
MAX_DEAD_SECTIONS = 8
_PENDING_CANDIDATES = 64  # trickled candidates kept while their connection has no remote description
_ENDED_CALLS = 10_000  # ended calls remembered, so that late signals do not open them again

Role = Literal["pub", "sub"]


class SfuSignal(msgspec.Struct):
    """A signal from the SFU to one device (the call service sends it as ``call.signal``)."""

    kind: SignalKind
    sdp: str | None = None
    candidate: Candidate | None = None
    from_party: str = SFU_PARTY


SendSignal = Callable[[uuid.UUID, str, SfuSignal], Awaitable[None]]


class SfuFull(Exception):
    """Taking this device would put the SFU over ``max_participants`` on this node."""


@dataclass(eq=False, slots=True)
class _Subscription:
    """One publication as one subscriber receives it: its own track and section."""

    track: ForwardedTrack
    transceiver: RTCRtpTransceiver


@dataclass(eq=False)
class _Participant:
    party_id: str
    pub: RTCPeerConnection | None = None
    pub_ufrag: str | None = None
    sub: RTCPeerConnection | None = None
    sub_lost: bool = False  # its receiving connection failed: a new one waits for its client's renegotiate
    offer_again: bool = False  # a change came while the receiving connection's offer awaited its answer
    publications: list[Publication] = field(default_factory=list)
    taken: set[RTCRtpReceiver] = field(default_factory=set)  # receivers of ``pub`` published so far
    subscriptions: dict[Publication, _Subscription] = field(default_factory=dict)
    pending: dict[Role, list[RTCIceCandidate | None]] = field(default_factory=lambda: {"pub": [], "sub": []})

    def connection(self, role: Role) -> RTCPeerConnection | None:
        return self.pub if role == "pub" else self.sub


@dataclass(eq=False)
class _Room:
    """One call's participants on this node."""

    call_id: uuid.UUID
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    participants: dict[str, _Participant] = field(default_factory=dict)
    closed: bool = False


class Sfu:
    """Selective forwarding for the calls whose media this node carries (see the module docstring)."""

    def __init__(
        self,
        *,
        max_participants: int,
        send: SendSignal,
        ice_servers: Sequence[IceServer] = (),
        media_mode: MediaMode = "forward",
    ) -> None:
        self.max_participants = max_participants
        self.media_mode: MediaMode = media_mode
        self._send = send
        self._ice_servers = [
            RTCIceServer(urls=server.urls, username=server.username, credential=server.credential)
            for server in ice_servers
        ]
        self._rooms: dict[uuid.UUID, _Room] = {}
        self._ended: OrderedDict[uuid.UUID, None] = OrderedDict()
        self._count = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    def has_room(self, extra: int = 1) -> bool:
        """Whether ``extra`` more devices fit on this node's SFU."""
        return self._count + extra <= self.max_participants

    @property
    def participants(self) -> int:
        """Devices on this node's SFU, over all calls."""
        return self._count

    async def signal(
        self,
        call_id: uuid.UUID,
        party_id: str,
        to: str,
        kind: SignalKind,
        sdp: str | None,
        candidate: Candidate | None,
    ) -> None:
        """A device's ``call.signal`` to ``"sfu"`` or ``"sfu/sub"``. Raises ``SfuFull`` only.

        Malformed or out-of-turn signals are logged and dropped: the device learns nothing it could
        not already see, and its connections stay as they were.
        """
        if self._closed or call_id in self._ended:
            return
        if to not in (SFU_PARTY, SUBSCRIBER_PARTY):
            log.warning("sfu.unknown_address", call_id=str(call_id), party_id=party_id, to=to)
            return
        room = self._rooms.get(call_id)
        participant = room.participants.get(party_id) if room is not None else None
        if participant is None:
            if not _admits(to, kind):
                log.debug("sfu.signal_before_join", call_id=str(call_id), party_id=party_id, kind=kind)
                return
            room, participant = self._admit(call_id, party_id)
        assert room is not None
        async with room.lock:
            if room.closed or room.participants.get(party_id) is not participant:
                return
            try:
                await self._handle(room, participant, to, kind, sdp, candidate)
            except AiortcMismatch:
                log.exception("sfu.aiortc_mismatch")
                await self._remove(room, participant)
            except Exception as exc:  # SDP and candidates come from clients: aiortc raises many kinds
                log.warning(
                    "sfu.bad_signal",
                    call_id=str(call_id),
                    party_id=party_id,
                    to=to,
                    kind=kind,
                    error=repr(exc),
                )
                if participant.pub is None and participant.sub is None:
                    await self._remove(room, participant)

    async def leave(self, call_id: uuid.UUID, party_id: str) -> None:
        """That device is gone: close its connections; the others stop receiving its tracks."""
        room = self._rooms.get(call_id)
        if room is None:
            return
        async with room.lock:
            participant = room.participants.get(party_id)
            if participant is not None and not room.closed:
                await self._remove(room, participant)

    async def end(self, call_id: uuid.UUID) -> None:
        """The call ended: close everything of it (late signals for it are ignored)."""
        self._ended[call_id] = None
        while len(self._ended) > _ENDED_CALLS:
            self._ended.popitem(last=False)
        room = self._rooms.pop(call_id, None)
        if room is None:
            return
        metrics.SFU_CALLS.set(len(self._rooms))
        async with room.lock:
            room.closed = True
            for participant in list(room.participants.values()):
                await self._close_participant(participant)
            self._count -= len(room.participants)
            room.participants.clear()
            metrics.SFU_PARTICIPANTS.set(self._count)
        log.info("sfu.call_closed", call_id=str(call_id))

    async def close(self) -> None:
        """Node shutdown: end every call on this SFU."""
        self._closed = True
        for call_id in list(self._rooms):
            await self.end(call_id)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # --- admission and removal --------------------------------------------------------------------

    def _admit(self, call_id: uuid.UUID, party_id: str) -> tuple[_Room, _Participant]:
        if not self.has_room():
            metrics.SFU_FULL.inc()
            log.info("sfu.full", call_id=str(call_id), party_id=party_id, participants=self._count)
            raise SfuFull(f"the SFU on this node has {self._count} of {self.max_participants} participants")
        room = self._rooms.get(call_id)
        if room is None:
            room = self._rooms[call_id] = _Room(call_id)
            metrics.SFU_CALLS.set(len(self._rooms))
        participant = room.participants[party_id] = _Participant(party_id)
        self._count += 1
        metrics.SFU_PARTICIPANTS.set(self._count)
        asyncio.get_running_loop().call_later(CONNECT_TIMEOUT, self._admission_deadline, room, participant)
        log.info("sfu.joined", call_id=str(call_id), party_id=party_id, participants=self._count)
        return room, participant

    def _admission_deadline(self, room: _Room, participant: _Participant) -> None:
        self._spawn(self._drop_if_idle(room, participant))

    async def _drop_if_idle(self, room: _Room, participant: _Participant) -> None:
        """A device that has not got one connection going since it was admitted is not coming."""
        async with room.lock:
            if room.participants.get(participant.party_id) is participant and not _connected(participant):
                log.info("sfu.never_connected", call_id=str(room.call_id), party_id=participant.party_id)
                await self._remove(room, participant)

    async def _remove(self, room: _Room, participant: _Participant) -> None:
        """Take a device out of its call (the caller holds the room's lock)."""
        if room.participants.get(participant.party_id) is not participant:
            return
        del room.participants[participant.party_id]
        self._count -= 1
        metrics.SFU_PARTICIPANTS.set(self._count)
        await self._drop_pub(room, participant)
        await self._drop_sub(participant)
        if not room.participants and self._rooms.get(room.call_id) is room:
            del self._rooms[room.call_id]
            metrics.SFU_CALLS.set(len(self._rooms))
        log.info(
            "sfu.left", call_id=str(room.call_id), party_id=participant.party_id, participants=self._count
        )

    async def _close_participant(self, participant: _Participant) -> None:
        """Close a device's connections when its whole call goes: nobody is left to renegotiate."""
        for publication in participant.publications:
            self._retire(publication)
        participant.publications.clear()
        for pc in (participant.pub, participant.sub):
            if pc is not None:
                await pc.close()
        participant.pub = participant.sub = None

    # --- dispatch ---------------------------------------------------------------------------------

    async def _handle(
        self,
        room: _Room,
        participant: _Participant,
        to: str,
        kind: SignalKind,
        sdp: str | None,
        candidate: Candidate | None,
    ) -> None:
        role: Role = "pub" if to == SFU_PARTY else "sub"
        if kind in ("ice", "ice_end"):
            await self._add_candidate(participant, role, None if kind == "ice_end" else candidate)
        elif role == "pub" and kind == "offer" and sdp is not None:
            await self._publishing_offer(room, participant, sdp)
        elif role == "pub" and kind == "renegotiate":
            await self._drop_pub(room, participant)  # the client starts publishing over
        elif role == "sub" and kind == "answer" and sdp is not None:
            await self._receiving_answer(room, participant, sdp)
        elif role == "sub" and kind == "renegotiate":  # its client dropped its side already
            participant.sub_lost = False
            await self._drop_sub(participant)
            await self._start_receiving(room, participant)
        else:
            log.warning(
                "sfu.unexpected_signal",
                call_id=str(room.call_id),
                party_id=participant.party_id,
                to=to,
                kind=kind,
            )

    # --- the publishing connection ----------------------------------------------------------------

    async def _publishing_offer(self, room: _Room, participant: _Participant, sdp: str) -> None:
        offer = sfu_aiortc.parse_sdp(sdp)
        if not 0 < sfu_aiortc.media_sections(offer) <= MAX_MEDIA_SECTIONS:
            raise ValueError(f"a publishing offer has 1 to {MAX_MEDIA_SECTIONS} audio and video sections")
        ufrag = sfu_aiortc.ice_ufrag(offer)
        if ufrag is None:
            raise ValueError("the offer has no ICE credentials")
        if participant.pub is not None and ufrag != participant.pub_ufrag:
            await self._drop_pub(room, participant)  # a new connection from the client
        fresh = participant.pub is None
        if participant.pub is None:
            participant.pub = self._connection(room, participant, "pub")
            participant.pub_ufrag = ufrag
        pc = participant.pub
        try:
            sfu_aiortc.add_receiving_transceivers(pc, offer)
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            added = self._start_publications(room, participant, pc, offer)
            await pc.setLocalDescription(await pc.createAnswer())
        except Exception:
            if fresh:
                await self._drop_pub(room, participant)
            raise
        await self._flush_candidates(participant, "pub")
        answer = SfuSignal(kind="answer", sdp=pc.localDescription.sdp, from_party=SFU_PARTY)
        await self._say(room.call_id, participant.party_id, answer)
        await self._offer_to_others(room, participant, added)
        if participant.sub is None and not participant.sub_lost:
            await self._start_receiving(room, participant)

    def _start_publications(
        self, room: _Room, participant: _Participant, pc: RTCPeerConnection, offer: SessionDescription
    ) -> list[Publication]:
        """A publication for each section the client started sending on (before the answer, so that
        the frame tap is in place before the receiver starts)."""
        added = []
        for transceiver in pc.getTransceivers():
            receiver = transceiver.receiver
            if (
                receiver in participant.taken
                or receiver.track is None
                or transceiver.kind not in ("audio", "video")
            ):
                continue
            participant.taken.add(receiver)  # a receiver is published once: its frames go one way
            publication = Publication(
                owner=participant.party_id,
                kind="audio" if transceiver.kind == "audio" else "video",
                receiver=receiver,
                media_ssrc=sfu_aiortc.remote_ssrc(offer, transceiver.mid),
                mode=self.media_mode,
                on_end=lambda ended: self._spawn(self._publication_ended(room, participant, ended)),
            )
            publication.start()
            participant.publications.append(publication)
            metrics.SFU_TRACKS.labels(publication.kind).inc()
            added.append(publication)
            log.info(
                "sfu.published",
                call_id=str(room.call_id),
                party_id=participant.party_id,
                kind=publication.kind,
            )
        return added

    async def _drop_pub(self, room: _Room, participant: _Participant) -> None:
        """Close a device's publishing connection; its tracks leave everyone's receiving connection."""
        pc = participant.pub
        if pc is None:
            return
        participant.pub = None
        participant.pub_ufrag = None
        participant.taken.clear()
        participant.pending["pub"].clear()
        publications, participant.publications = participant.publications, []
        await self._unpublish(room, publications)
        await pc.close()

    async def _publication_ended(
        self, room: _Room, participant: _Participant, publication: Publication
    ) -> None:
        """The publisher's receiver stopped (RTCP BYE, or its DTLS connection broke)."""
        async with room.lock:
            if publication in participant.publications and not room.closed:
                participant.publications.remove(publication)
                await self._unpublish(room, [publication])

    async def _unpublish(self, room: _Room, publications: list[Publication]) -> None:
        """Stop forwarding these tracks; their sections go inactive in one offer to each subscriber."""
        for publication in publications:
            self._retire(publication)
        for other in list(room.participants.values()):
            subscriptions = [s for p in publications if (s := other.subscriptions.pop(p, None)) is not None]
            for subscription in subscriptions:
                subscription.transceiver.direction = "inactive"
                await subscription.transceiver.sender.stop()
            if subscriptions:
                await self._negotiate(room, other)

    def _retire(self, publication: Publication) -> None:
        if publication.close():
            metrics.SFU_TRACKS.labels(publication.kind).dec()

    # --- the receiving connection -----------------------------------------------------------------

    async def _offer_to_others(self, room: _Room, publisher: _Participant, added: list[Publication]) -> None:
        """New tracks: in one offer to each other device (its first receiving connection, if need be)."""
        if not added:
            return
        for other in list(room.participants.values()):
            if other is publisher:
                continue
            if other.sub is None:
                if not other.sub_lost:
                    await self._start_receiving(room, other)
            else:
                for publication in added:
                    self._subscribe(other, publication)
                await self._negotiate(room, other)

    async def _start_receiving(self, room: _Room, participant: _Participant) -> None:
        """A receiving connection with every other device's tracks (none yet: wait for the first)."""
        publications = [
            publication
            for other in room.participants.values()
            if other is not participant
            for publication in other.publications
            if not publication.ended
        ]
        if not publications:
            return
        participant.sub = self._connection(room, participant, "sub")
        for publication in publications:
            self._subscribe(participant, publication)
        await self._negotiate(room, participant)

    def _subscribe(self, participant: _Participant, publication: Publication) -> None:
        pc = participant.sub
        if pc is None or publication in participant.subscriptions:
            return
        track = publication.subscribe()
        try:
            transceiver = pc.addTransceiver(track, direction="sendonly")
        except InvalidStateError:  # closed from the client's side: ``_lost`` comes next
            publication.unsubscribe(track)
            return
        sfu_aiortc.prefer_sfu_codecs(transceiver)
        sfu_aiortc.set_stream_id(transceiver.sender, publication.owner)
        if publication.mode == "forward":
            sfu_aiortc.on_keyframe_request(transceiver.sender, track.keyframe_requested)
        participant.subscriptions[publication] = _Subscription(track=track, transceiver=transceiver)

    async def _negotiate(self, room: _Room, participant: _Participant) -> None:
        """Offer the receiving connection's current tracks (after the pending answer, if one is due)."""
        pc = participant.sub
        if pc is None:
            return
        if pc.signalingState != "stable":
            participant.offer_again = True
            return
        dead = sum(1 for t in pc.getTransceivers() if t.direction == "inactive")
        if dead > max(MAX_DEAD_SECTIONS, len(participant.subscriptions)):
            await self._rebuild_receiving(room, participant)
            return
        participant.offer_again = False
        try:
            await pc.setLocalDescription(await pc.createOffer())
        except InvalidStateError:  # closed from the client's side meanwhile: ``_lost`` comes next
            return
        metrics.SFU_OFFERS.inc()
        offer = SfuSignal(kind="offer", sdp=pc.localDescription.sdp, from_party=SUBSCRIBER_PARTY)
        await self._say(room.call_id, participant.party_id, offer)

    async def _rebuild_receiving(self, room: _Room, participant: _Participant) -> None:
        """A new receiving connection with the live tracks only; its client drops the old one first."""
        renegotiate = SfuSignal(kind="renegotiate", from_party=SUBSCRIBER_PARTY)
        await self._say(room.call_id, participant.party_id, renegotiate)
        await self._drop_sub(participant)
        await self._start_receiving(room, participant)

    async def _receiving_answer(self, room: _Room, participant: _Participant, sdp: str) -> None:
        pc = participant.sub
        if pc is None or pc.signalingState != "have-local-offer":
            log.debug("sfu.stale_answer", call_id=str(room.call_id), party_id=participant.party_id)
            return
        await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
        await self._flush_candidates(participant, "sub")
        if participant.offer_again:
            await self._negotiate(room, participant)

    async def _drop_sub(self, participant: _Participant) -> None:
        pc = participant.sub
        if pc is None:
            return
        participant.sub = None
        participant.offer_again = False
        participant.pending["sub"].clear()
        for publication, subscription in participant.subscriptions.items():
            publication.unsubscribe(subscription.track)
        participant.subscriptions.clear()
        await pc.close()

    # --- connections ------------------------------------------------------------------------------

    def _connection(self, room: _Room, participant: _Participant, role: Role) -> RTCPeerConnection:
        pc = RTCPeerConnection(
            RTCConfiguration(iceServers=self._ice_servers, bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
        )
        pc.on("connectionstatechange", lambda: self._state_changed(room, participant, pc, role))
        asyncio.get_running_loop().call_later(
            CONNECT_TIMEOUT, self._connect_deadline, room, participant, pc, role
        )
        return pc

    def _state_changed(
        self, room: _Room, participant: _Participant, pc: RTCPeerConnection, role: Role
    ) -> None:
        state = pc.connectionState
        if state == "connected":
            log.info("sfu.connected", call_id=str(room.call_id), party_id=participant.party_id, role=role)
        elif state in ("failed", "closed"):
            self._spawn(self._lost(room, participant, pc, role, state))

    def _connect_deadline(
        self, room: _Room, participant: _Participant, pc: RTCPeerConnection, role: Role
    ) -> None:
        if pc.connectionState != "connected":
            self._spawn(self._lost(room, participant, pc, role, "timeout"))

    async def _lost(
        self, room: _Room, participant: _Participant, pc: RTCPeerConnection, role: Role, why: str
    ) -> None:
        """A connection failed, was closed by the client, or never connected. Ours were detached
        before we closed them, so they do not come here."""
        async with room.lock:
            if room.closed or participant.connection(role) is not pc:
                return
            metrics.SFU_CONNECTIONS_LOST.labels(role).inc()
            log.info(
                "sfu.connection_lost",
                call_id=str(room.call_id),
                party_id=participant.party_id,
                role=role,
                why=why,
            )
            if role == "pub":
                await self._drop_pub(room, participant)
            else:
                await self._drop_sub(participant)
                participant.sub_lost = True
            if participant.pub is None and participant.sub is None:
                await self._remove(room, participant)

    async def _add_candidate(
        self, participant: _Participant, role: Role, candidate: Candidate | None
    ) -> None:
        pc = participant.connection(role)
        if pc is None:
            return
        ice = None if candidate is None else sfu_aiortc.ice_candidate(candidate)
        if pc.remoteDescription is None:
            pending = participant.pending[role]
            if len(pending) < _PENDING_CANDIDATES:
                pending.append(ice)
            return
        await pc.addIceCandidate(ice)

    async def _flush_candidates(self, participant: _Participant, role: Role) -> None:
        pc = participant.connection(role)
        pending, participant.pending[role] = participant.pending[role], []
        for ice in pending:
            if pc is not None:
                await pc.addIceCandidate(ice)

    # --- plumbing ---------------------------------------------------------------------------------

    async def _say(self, call_id: uuid.UUID, party_id: str, signal: SfuSignal) -> None:
        try:
            await self._send(call_id, party_id, signal)
        except Exception as exc:
            log.warning(
                "sfu.send_failed", call_id=str(call_id), party_id=party_id, kind=signal.kind, error=repr(exc)
            )

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        if self._closed:
            work.close()
            return
        task = asyncio.ensure_future(self._logged(work))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _logged(work: Coroutine[Any, Any, None]) -> None:
        try:
            await work
        except Exception:
            log.exception("sfu.background_failed")


def _admits(to: str, kind: SignalKind) -> bool:
    """The signals that bring a new device in: a publishing offer, or asking to receive."""
    return (to == SFU_PARTY and kind == "offer") or (to == SUBSCRIBER_PARTY and kind == "renegotiate")


def _connected(participant: _Participant) -> bool:
    return any(
        pc is not None and pc.connectionState == "connected" for pc in (participant.pub, participant.sub)
    )
