"""Call frames: ringing, answering and ending calls, and relaying WebRTC signaling between devices.

A *party* is one device in a call: the connection id (``hello.conn_id``) of the socket it joined on.
Signals go from one party to another (or to ``"sfu"``, the server's own SFU), never to anyone else.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

import msgspec

from kintsugi_rt.socket.protocol import ClientMessage, ServerMessage

Media = Literal["audio", "video"]
Mode = Literal["p2p", "sfu", "livekit"]
CallState = Literal["ringing", "active", "ended"]
PartyState = Literal["ringing", "joined", "declined", "left", "missed"]
EndReason = Literal["hangup", "declined", "missed", "busy", "cancelled", "failed", "time_limit"]
SignalKind = Literal["offer", "answer", "ice", "ice_end", "renegotiate"]
PartyId = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Sdp = Annotated[str, msgspec.Meta(max_length=65536)]
SFU_PARTY = "sfu"  # the server's SFU, as a signaling peer

# --- payloads ------------------------------------------------------------------------------------


class IceServer(msgspec.Struct, omit_defaults=True):
    """As ``RTCIceServer``: STUN urls alone; TURN urls with this call's short-lived credentials."""

    urls: list[str]
    username: str | None = None
    credential: str | None = None


class LiveKitJoin(msgspec.Struct):
    """Where and how to join this call's LiveKit room (group calls, when LiveKit is configured)."""

    url: str
    room: str
    token: str


class Party(msgspec.Struct, omit_defaults=True):
    user_id: uuid.UUID
    state: PartyState
    party_id: str | None = None  # the device in the call, while joined


class CallInfo(msgspec.Struct, omit_defaults=True):
    id: uuid.UUID
    conversation_id: uuid.UUID
    caller_id: uuid.UUID | None
    media: Media
    mode: Mode
    state: CallState
    created_at: datetime
    participants: list[Party]
    answered_at: datetime | None = None
    ended_at: datetime | None = None
    end_reason: EndReason | None = None
    duration_s: int | None = None


class Candidate(msgspec.Struct, omit_defaults=True):
    """As ``RTCIceCandidateInit``."""

    candidate: Annotated[str, msgspec.Meta(max_length=1024)]
    sdpMid: Annotated[str, msgspec.Meta(max_length=64)] | None = None  # the WebRTC names
    sdpMLineIndex: Annotated[int, msgspec.Meta(ge=0, le=1024)] | None = None
    usernameFragment: Annotated[str, msgspec.Meta(max_length=256)] | None = None


class CallJoined(msgspec.Struct, omit_defaults=True):
    """The reply to ``call.start``, ``call.accept`` and ``call.join``: the call, and how to connect."""

    call: CallInfo
    party_id: str
    ice_servers: list[IceServer]
    livekit: LiveKitJoin | None = None


class CallRef(msgspec.Struct):
    call: CallInfo


class CallPage(msgspec.Struct):
    calls: list[CallInfo]
    has_more: bool


# --- client frames --------------------------------------------------------------------------------


class CallStart(ClientMessage, tag="call.start"):
    """Call a direct or group conversation. Calling a conversation that already has a live call joins
    it (which is how glare resolves: see docs/calls.md)."""

    conversation_id: uuid.UUID
    media: Media = "audio"


class CallAccept(ClientMessage, tag="call.accept"):
    """Answer a ringing call on this device."""

    call_id: uuid.UUID


class CallDecline(ClientMessage, tag="call.decline"):
    """Refuse a ringing call (all your devices stop ringing)."""

    call_id: uuid.UUID


class CallCancel(ClientMessage, tag="call.cancel"):
    """The caller gives up before anyone answered."""

    call_id: uuid.UUID


class CallHangup(ClientMessage, tag="call.hangup"):
    """Leave and, in a two-party call, end it for both."""

    call_id: uuid.UUID


class CallJoin(ClientMessage, tag="call.join"):
    """Join a group call in progress, or come back on a new socket after a reconnect (a new party)."""

    call_id: uuid.UUID


class CallLeave(ClientMessage, tag="call.leave"):
    """Leave a group call; it goes on while someone is in it."""

    call_id: uuid.UUID


class CallSignal(ClientMessage, tag="call.signal"):
    """Relay WebRTC signaling to another party of the call (or to ``"sfu"``)."""

    call_id: uuid.UUID
    to: PartyId
    kind: SignalKind
    sdp: Sdp | None = None
    candidate: Candidate | None = None


class CallFallback(ClientMessage, tag="call.fallback"):
    """The peer-to-peer connection failed even through TURN: move the call to the server's SFU."""

    call_id: uuid.UUID


class CallStats(ClientMessage, tag="call.stats"):
    """What this device's connection looks like (feeds metrics: setup time, relay share, failures)."""

    call_id: uuid.UUID
    ice_state: Literal["new", "checking", "connected", "completed", "failed", "disconnected", "closed"]
    candidate_type: Literal["host", "srflx", "prflx", "relay"] | None = None
    rtt_ms: Annotated[int, msgspec.Meta(ge=0, le=600_000)] | None = None
    setup_ms: Annotated[int, msgspec.Meta(ge=0, le=600_000)] | None = None


class CallHistory(ClientMessage, tag="call.history"):
    """Your calls, newest first; pass the oldest ``created_at`` back as ``before`` for more."""

    before: datetime | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=100)] = 30


# --- server events ----------------------------------------------------------------------------


class CallRinging(ServerMessage, tag="call.ringing"):
    """A call for you: every device rings until one answers, you decline, or it is missed."""

    call: CallInfo


class CallAccepted(ServerMessage, tag="call.accepted"):
    """Someone answered (or joined): their device is ``party_id``; send your offer to it."""

    call_id: uuid.UUID
    user_id: uuid.UUID
    party_id: str


class CallAnsweredElsewhere(ServerMessage, tag="call.answered_elsewhere"):
    """You answered on another device (``party_id``): stop ringing here."""

    call_id: uuid.UUID
    party_id: str


class CallParticipantChanged(ServerMessage, tag="call.participant"):
    """A participant of a group call joined, left, declined or missed it."""

    call_id: uuid.UUID
    user_id: uuid.UUID
    state: PartyState
    party_id: str | None = None


class CallModeChanged(ServerMessage, tag="call.mode"):
    """The call moved to another media path (``call.fallback``): reconnect through it."""

    call: CallInfo


class CallEnded(ServerMessage, tag="call.ended"):
    """The call is over, for everyone."""

    call_id: uuid.UUID
    reason: EndReason
    ended_at: datetime
    duration_s: int = 0


class CallSignalled(ServerMessage, tag="call.signal"):
    """Signaling from another party of the call (not durable: after a reconnect, signal again)."""

    call_id: uuid.UUID
    from_party: str = msgspec.field(name="from")
    from_user: uuid.UUID | None
    kind: SignalKind
    sdp: str | None = None
    candidate: Candidate | None = None
