"""Call signaling benchmark (issue 12): ``call.signal`` relay latency between the two devices of a call.

    .venv/bin/python -m loadtests.call_signals --nodes 2 --calls 500 --rate 2000 --seconds 20
    .venv/bin/python -m loadtests.call_signals --nodes 1 --calls 500 --rate 2000 --seconds 20

It needs PostgreSQL (trust auth, user postgres) and Redis on 127.0.0.1. Like ``loadtests.fanout`` it
creates a fresh database and Redis key prefix (both removed at the end) and starts the
``kintsugi-rt serve`` nodes itself. It registers ``2 x calls`` users, one socket each; user 2k calls
user 2k+1, and with two nodes the caller is on node 0 and the callee on node 1, so every signal
crosses the Redis hub (with one node both are on it, and the hub is still Redis).

Setup, per pair: the caller opens the direct conversation (``conversation.create {kind: direct}``),
then ``call.start``; the callee's socket gets ``call.ringing`` and answers ``call.accept`` (its reply
names the callee's ``party_id``); the caller's socket gets ``call.accepted`` with that party. The
time from ``call.start`` to ``call.accepted`` on the caller is the setup time (``--setup-concurrency``
calls are set up at once).

Then ``call.signal`` frames go out at ``--rate`` signals/s in total for ``--seconds``, round-robin over
the calls and alternating direction within each call (caller → callee, callee → caller, …). Per call,
signals 0 and 1 of every ``--sdp-cycle`` are an ``offer`` (from the caller) and an ``answer`` (from
the callee) carrying a ~4 KB SDP; the rest are ``ice`` with an ``RTCIceCandidateInit``. Each signal's
sequence number is in the candidate's ``usernameFragment`` (or the SDP's ``a=ice-ufrag``), so the
receiving socket finds its send time: the latency is send → ``call.signal`` arrival on the paired
device's socket (one process, one clock). Every ``--ack-every``-th signal asks for an ``ok`` reply
(the ``id`` field), timing the sender's node: rate limit, the PostgreSQL check that both parties are
in the call, the publish to Redis. After a drain, every call is hung up (``call.hangup`` by the
caller) and both devices must get ``call.ended``.

The benchmark client shares the machine's cores with the nodes, PostgreSQL and Redis; its own CPU use,
the nodes', PostgreSQL's and Redis's are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import psutil
import uvloop
from redis.asyncio import Redis
from websockets.asyncio.client import ClientConnection

from kintsugi_rt.calls import storage
from kintsugi_rt.settings import RateLimit, parse_rate_limit
from loadtests.fanout import (
    REDIS_URL,
    Account,
    Cluster,
    CpuWindow,
    Node,
    Reader,
    _percentile,
    _raise_nofile,
    _register,
    close_all,
    cluster,
    connect_all,
)

MAX_CALLS = 5_000
MAX_SECONDS = 600.0
MAX_RATE = 20_000
REPLY_TIMEOUT = 30.0
SETUP_TIMEOUT = 60.0  # below CALL_RING_TIMEOUT (60 s) from call.start
DRAIN_TIMEOUT = 10.0
ENDED_TIMEOUT = 30.0
DEFAULT_SIGNAL_RATE_LIMIT = "200/10s"  # CALL_SIGNAL_RATE_LIMIT's default

# --- what the signals carry ---------------------------------------------------------------------

# Candidates as a browser trickles them: host, server-reflexive and relay, UDP and TCP.
_CANDIDATES = (
    "candidate:1467250027 1 udp 2122260223 192.168.1.23 54400 typ host generation 0 ufrag {u} network-id 1",
    "candidate:842163049 1 udp 1686052607 203.0.113.7 46154 typ srflx raddr 192.168.1.23 rport 54400 "
    "generation 0 ufrag {u} network-id 1 network-cost 10",
    "candidate:3051219461 1 tcp 1518280447 192.168.1.23 9 typ host tcptype active generation 0 ufrag {u} "
    "network-id 1",
    "candidate:2157334355 1 udp 41885439 198.51.100.20 61240 typ relay raddr 203.0.113.7 rport 46154 "
    "generation 0 ufrag {u} network-id 1 network-cost 10",
)

# A browser's audio + video offer (Chrome-like): ~4 KB, as most offers and answers are.
_SDP_LINES = [
    "v=0",
    "o=- 4611731400430051336 2 IN IP4 127.0.0.1",
    "s=-",
    "t=0 0",
    "a=group:BUNDLE 0 1",
    "a=extmap-allow-mixed",
    "a=msid-semantic: WMS 7c0e1b9a-2f7c-4c55-9a51-6f1c2b1e8d1a",
    "m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126",
    "c=IN IP4 0.0.0.0",
    "a=rtcp:9 IN IP4 0.0.0.0",
    "a=ice-ufrag:{u}",
    "a=ice-pwd:d7d3Jj0V5n2Hh2tPqk8bW1yR",
    "a=ice-options:trickle",
    "a=fingerprint:sha-256 3C:4A:E1:8B:57:2D:9F:10:6E:A3:4B:C2:D8:71:0F:5E:92:1A:BB:07:C4:6D:E8:35:"
    "2F:90:13:7A:DC:48:B6:11",
    "a=setup:{setup}",
    "a=mid:0",
    "a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level",
    "a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
    "a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01",
    "a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid",
    "a=sendrecv",
    "a=msid:7c0e1b9a-2f7c-4c55-9a51-6f1c2b1e8d1a 0b7c5a1e-3f2d-4e8a-9c6b-2d1e0f9a8b7c",
    "a=rtcp-mux",
    "a=rtcp-rsize",
    "a=rtpmap:111 opus/48000/2",
    "a=rtcp-fb:111 transport-cc",
    "a=fmtp:111 minptime=10;useinbandfec=1",
    "a=rtpmap:63 red/48000/2",
    "a=fmtp:63 111/111",
    "a=rtpmap:9 G722/8000",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:8 PCMA/8000",
    "a=rtpmap:13 CN/8000",
    "a=rtpmap:110 telephone-event/48000",
    "a=rtpmap:126 telephone-event/8000",
    "a=ssrc:1001122334 cname:Lx2k9TqPz1vB8mNc",
    "a=ssrc:1001122334 msid:7c0e1b9a-2f7c-4c55-9a51-6f1c2b1e8d1a 0b7c5a1e-3f2d-4e8a-9c6b-2d1e0f9a8b7c",
    "m=video 9 UDP/TLS/RTP/SAVPF 96 97 102 103 104 105 106 107 108 109 98 99 100 101",
    "c=IN IP4 0.0.0.0",
    "a=rtcp:9 IN IP4 0.0.0.0",
    "a=ice-ufrag:{u}",
    "a=ice-pwd:d7d3Jj0V5n2Hh2tPqk8bW1yR",
    "a=ice-options:trickle",
    "a=fingerprint:sha-256 3C:4A:E1:8B:57:2D:9F:10:6E:A3:4B:C2:D8:71:0F:5E:92:1A:BB:07:C4:6D:E8:35:"
    "2F:90:13:7A:DC:48:B6:11",
    "a=setup:{setup}",
    "a=mid:1",
    "a=extmap:14 urn:ietf:params:rtp-hdrext:toffset",
    "a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
    "a=extmap:13 urn:3gpp:video-orientation",
    "a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01",
    "a=extmap:5 http://www.webrtc.org/experiments/rtp-hdrext/playout-delay",
    "a=extmap:6 http://www.webrtc.org/experiments/rtp-hdrext/video-content-type",
    "a=extmap:7 http://www.webrtc.org/experiments/rtp-hdrext/video-timing",
    "a=extmap:8 http://www.webrtc.org/experiments/rtp-hdrext/color-space",
    "a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid",
    "a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id",
    "a=extmap:11 urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id",
    "a=sendrecv",
    "a=msid:7c0e1b9a-2f7c-4c55-9a51-6f1c2b1e8d1a 5a6b1c2d-3e4f-4a5b-8c6d-7e8f9a0b1c2d",
    "a=rtcp-mux",
    "a=rtcp-rsize",
    "a=rtpmap:96 VP8/90000",
    "a=rtcp-fb:96 goog-remb",
    "a=rtcp-fb:96 transport-cc",
    "a=rtcp-fb:96 ccm fir",
    "a=rtcp-fb:96 nack",
    "a=rtcp-fb:96 nack pli",
    "a=rtpmap:97 rtx/90000",
    "a=fmtp:97 apt=96",
    "a=rtpmap:102 H264/90000",
    "a=rtcp-fb:102 goog-remb",
    "a=rtcp-fb:102 transport-cc",
    "a=rtcp-fb:102 ccm fir",
    "a=rtcp-fb:102 nack",
    "a=rtcp-fb:102 nack pli",
    "a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f",
    "a=rtpmap:103 rtx/90000",
    "a=fmtp:103 apt=102",
    "a=rtpmap:104 H264/90000",
    "a=rtcp-fb:104 goog-remb",
    "a=rtcp-fb:104 transport-cc",
    "a=rtcp-fb:104 ccm fir",
    "a=rtcp-fb:104 nack",
    "a=rtcp-fb:104 nack pli",
    "a=fmtp:104 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42001f",
    "a=rtpmap:105 rtx/90000",
    "a=fmtp:105 apt=104",
    "a=rtpmap:106 H264/90000",
    "a=rtcp-fb:106 goog-remb",
    "a=rtcp-fb:106 transport-cc",
    "a=rtcp-fb:106 ccm fir",
    "a=rtcp-fb:106 nack",
    "a=rtcp-fb:106 nack pli",
    "a=fmtp:106 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
    "a=rtpmap:107 rtx/90000",
    "a=fmtp:107 apt=106",
    "a=rtpmap:108 H264/90000",
    "a=rtcp-fb:108 goog-remb",
    "a=rtcp-fb:108 transport-cc",
    "a=rtcp-fb:108 ccm fir",
    "a=rtcp-fb:108 nack",
    "a=rtcp-fb:108 nack pli",
    "a=fmtp:108 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42e01f",
    "a=rtpmap:109 rtx/90000",
    "a=fmtp:109 apt=108",
    "a=rtpmap:98 VP9/90000",
    "a=rtcp-fb:98 goog-remb",
    "a=rtcp-fb:98 transport-cc",
    "a=rtcp-fb:98 ccm fir",
    "a=rtcp-fb:98 nack",
    "a=rtcp-fb:98 nack pli",
    "a=fmtp:98 profile-id=0",
    "a=rtpmap:99 rtx/90000",
    "a=fmtp:99 apt=98",
    "a=rtpmap:100 red/90000",
    "a=rtpmap:101 ulpfec/90000",
    "a=ssrc-group:FID 2231627014 632943048",
    "a=ssrc:2231627014 cname:Lx2k9TqPz1vB8mNc",
    "a=ssrc:2231627014 msid:7c0e1b9a-2f7c-4c55-9a51-6f1c2b1e8d1a 5a6b1c2d-3e4f-4a5b-8c6d-7e8f9a0b1c2d",
    "a=ssrc:632943048 cname:Lx2k9TqPz1vB8mNc",
    "a=ssrc:632943048 msid:7c0e1b9a-2f7c-4c55-9a51-6f1c2b1e8d1a 5a6b1c2d-3e4f-4a5b-8c6d-7e8f9a0b1c2d",
]
_SDP = "\r\n".join(_SDP_LINES) + "\r\n"
_UFRAG_MARK = "a=ice-ufrag:"
_UFRAG_LEN = 8  # the sequence number, as 8 hex digits


def _ufrag(seq: int) -> str:
    return f"{seq:08x}"


def _sdp(seq: int, offer: bool) -> str:
    return _SDP.replace("{u}", _ufrag(seq)).replace("{setup}", "actpass" if offer else "active")


def _seq_of(candidate: _Candidate | None, sdp: str | None) -> int | None:
    """The sequence number this benchmark put into a signal, or None if there is none."""
    try:
        if candidate is not None and candidate.usernameFragment:
            return int(candidate.usernameFragment, 16)
        if sdp is not None:
            at = sdp.find(_UFRAG_MARK)
            if at >= 0:
                start = at + len(_UFRAG_MARK)
                return int(sdp[start : start + _UFRAG_LEN], 16)
    except ValueError:
        return None
    return None


# --- frames ----------------------------------------------------------------------------------------


class _Candidate(msgspec.Struct):
    usernameFragment: str | None = None


class _Ref(msgspec.Struct):
    id: str


class _CallRef(msgspec.Struct):
    id: str
    conversation_id: str


class _Frame(msgspec.Struct):
    """The fields of any server frame that the benchmark reads; others are ignored."""

    type: str
    id: str | None = None
    code: str | None = None
    message: msgspec.Raw = msgspec.Raw()  # an error's text, or a message.new's message (undecoded)
    call_id: str | None = None
    from_party: str | None = msgspec.field(name="from", default=None)
    kind: str | None = None
    sdp: str | None = None
    candidate: _Candidate | None = None
    party_id: str | None = None
    call: _CallRef | None = None
    conversation: _Ref | None = None
    reason: str | None = None


_decode_frame = msgspec.json.Decoder(_Frame).decode
_encode = msgspec.json.encode


def _error_text(frame: _Frame) -> str:
    text = frame.code or frame.type
    if frame.message:
        with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
            text += ": " + msgspec.json.decode(frame.message, type=str)
    return text


# --- state -----------------------------------------------------------------------------------------


@dataclass(slots=True)
class Outstanding:
    """A signal sent and not yet seen on the paired device's socket."""

    sent_at: float
    call: int
    to_device: int  # the receiving Device's index
    kind: str


@dataclass(slots=True)
class Sample:
    """A delivered signal: when it was sent, how long it took, its kind, the sender's node."""

    sent_at: float
    ms: float
    kind: str
    node: int


@dataclass
class Bench:
    outstanding: dict[int, Outstanding] = field(default_factory=dict)
    samples: list[Sample] = field(default_factory=list)
    first_receive: float = 0.0
    last_receive: float = 0.0
    delivered: int = 0
    misdelivered: int = 0  # a signal on the wrong socket, from the wrong party or for the wrong call
    unknown: int = 0  # a call.signal this run did not send (or got twice)
    ack_sent: dict[int, float] = field(default_factory=dict)
    ack_ms: list[float] = field(default_factory=list)
    pings: dict[str, tuple[float, int]] = field(default_factory=dict)  # ping id -> (sent, node)
    ping_samples: list[Sample] = field(default_factory=list)
    signal_errors: Counter[str] = field(default_factory=Counter)
    replies: dict[str, asyncio.Future[tuple[_Frame, float]]] = field(default_factory=dict)
    slots: dict[tuple[str, str, int], asyncio.Future[tuple[_Frame, float]]] = field(default_factory=dict)
    other_frames: Counter[str] = field(default_factory=Counter)
    closes: Counter[int] = field(default_factory=Counter)
    pairs: list[Pair] = field(default_factory=list)

    def slot(self, key: tuple[str, str, int]) -> asyncio.Future[tuple[_Frame, float]]:
        """The waiter for an event, created by whichever comes first: the wait or the event."""
        waiter = self.slots.get(key)
        if waiter is None:
            waiter = self.slots[key] = asyncio.get_running_loop().create_future()
        return waiter

    def arrived(self, key: tuple[str, str, int], frame: _Frame, now: float) -> None:
        waiter = self.slot(key)
        if not waiter.done():
            waiter.set_result((frame, now))


class Device(Reader):
    """One user's socket (one device, one party in its call)."""

    def __init__(self, account: Account, ws: ClientConnection, bench: Bench, index: int) -> None:
        self.bench = bench
        self.index = index
        self.party_id = ""  # this device's party in its call (its connection id), set during setup
        self._requests = 0
        super().__init__(account, ws, bench.closes)

    def on_frame(self, raw: str | bytes, now: float) -> None:
        bench = self.bench
        try:
            frame = _decode_frame(raw)
        except (msgspec.DecodeError, msgspec.ValidationError):
            bench.other_frames["(undecodable)"] += 1
            return
        kind = frame.type
        if kind == "call.signal":
            self._on_signal(frame, now)
        elif kind in ("ok", "error"):
            self._on_reply(frame, now)
        elif kind == "call.ringing" and frame.call is not None:
            bench.arrived(("ringing", frame.call.conversation_id, self.index), frame, now)
        elif kind == "call.accepted" and frame.call_id is not None:
            bench.arrived(("accepted", frame.call_id, self.index), frame, now)
        elif kind == "pong" and frame.id is not None:
            ping = bench.pings.pop(frame.id, None)
            if ping is not None:
                bench.ping_samples.append(Sample(ping[0], (now - ping[0]) * 1000, "ping", ping[1]))
        elif kind == "call.ended" and frame.call_id is not None:
            bench.arrived(("ended", frame.call_id, self.index), frame, now)
        else:
            bench.other_frames[kind] += 1

    def _on_signal(self, frame: _Frame, now: float) -> None:
        bench = self.bench
        seq = _seq_of(frame.candidate, frame.sdp)
        sent = None if seq is None else bench.outstanding.pop(seq, None)
        if sent is None:
            bench.unknown += 1
            return
        pair = bench.pairs[sent.call]
        sender = pair.caller if sent.to_device == pair.callee.index else pair.callee
        if (
            sent.to_device != self.index
            or frame.call_id != pair.call_id
            or frame.from_party != sender.party_id
            or frame.kind != sent.kind
        ):
            bench.misdelivered += 1
            return
        bench.delivered += 1
        bench.samples.append(
            Sample(sent.sent_at, (now - sent.sent_at) * 1000, sent.kind, sender.account.node)
        )
        if bench.first_receive == 0.0:
            bench.first_receive = now
        bench.last_receive = now

    def _on_reply(self, frame: _Frame, now: float) -> None:
        bench = self.bench
        request_id = frame.id
        if request_id is not None and request_id.startswith("s"):  # a signal that asked for its ok
            with contextlib.suppress(ValueError):
                sent_at = bench.ack_sent.pop(int(request_id[1:]), None)
                if sent_at is not None and frame.type == "ok":
                    bench.ack_ms.append((now - sent_at) * 1000)
            if frame.type == "error":
                bench.signal_errors[_error_text(frame)] += 1
            return
        waiter = None if request_id is None else bench.replies.pop(request_id, None)
        if waiter is not None:
            if not waiter.done():
                waiter.set_result((frame, now))
        elif frame.type == "error":  # no id: a call.signal sent without one
            bench.signal_errors[_error_text(frame)] += 1
        else:
            bench.other_frames[f"{frame.type} (unmatched)"] += 1

    async def request(self, frame: dict[str, Any]) -> tuple[_Frame, float]:
        """Send ``frame`` with an id; its reply and the time it arrived."""
        self._requests += 1
        request_id = f"r{self.index}-{self._requests}"
        waiter: asyncio.Future[tuple[_Frame, float]] = asyncio.get_running_loop().create_future()
        self.bench.replies[request_id] = waiter
        await self.ws.send(_encode({**frame, "id": request_id}).decode())
        try:
            return await asyncio.wait_for(waiter, timeout=REPLY_TIMEOUT)
        finally:
            self.bench.replies.pop(request_id, None)


@dataclass
class Pair:
    """A direct conversation and its call: the caller on one node, the callee on the other."""

    caller: Device
    callee: Device
    conversation_id: str = ""
    call_id: str = ""
    start_ok_ms: float = 0.0  # call.start → its ok (caller)
    ringing_ms: float = 0.0  # call.start → call.ringing (callee)
    accept_ok_ms: float = 0.0  # call.accept → its ok (callee)
    setup_ms: float = 0.0  # call.start → call.accepted (caller)
    failed: str = ""


# --- setup -----------------------------------------------------------------------------------------


async def _bounded(concurrency: int, jobs: list[Pair], work: Callable[[Pair], Awaitable[None]]) -> None:
    pending = iter(jobs)

    async def worker() -> None:
        for job in pending:  # shared iterator: each job is taken once
            try:
                await work(job)
            except Exception as exc:
                job.failed = job.failed or f"{type(exc).__name__}: {exc}"

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def _open_conversation(pair: Pair) -> None:
    reply, _ = await pair.caller.request(
        {"type": "conversation.create", "kind": "direct", "user_ids": [str(pair.callee.account.user_id)]}
    )
    if reply.type != "ok" or reply.conversation is None:
        raise RuntimeError(f"conversation.create: {_error_text(reply)}")
    pair.conversation_id = reply.conversation.id


async def _set_up_call(pair: Pair, bench: Bench) -> None:
    caller, callee = pair.caller, pair.callee
    ringing = bench.slot(("ringing", pair.conversation_id, callee.index))
    started = time.time()
    reply, at = await caller.request(
        {"type": "call.start", "conversation_id": pair.conversation_id, "media": "video"}
    )
    if reply.type != "ok" or reply.call is None or reply.party_id is None:
        raise RuntimeError(f"call.start: {_error_text(reply)}")
    pair.start_ok_ms = (at - started) * 1000
    pair.call_id = reply.call.id
    caller.party_id = reply.party_id
    accepted = bench.slot(("accepted", pair.call_id, caller.index))
    ring, rang_at = await asyncio.wait_for(ringing, timeout=SETUP_TIMEOUT)
    if ring.call is None or ring.call.id != pair.call_id:
        raise RuntimeError(f"call.ringing for another call: {ring.call}")
    pair.ringing_ms = (rang_at - started) * 1000
    answered = time.time()
    reply, at = await callee.request({"type": "call.accept", "call_id": pair.call_id})
    if reply.type != "ok" or reply.party_id is None:
        raise RuntimeError(f"call.accept: {_error_text(reply)}")
    pair.accept_ok_ms = (at - answered) * 1000
    callee.party_id = reply.party_id
    event, accepted_at = await asyncio.wait_for(accepted, timeout=SETUP_TIMEOUT)
    if event.party_id != reply.party_id:
        raise RuntimeError(f"call.accepted names party {event.party_id}, the accept said {reply.party_id}")
    pair.setup_ms = (accepted_at - started) * 1000


# --- signaling -------------------------------------------------------------------------------------


@dataclass
class SendResult:
    sent: int = 0
    sdp_sent: int = 0
    skipped_closed: int = 0
    seconds: float = 0.0
    max_lag_ms: float = 0.0  # how far behind its schedule the sender fell


async def _send_signals(
    pairs: list[Pair], bench: Bench, rate: float, seconds: float, ack_every: int, sdp_cycle: int
) -> SendResult:
    """``rate`` signals/s for ``seconds``: round-robin over the calls, alternating direction in each."""
    result = SendResult()
    started = time.monotonic()
    deadline = started + seconds
    seq = 0
    calls = len(pairs)
    while True:
        due = started + seq / rate
        if due >= deadline:
            break
        now = time.monotonic()
        if due > now:
            await asyncio.sleep(due - now)
        else:
            result.max_lag_ms = max(result.max_lag_ms, (now - due) * 1000)
        index = seq % calls
        turn = seq // calls  # this call's own signal count
        pair = pairs[index]
        from_caller = turn % 2 == 0
        sender, receiver = (pair.caller, pair.callee) if from_caller else (pair.callee, pair.caller)
        if not sender.open:
            result.skipped_closed += 1
            seq += 1
            continue
        phase = turn % sdp_cycle if sdp_cycle else -1
        frame: dict[str, Any] = {
            "type": "call.signal",
            "call_id": pair.call_id,
            "to": receiver.party_id,
        }
        if phase in (0, 1):  # 0 is even (the caller's turn): the offer; 1 the callee's answer
            kind = "offer" if phase == 0 else "answer"
            frame["kind"] = kind
            frame["sdp"] = _sdp(seq, offer=phase == 0)
            result.sdp_sent += 1
        else:
            kind = "ice"
            ufrag = _ufrag(seq)
            frame["kind"] = kind
            frame["candidate"] = {
                "candidate": _CANDIDATES[turn % len(_CANDIDATES)].format(u=ufrag),
                "sdpMid": str(turn % 2),
                "sdpMLineIndex": turn % 2,
                "usernameFragment": ufrag,
            }
        if ack_every and seq % ack_every == 0:
            frame["id"] = f"s{seq}"
        text = _encode(frame).decode()
        sent_at = time.time()
        bench.outstanding[seq] = Outstanding(sent_at, index, receiver.index, kind)
        if "id" in frame:
            bench.ack_sent[seq] = sent_at
        await sender.ws.send(text)
        result.sent += 1
        seq += 1
    result.seconds = time.monotonic() - started
    return result


async def _probe(probes: list[Device], bench: Bench, interval: float, stop: asyncio.Event) -> None:
    """A ``ping`` to each node every ``interval`` from a socket of its own: the gateway answers it in
    its read loop, without PostgreSQL or Redis, so its round trip is the node's (and the machine's)
    scheduling delay, to hold against the signals' latency."""
    count = 0
    while not stop.is_set():
        for probe in probes:
            if probe.open:
                count += 1
                ping_id = f"p{count}"
                bench.pings[ping_id] = (time.time(), probe.account.node)
                await probe.ws.send(_encode({"type": "ping", "id": ping_id}).decode())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)


async def _probe_backends(
    bench_cluster: Cluster, pair: Pair, bench: Bench, interval: float, stop: asyncio.Event
) -> None:
    """What a signal waits for besides the nodes, measured from here every ``interval``: the
    PostgreSQL check a ``call.signal`` makes (``storage.joined_parties`` through an asyncpg pool, as
    the node runs it: acquire, query, the pool's reset on release) and a Redis ``PUBLISH``."""
    pool = await asyncpg.create_pool(bench_cluster.database_url, min_size=1, max_size=1)
    redis = Redis.from_url(REDIS_URL)
    call_id = uuid.UUID(pair.call_id)
    parties = [pair.caller.party_id, pair.callee.party_id]
    channel = f"{bench_cluster.prefix}bench-probe"
    try:
        while not stop.is_set():
            started = time.time()
            await storage.joined_parties(pool, call_id, parties)
            bench.ping_samples.append(Sample(started, (time.time() - started) * 1000, "postgres", -1))
            started = time.time()
            await redis.publish(channel, b"probe")
            bench.ping_samples.append(Sample(started, (time.time() - started) * 1000, "redis", -1))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)
    finally:
        await pool.close()
        await redis.aclose()


# --- CPU of PostgreSQL and Redis ------------------------------------------------------------------


class ProcessCpu:
    """CPU seconds of the machine's other processes from now until ``end``: PostgreSQL (this run's
    database and its shared processes, apart from backends of other databases), Redis, and everything
    else by name (other work on a shared machine). Processes that exit in between are missed."""

    def __init__(self, nodes: list[Node], database: str) -> None:
        self._skip = {node.process.pid for node in nodes} | {os.getpid()}
        self._database = database
        self._start = self._sample()

    def _sample(self) -> dict[int, tuple[str, float]]:
        found: dict[int, tuple[str, float]] = {}
        for process in psutil.process_iter(["name", "cmdline"]):
            if process.pid in self._skip:
                continue
            name = process.info["name"] or "?"
            if name == "postgres":
                command = " ".join(process.info["cmdline"] or [])
                backend = command.startswith("postgres: ") and " postgres " in command
                name = (
                    "PostgreSQL (other databases)"
                    if backend and self._database not in command
                    else "PostgreSQL"
                )
            elif name == "redis-server":
                name = "Redis"
            elif name in ("python", "python3") or name.startswith("python3."):
                args = process.info["cmdline"] or []
                script = next((a for a in args[1:] if not a.startswith("-")), "")
                name = f"python {Path(script).name}" if script else "python"
            with contextlib.suppress(psutil.Error):
                times = process.cpu_times()
                found[process.pid] = (name, float(times.user + times.system))
        return found

    def end(self) -> dict[str, float]:
        """CPU seconds by name, most first."""
        used: dict[str, float] = {}
        for pid, (name, seconds) in self._sample().items():
            before = self._start.get(pid)
            spent = seconds - (before[1] if before is not None else 0.0)
            if spent > 0:
                used[name] = used.get(name, 0.0) + spent
        return dict(sorted(used.items(), key=lambda item: -item[1]))


# --- reporting -------------------------------------------------------------------------------------


def _line(values: list[float]) -> str:
    if not values:
        return "no samples"
    ordered = sorted(values)
    return (
        f"p50 {_percentile(ordered, 0.5):.1f} ms, p90 {_percentile(ordered, 0.9):.1f} ms, "
        f"p99 {_percentile(ordered, 0.99):.1f} ms, max {ordered[-1]:.1f} ms"
    )


def _report_signals(
    bench: Bench, result: SendResult, rate: float, wall_start: float, nodes: int, slow_ms: float
) -> None:
    samples = bench.samples
    everything = [s.ms for s in samples]
    lost = len(bench.outstanding)
    receive_seconds = max(1e-9, bench.last_receive - wall_start)
    print(
        f"  sent {result.sent} signals in {result.seconds:.1f} s -> {result.sent / result.seconds:.0f}/s "
        f"(target {rate:.0f}/s; {result.sdp_sent} offers/answers with a {len(_SDP)}-byte SDP); "
        f"sender at most {result.max_lag_ms:.1f} ms behind schedule"
    )
    print(
        f"  delivered {bench.delivered} ({bench.delivered / max(1, result.sent) * 100:.2f}%) "
        f"-> {bench.delivered / receive_seconds:.0f}/s; LOST {lost}; misdelivered {bench.misdelivered}; "
        f"unknown/duplicate {bench.unknown}; skipped (sender closed) {result.skipped_closed}"
    )
    print(f"  relay latency send -> paired device (all): {_line(everything)}")
    print(f"    ice: {_line([s.ms for s in samples if s.kind == 'ice'])}")
    print(f"    offer/answer: {_line([s.ms for s in samples if s.kind != 'ice'])}")
    if nodes > 1:
        for node in range(nodes):
            print(f"    sent from node {node}: {_line([s.ms for s in samples if s.node == node])}")
    # When the slow ones were sent: per second of the window, how many took longer than slow_ms.
    per_second: Counter[int] = Counter()
    worst: dict[int, float] = {}
    for sample in samples:
        if sample.ms > slow_ms:
            second = int(sample.sent_at - wall_start)
            per_second[second] += 1
            worst[second] = max(worst.get(second, 0.0), sample.ms)
    probe_worst: dict[tuple[str, int], float] = {}  # the slowest probe of each kind, each second
    for probe in bench.ping_samples:
        key = (probe.kind, int(probe.sent_at - wall_start))
        probe_worst[key] = max(probe_worst.get(key, 0.0), probe.ms)
    slow = sum(per_second.values())

    def probes_in(second: int) -> str:
        found = [(kind, probe_worst.get((kind, second))) for kind in ("ping", "postgres", "redis")]
        text = " / ".join(f"{kind} {ms:.0f}" for kind, ms in found if ms is not None)
        return f"; slowest probes {text} ms" if text else ""

    spread = ", ".join(
        f"s{k}: {per_second[k]} (max {worst[k]:.0f} ms{probes_in(k)})" for k in sorted(per_second)
    )
    print(
        f"  over {slow_ms:.0f} ms: {slow} signals ({slow / max(1, len(samples)) * 100:.2f}%)"
        + (f"; by second sent: {spread}" if spread else "")
    )
    print(f"  send -> ok reply (every signal with an id, {len(bench.ack_ms)}): {_line(bench.ack_ms)}")
    print(f"  signal errors: {dict(bench.signal_errors) or 0}")
    for node in range(nodes):
        pings = [p.ms for p in bench.ping_samples if p.node == node and p.kind == "ping"]
        if pings:
            print(f"  ping round trip to node {node} ({len(pings)} pings): {_line(pings)}")
    checks = [p.ms for p in bench.ping_samples if p.kind == "postgres"]
    if checks:
        print(f"  the signal's PostgreSQL check, from here through a pool ({len(checks)}): {_line(checks)}")
    publishes = [p.ms for p in bench.ping_samples if p.kind == "redis"]
    if publishes:
        print(f"  a Redis PUBLISH, from here ({len(publishes)}): {_line(publishes)}")


async def run(args: argparse.Namespace) -> None:
    _raise_nofile(args.calls * 4 + 1000)
    if args.signal_rate_limit:
        os.environ["CALL_SIGNAL_RATE_LIMIT"] = args.signal_rate_limit  # the nodes inherit it
    async with cluster(args.nodes, "calls") as bench_cluster:
        await _measure(args, bench_cluster)


async def _measure(args: argparse.Namespace, bench_cluster: Cluster) -> None:
    nodes = bench_cluster.nodes
    devices: list[Device] = []
    bench = Bench()
    try:
        started = time.monotonic()
        # One more socket per node (the last accounts: registration alternates the nodes) for pings.
        probing = len(nodes) if args.probe_ms > 0 else 0
        accounts = await _register(nodes, args.calls * 2 + probing, args.register_concurrency)
        print(f"registered {len(accounts)} users in {time.monotonic() - started:.1f} s")
        started = time.monotonic()
        index_of = {a.user_id: i for i, a in enumerate(accounts)}
        devices = await connect_all(
            nodes,
            accounts,
            lambda a, ws: Device(a, ws, bench, index_of[a.user_id]),
            args.connect_concurrency,
            max_queue=256,
        )
        if len(devices) != len(accounts):
            raise SystemExit(f"only {len(devices)} of {len(accounts)} sockets opened")
        per_node = Counter(d.account.node for d in devices)
        print(f"opened {len(devices)} sockets in {time.monotonic() - started:.1f} s ({dict(per_node)})")
        probes = devices[args.calls * 2 :]
        bench.pairs = pairs = [Pair(devices[i], devices[i + 1]) for i in range(0, args.calls * 2, 2)]
        crossing = sum(p.caller.account.node != p.callee.account.node for p in pairs)
        print(f"{len(pairs)} pairs, {crossing} with caller and callee on different nodes")
        await asyncio.sleep(2)  # past WS_RESUME_GRACE: the callees' durable events flow

        started = time.monotonic()
        await _bounded(args.setup_concurrency, pairs, _open_conversation)
        print(f"opened {len(pairs)} direct conversations in {time.monotonic() - started:.1f} s")
        await asyncio.sleep(1)

        setup_window = CpuWindow(nodes)
        started = time.monotonic()
        await _bounded(args.setup_concurrency, pairs, lambda p: _set_up_call(p, bench))
        setup_seconds = time.monotonic() - started
        setup_use = setup_window.end()
        failed = Counter(p.failed for p in pairs if p.failed)
        ready = [p for p in pairs if not p.failed]
        print()
        print(
            f"call setup: {len(ready)}/{len(pairs)} calls in {setup_seconds:.1f} s "
            f"({len(ready) / setup_seconds:.0f} calls/s, {args.setup_concurrency} at once); "
            f"failures {dict(failed) or 0}"
        )
        print(f"  call.start -> ok (caller):          {_line([p.start_ok_ms for p in ready])}")
        print(f"  call.start -> call.ringing (callee): {_line([p.ringing_ms for p in ready])}")
        print(f"  call.accept -> ok (callee):         {_line([p.accept_ok_ms for p in ready])}")
        print(f"  call.start -> call.accepted (caller): {_line([p.setup_ms for p in ready])}")
        node_cpu = " + ".join(f"{c / setup_use.wall * 100:.0f}%" for c in setup_use.nodes)
        print(f"  node CPU during setup: {node_cpu} of a core")
        if not ready:
            return
        await asyncio.sleep(2)  # let the setup's durable events settle

        idle = CpuWindow(nodes)
        await asyncio.sleep(args.idle_seconds)
        idle_use = idle.end()

        window = CpuWindow(nodes)
        processes = ProcessCpu(nodes, bench_cluster.database_url.rsplit("/", 1)[-1])
        machine_start = psutil.cpu_times()
        wall_start = time.time()
        stop_probe = asyncio.Event()
        probers: list[asyncio.Task[None]] = []
        if args.probe_ms > 0:
            interval = args.probe_ms / 1000
            probers.append(asyncio.create_task(_probe(probes, bench, interval, stop_probe)))
            probers.append(
                asyncio.create_task(_probe_backends(bench_cluster, ready[0], bench, interval, stop_probe))
            )
        result = await _send_signals(ready, bench, args.rate, args.seconds, args.ack_every, args.sdp_cycle)
        deadline = time.monotonic() + DRAIN_TIMEOUT
        while time.monotonic() < deadline:
            if not bench.outstanding:
                break
            await asyncio.sleep(0.05)
        stop_probe.set()
        await asyncio.gather(*probers)
        use = window.end()
        process_use = processes.end()
        machine_end = psutil.cpu_times()

        print()
        print(
            f"call.signal relay: {args.rate:.0f} signals/s for {args.seconds:.0f} s over {len(ready)} calls, "
            f"{args.nodes} node(s) (per device {args.rate / len(ready) / 2:.1f} signals/s), "
            f"from {time.strftime('%H:%M:%S', time.gmtime(wall_start))} UTC"
        )
        _report_signals(bench, result, args.rate, wall_start, args.nodes, args.slow_ms)
        for i, cpu in enumerate(use.nodes):
            print(f"  node {i}: CPU {cpu:.1f} s = {cpu / use.wall * 100:.0f}% of a core")
        pg_redis = 0.0
        for name in ("PostgreSQL", "Redis"):
            cpu = process_use.pop(name, 0.0)
            pg_redis += cpu
            print(f"  {name}: CPU {cpu:.1f} s = {cpu / use.wall * 100:.0f}% of a core")
        other_cpu = sum(process_use.values())
        top = ", ".join(f"{name} {cpu / use.wall * 100:.0f}%" for name, cpu in list(process_use.items())[:4])
        print(f"  other processes: {other_cpu / use.wall * 100:.0f}% of a core ({top})")
        # The machine's busy time that no process still running at the end accounts for: processes
        # that exited meanwhile (a test run on a shared machine), or the kernel. Around -15..0% when
        # nothing else ran (the machine's counters are sampled per tick, the processes' are exact).
        unattributed = use.machine - sum(use.nodes) - use.me - sum(process_use.values()) - pg_redis
        print(f"  machine busy time no live process accounts for: {unattributed / use.wall * 100:.0f}%")
        idle_cpu = [c / idle_use.wall for c in idle_use.nodes]  # cores, per node
        print(
            "  node idle CPU (calls up, no signals, no pings): "
            + " + ".join(f"{c * 100:.0f}%" for c in idle_cpu)
            + f" of a core, over {idle_use.wall:.0f} s before the window"
        )
        if bench.delivered:
            busy = sum(use.nodes) - sum(idle_cpu) * use.wall
            print(
                f"  node CPU per signal (all nodes): {sum(use.nodes) / bench.delivered * 1e6:.0f} us, "
                f"{busy / bench.delivered * 1e6:.0f} us above idle"
            )
        use.print_rest()
        fields = ("user", "system", "softirq", "irq", "steal", "iowait")
        spent = {f: getattr(machine_end, f, 0.0) - getattr(machine_start, f, 0.0) for f in fields}
        print(
            "  the machine's time by kind: "
            + ", ".join(f"{f} {spent[f] / use.wall * 100:.0f}%" for f in fields)
            + " of a core"
        )

        # Hang up: the caller ends each call; both devices must hear call.ended.
        hung: dict[str, float] = {}

        async def hang_up(pair: Pair) -> None:
            at = time.time()
            reply, _ = await pair.caller.request({"type": "call.hangup", "call_id": pair.call_id})
            if reply.type != "ok":
                raise RuntimeError(f"call.hangup: {_error_text(reply)}")
            hung[pair.call_id] = at

        for pair in ready:
            pair.failed = ""
        started = time.monotonic()
        await _bounded(args.setup_concurrency, ready, hang_up)
        hangup_failed = Counter(p.failed for p in ready if p.failed)
        waits = [bench.slot(("ended", p.call_id, d.index)) for p in ready for d in (p.caller, p.callee)]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*waits), timeout=ENDED_TIMEOUT)
        ended = [w.result() for w in waits if w.done() and not w.cancelled()]
        reasons = Counter(frame.reason for frame, _ in ended)
        to_callee = [
            (w.result()[1] - hung[p.call_id]) * 1000
            for p, w in zip(ready, waits[1::2], strict=True)
            if w.done() and not w.cancelled() and p.call_id in hung
        ]
        print()
        print(
            f"hang-up: {len(hung)}/{len(ready)} call.hangup ok in {time.monotonic() - started:.1f} s; "
            f"failures {dict(hangup_failed) or 0}"
        )
        print(
            f"  call.ended received {len(ended)}/{len(waits)} (both devices of every call), "
            f"reasons {dict(reasons)}"
        )
        print(f"  call.hangup -> call.ended on the callee: {_line(to_callee)}")
        open_now = sum(1 for d in devices if d.open)
        print(f"  sockets open at the end: {open_now}/{len(devices)}; closes by code: {dict(bench.closes)}")
        frames = {k: v for k, v in bench.other_frames.items() if k not in {"hello", "presence"}}
        if frames:
            print(f"  other frames (whole run): {frames}")
    finally:
        await close_all(devices)


def _per_second(rule: RateLimit) -> float:
    return rule.limit / rule.window.total_seconds()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, choices=(1, 2), default=2)
    parser.add_argument("--calls", type=int, default=500, help="concurrent two-party calls (2 sockets each)")
    parser.add_argument("--rate", type=float, default=2000, help="call.signal frames/s over all calls")
    parser.add_argument("--seconds", type=float, default=20, help="how long to signal")
    parser.add_argument(
        "--sdp-cycle",
        type=int,
        default=20,
        help="per call, signals 0 and 1 of every N are an offer and an answer with SDP (0: ICE only)",
    )
    parser.add_argument(
        "--ack-every", type=int, default=10, help="every Nth signal asks for its ok reply (0: none)"
    )
    parser.add_argument(
        "--signal-rate-limit",
        default="",
        help="CALL_SIGNAL_RATE_LIMIT for the nodes (e.g. 2000/10s); only needed for high --rate",
    )
    parser.add_argument(
        "--slow-ms", type=float, default=20, help="report when signals slower than this were sent"
    )
    parser.add_argument(
        "--idle-seconds", type=float, default=3, help="idle window before signaling (node idle CPU)"
    )
    parser.add_argument(
        "--probe-ms", type=float, default=20, help="ping each node this often while signaling (0: off)"
    )
    parser.add_argument("--setup-concurrency", type=int, default=25, help="calls set up at once")
    parser.add_argument("--register-concurrency", type=int, default=16)
    parser.add_argument("--connect-concurrency", type=int, default=50)
    args = parser.parse_args()
    if not 1 <= args.calls <= MAX_CALLS:
        parser.error(f"--calls must be 1..{MAX_CALLS}")
    if not 0 < args.seconds <= MAX_SECONDS or not 0 < args.rate <= MAX_RATE:
        parser.error(f"--seconds must be 0..{MAX_SECONDS:.0f} and --rate 0..{MAX_RATE}")
    if args.sdp_cycle < 0 or args.sdp_cycle == 1 or args.sdp_cycle % 2:
        parser.error("--sdp-cycle must be 0 or an even number of at least 2")
    if not 0 < args.idle_seconds <= MAX_SECONDS:
        parser.error(f"--idle-seconds must be 0..{MAX_SECONDS:.0f}")
    if args.ack_every < 0 or args.setup_concurrency < 1:
        parser.error("--ack-every must be at least 0 and --setup-concurrency at least 1")
    limit_text = args.signal_rate_limit or os.environ.get("CALL_SIGNAL_RATE_LIMIT", DEFAULT_SIGNAL_RATE_LIMIT)
    try:
        limit = parse_rate_limit(limit_text)
    except ValueError as exc:
        parser.error(f"--signal-rate-limit: {exc}")
    per_device = args.rate / args.calls / 2
    if per_device > 0.9 * _per_second(limit):
        parser.error(
            f"each device would send {per_device:.1f} signals/s, over 90% of CALL_SIGNAL_RATE_LIMIT "
            f"{limit_text} ({_per_second(limit):.1f}/s): raise it with --signal-rate-limit"
        )
    uvloop.run(run(args))


if __name__ == "__main__":
    main()
