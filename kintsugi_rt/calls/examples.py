"""Example frames and replies of the calls module, for docs/protocol.md."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from kintsugi_rt.calls import frames as m
from kintsugi_rt.socket.registry import ServerEvent

_CALL = uuid.UUID("7a1c9e20-4b3d-4f5e-8a6b-1c2d3e4f5a6b")
_CONVERSATION = uuid.UUID("0b7c5a1e-3f2d-4e8a-9c6b-2d1e0f9a8b7c")
_ANN = uuid.UUID("6f1c2b1e-8d1a-4c55-9a51-2f7c0e1b9a10")
_BO = uuid.UUID("2b0f6c1e-5d0a-4a4e-9a1c-3f1f8f0e7a21")
_ANN_PHONE = "3efe11db15f749fab165f59cd8f5f206"
_BO_LAPTOP = "9c4d2a7e1b8f4e6a8d3c5b7a9e1f2d4c"
_AT = datetime(2026, 12, 1, 18, 30, tzinfo=UTC)
_RINGING = m.CallInfo(
    id=_CALL,
    conversation_id=_CONVERSATION,
    caller_id=_ANN,
    media="video",
    mode="p2p",
    state="ringing",
    created_at=_AT,
    participants=[
        m.Party(user_id=_ANN, state="joined", party_id=_ANN_PHONE),
        m.Party(user_id=_BO, state="ringing"),
    ],
)
_MOVED = m.CallInfo(
    id=_CALL,
    conversation_id=_CONVERSATION,
    caller_id=_ANN,
    media="video",
    mode="sfu",
    state="active",
    created_at=_AT,
    answered_at=_AT,
    participants=[
        m.Party(user_id=_ANN, state="joined", party_id=_ANN_PHONE),
        m.Party(user_id=_BO, state="joined", party_id=_BO_LAPTOP),
    ],
)
_ICE: list[dict[str, Any]] = [
    {"urls": ["stun:turn.example.com:3478"]},
    {
        "urls": ["turn:turn.example.com:3478?transport=udp"],
        "username": "1796164200:2b0f6c1e-5d0a-4a4e-9a1c-3f1f8f0e7a21",
        "credential": "q3nXh2m0xY1QfJ8C1vXo9Jm6Y2k=",
    },
]

START = m.CallStart(id="k1", conversation_id=_CONVERSATION, media="video")
START_RESULT: dict[str, Any] = {
    "call": {
        "id": str(_CALL),
        "conversation_id": str(_CONVERSATION),
        "caller_id": str(_ANN),
        "media": "video",
        "mode": "p2p",
        "state": "ringing",
        "created_at": _AT.isoformat(),
        "participants": [
            {"user_id": str(_ANN), "state": "joined", "party_id": _ANN_PHONE},
            {"user_id": str(_BO), "state": "ringing"},
        ],
    },
    "party_id": _ANN_PHONE,
    "ice_servers": _ICE,
}
ACCEPT = m.CallAccept(id="k2", call_id=_CALL)
DECLINE = m.CallDecline(id="k3", call_id=_CALL)
CANCEL = m.CallCancel(id="k4", call_id=_CALL)
HANGUP = m.CallHangup(id="k5", call_id=_CALL)
JOIN = m.CallJoin(id="k6", call_id=_CALL)
LEAVE = m.CallLeave(id="k7", call_id=_CALL)
SIGNAL = m.CallSignal(
    id="k8", call_id=_CALL, to=_BO_LAPTOP, kind="offer", sdp="v=0\r\no=- 4611731400430051336 2 IN IP4 …"
)
FALLBACK = m.CallFallback(id="k9", call_id=_CALL)
STATS = m.CallStats(
    id="k10", call_id=_CALL, ice_state="connected", candidate_type="relay", rtt_ms=48, setup_ms=870
)
HISTORY = m.CallHistory(id="k11", limit=30)

EVENTS = (
    ServerEvent(m.CallRinging, m.CallRinging(call=_RINGING), durable=True),
    ServerEvent(
        m.CallAccepted, m.CallAccepted(call_id=_CALL, user_id=_BO, party_id=_BO_LAPTOP), durable=True
    ),
    ServerEvent(
        m.CallAnsweredElsewhere, m.CallAnsweredElsewhere(call_id=_CALL, party_id=_BO_LAPTOP), durable=True
    ),
    ServerEvent(
        m.CallParticipantChanged,
        m.CallParticipantChanged(call_id=_CALL, user_id=_BO, state="left"),
        durable=True,
    ),
    ServerEvent(m.CallModeChanged, m.CallModeChanged(call=_MOVED), durable=True),
    ServerEvent(
        m.CallEnded, m.CallEnded(call_id=_CALL, reason="hangup", ended_at=_AT, duration_s=754), durable=True
    ),
    ServerEvent(
        m.CallSignalled,
        m.CallSignalled(
            call_id=_CALL,
            from_party=_ANN_PHONE,
            from_user=_ANN,
            kind="ice",
            candidate=m.Candidate(
                candidate="candidate:1 1 udp 2122260223 192.0.2.10 54400 typ host",
                sdpMid="0",
                sdpMLineIndex=0,
            ),
        ),
    ),
)
