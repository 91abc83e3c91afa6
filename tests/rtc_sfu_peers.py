"""Test peers for the built-in SFU: real aiortc clients of its signaling, and the shim that plays the
call service between them and a real ``Sfu`` (in memory, in this process, media over real UDP).

Each peer publishes a tone (a frequency of its own) and a small moving picture (a colour of its own),
so a subscriber can tell from the decoded media alone whose track it receives.
"""

from __future__ import annotations

import asyncio
import fractions
import itertools
import math
import time
import uuid
from array import array
from dataclasses import dataclass, field
from typing import Any

from aiortc import (
    MediaStreamTrack,
    RTCBundlePolicy,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError
from av import AudioFrame, VideoFrame
from av.frame import Frame
from av.video.plane import VideoPlane

from kintsugi_rt.calls.frames import SFU_PARTY, Candidate, SignalKind
from kintsugi_rt.calls.sfu import SUBSCRIBER_PARTY, Sfu, SfuSignal
from kintsugi_rt.calls.sfu_aiortc import parse_sdp, remote_ssrc
from kintsugi_rt.calls.sfu_media import is_vp8_keyframe

SAMPLE_RATE = 48000
AUDIO_SAMPLES = 960  # 20 ms
VIDEO_CLOCK = 90000
VIDEO_WIDTH, VIDEO_HEIGHT = 160, 120


class ToneTrack(MediaStreamTrack):
    """A sine tone at ``frequency``, 48 kHz mono, paced in real time."""

    kind = "audio"

    def __init__(self, frequency: float) -> None:
        super().__init__()
        self.frequency = frequency
        self._start: float | None = None
        self._pts = 0

    async def recv(self) -> Frame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        else:
            self._pts += AUDIO_SAMPLES
            await asyncio.sleep(self._start + self._pts / SAMPLE_RATE - time.monotonic())
        step = 2 * math.pi * self.frequency / SAMPLE_RATE
        samples = array("h", (int(8000 * math.sin(step * (self._pts + i))) for i in range(AUDIO_SAMPLES)))
        frame = AudioFrame(format="s16", layout="mono", samples=AUDIO_SAMPLES)
        frame.planes[0].update(samples.tobytes())
        frame.pts = self._pts
        frame.sample_rate = SAMPLE_RATE
        frame.time_base = fractions.Fraction(1, SAMPLE_RATE)
        return frame


class PatternTrack(MediaStreamTrack):
    """A flat colour (``u``, ``v``) with a bright bar moving across it, 160x120 at 30 fps."""

    kind = "video"

    def __init__(self, u: int, v: int) -> None:
        super().__init__()
        self.u, self.v = u, v
        self._start: float | None = None
        self._pts = 0

    async def recv(self) -> Frame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        else:
            self._pts += VIDEO_CLOCK // 30
            await asyncio.sleep(self._start + self._pts / VIDEO_CLOCK - time.monotonic())
        frame = VideoFrame(VIDEO_WIDTH, VIDEO_HEIGHT, "yuv420p")
        luma, chroma_u, chroma_v = frame.planes
        bar = (self._pts // 3000 * 4) % VIDEO_WIDTH
        row = bytes(80 if not bar <= x < bar + 16 else 200 for x in range(luma.line_size))
        luma.update(row * VIDEO_HEIGHT)
        chroma_u.update(bytes([self.u]) * chroma_u.buffer_size)
        chroma_v.update(bytes([self.v]) * chroma_v.buffer_size)
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        return frame


@dataclass
class Received:
    """What a peer decoded of one track it receives."""

    owner: str  # the publisher's party id (the msid stream id)
    kind: str
    frames: int = 0
    keyframes: int = 0
    u: float = 0.0  # the last picture's mean chroma
    v: float = 0.0
    frequency: float = 0.0  # the last estimated tone


def plane_mean(plane: VideoPlane) -> float:
    """The mean value of a picture plane's visible bytes (rows are padded to ``line_size``)."""
    data = bytes(plane)
    rows = (data[row * plane.line_size : row * plane.line_size + plane.width] for row in range(plane.height))
    return sum(sum(row) for row in rows) / (plane.width * plane.height)


def tone_frequency(frame: AudioFrame) -> float:
    """The frequency of a tone, from the zero crossings of the first channel of packed s16 audio."""
    channels = len(frame.layout.channels)
    samples = array("h", bytes(frame.planes[0])[: frame.samples * channels * 2])[::channels]
    crossings = sum(1 for a, b in itertools.pairwise(samples) if (a < 0) != (b < 0))
    return crossings / 2 / (len(samples) / frame.sample_rate)


@dataclass
class Signaling:
    """Plays the call service: the SFU's signals go to the peer they name, the peers' to ``sfu.signal``."""

    call_id: uuid.UUID = field(default_factory=uuid.uuid4)
    peers: dict[str, SfuPeer] = field(default_factory=dict)
    sfu: Sfu | None = None

    async def send(self, call_id: uuid.UUID, party_id: str, signal: SfuSignal) -> None:
        assert call_id == self.call_id
        peer = self.peers.get(party_id)
        if peer is not None:
            peer.deliver(signal)

    async def to_sfu(
        self,
        party_id: str,
        to: str,
        kind: SignalKind,
        sdp: str | None = None,
        candidate: Candidate | None = None,
    ) -> None:
        assert self.sfu is not None
        await self.sfu.signal(self.call_id, party_id, to, kind, sdp, candidate)


class SfuPeer:
    """A device in an SFU call: publishes a tone and a picture, receives everyone else's.

    ``trickle`` sends its ICE candidates as ``ice`` signals (its receiving connection's before its
    answer) instead of inside its SDP, as browsers do.
    """

    def __init__(
        self, signaling: Signaling, party_id: str, *, frequency: float, u: int, v: int, trickle: bool = False
    ):
        self.signaling = signaling
        self.party_id = party_id
        self.frequency, self.u, self.v = frequency, u, v
        self.trickle = trickle
        self.pub: RTCPeerConnection | None = None
        self.sub: RTCPeerConnection | None = None
        self.received: dict[str, Received] = {}  # by mid of the receiving connection
        self.directions: dict[str, str] = {}  # the SFU's direction for each mid of its last offer
        self.offers = 0
        self.renegotiations = 0  # times the SFU said to drop the receiving connection
        self.keyframe_requests = 0  # PLI/FIR that reached this peer's video sender
        self.errors: list[BaseException] = []
        self._inbox: asyncio.Queue[SfuSignal] = asyncio.Queue()
        self._consumers: list[asyncio.Task[None]] = []
        self._worker: asyncio.Task[None] | None = None
        signaling.peers[party_id] = self

    async def join(self) -> None:
        """Publish: the offer of the publishing connection, to ``sfu``."""
        self._worker = asyncio.create_task(self._work())
        self.pub = bundled_connection()
        self.pub.addTransceiver(ToneTrack(self.frequency), direction="sendonly")
        video = self.pub.addTransceiver(PatternTrack(self.u, self.v), direction="sendonly")
        self._count_keyframe_requests(video.sender)
        await self.pub.setLocalDescription(await self.pub.createOffer())
        await self._send_description(SFU_PARTY, "offer", self.pub, candidates_first=False)

    def deliver(self, signal: SfuSignal) -> None:
        self._inbox.put_nowait(signal)

    def tracks_from(self, owner: str, kind: str) -> list[Received]:
        return [
            r for mid, r in self.received.items() if r.owner == owner and r.kind == kind and self.live(mid)
        ]

    def live(self, mid: str) -> bool:
        return self.directions.get(mid) in ("sendonly", "sendrecv")

    def frames_from(self, owner: str, kind: str) -> int:
        return sum(r.frames for r in self.tracks_from(owner, kind))

    async def request_keyframe(self, owner: str) -> None:
        """Send the SFU a PLI for the video it forwards from ``owner``, as a decoder that lost it would."""
        assert self.sub is not None
        offer = parse_sdp(self.sub.remoteDescription.sdp)
        for transceiver in self.sub.getTransceivers():
            mid = transceiver.mid
            if mid is None or not self.live(mid):
                continue
            if self.received[mid].owner == owner and self.received[mid].kind == "video":
                ssrc = remote_ssrc(offer, mid)
                assert ssrc is not None
                await transceiver.receiver._send_rtcp_pli(ssrc)

    async def restart_receiving(self) -> None:
        """Drop the receiving connection and ask the SFU for a new one, as after it failed."""
        await self._drop_receiving()
        await self.signaling.to_sfu(self.party_id, SUBSCRIBER_PARTY, "renegotiate")

    async def _drop_receiving(self) -> None:
        if self.sub is not None:
            await self.sub.close()
        self.sub = None
        self.received, self.directions = {}, {}

    async def close(self) -> None:
        for task in [*self._consumers, *([self._worker] if self._worker else [])]:
            task.cancel()
        for pc in (self.pub, self.sub):
            if pc is not None:
                await pc.close()
        self.signaling.peers.pop(self.party_id, None)

    # --- signals from the SFU -------------------------------------------------------------------

    async def _work(self) -> None:
        while True:
            signal = await self._inbox.get()
            try:
                await self._handle(signal)
            except Exception as exc:
                self.errors.append(exc)

    async def _handle(self, signal: SfuSignal) -> None:
        if signal.from_party == SFU_PARTY and signal.kind == "answer":
            assert self.pub is not None and signal.sdp is not None
            await self.pub.setRemoteDescription(RTCSessionDescription(sdp=signal.sdp, type="answer"))
        elif signal.from_party == SUBSCRIBER_PARTY and signal.kind == "offer":
            assert signal.sdp is not None
            await self._receive_offer(signal.sdp)
        elif signal.from_party == SUBSCRIBER_PARTY and signal.kind == "renegotiate":
            self.renegotiations += 1
            await self._drop_receiving()
        else:
            raise AssertionError(f"unexpected signal {signal}")

    async def _receive_offer(self, sdp: str) -> None:
        self.offers += 1
        if self.sub is None:
            self.sub = bundled_connection()
        await self.sub.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        owners = {}
        for media in parse_sdp(sdp).media:
            mid = media.rtp.muxId
            if mid is None:
                continue
            self.directions[mid] = media.direction or "sendrecv"
            if media.msid:
                owners[mid] = media.msid.split()[0]
        for transceiver in self.sub.getTransceivers():
            track = transceiver.receiver.track
            if transceiver.mid is None or track is None:
                continue
            mid = transceiver.mid
            if mid not in self.received and mid in owners:
                self.received[mid] = received = Received(owner=owners[mid], kind=track.kind)
                if track.kind == "video":
                    count_keyframes(transceiver.receiver, received)
                self._consumers.append(asyncio.create_task(self._consume(track, received)))
        await self.sub.setLocalDescription(await self.sub.createAnswer())
        await self._send_description(SUBSCRIBER_PARTY, "answer", self.sub, candidates_first=True)

    async def _consume(self, track: MediaStreamTrack, received: Received) -> None:
        try:
            while True:
                frame = await track.recv()
                received.frames += 1
                if isinstance(frame, VideoFrame):
                    received.u, received.v = plane_mean(frame.planes[1]), plane_mean(frame.planes[2])
                elif isinstance(frame, AudioFrame) and received.frames % 10 == 0:
                    received.frequency = tone_frequency(frame)
        except MediaStreamError:
            pass

    # --- signals to the SFU -----------------------------------------------------------------------

    async def _send_description(
        self, to: str, kind: SignalKind, pc: RTCPeerConnection, *, candidates_first: bool
    ) -> None:
        sdp = pc.localDescription.sdp
        if not self.trickle:
            await self.signaling.to_sfu(self.party_id, to, kind, sdp)
            return
        bare, candidates = split_candidates(sdp)
        if not candidates_first:
            await self.signaling.to_sfu(self.party_id, to, kind, bare)
        for candidate in candidates:
            await self.signaling.to_sfu(self.party_id, to, "ice", candidate=candidate)
        if candidates_first:
            await self.signaling.to_sfu(self.party_id, to, kind, bare)
        await self.signaling.to_sfu(self.party_id, to, "ice_end")

    def _count_keyframe_requests(self, sender: RTCRtpSender) -> None:
        forward = sender._send_keyframe

        def counted() -> None:
            self.keyframe_requests += 1
            forward()

        sender._send_keyframe = counted  # type: ignore[method-assign]


def bundled_connection() -> RTCPeerConnection:
    """A peer connection on one transport. aiortc's default (balanced) policy gives a second section of
    a kind created by the same offer a transport that the BUNDLE answer then stops: it never receives."""
    return RTCPeerConnection(RTCConfiguration(bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))


def split_candidates(sdp: str) -> tuple[str, list[Candidate]]:
    """The SDP without its candidates, and the candidates as a browser would trickle them."""
    mids = [media.rtp.muxId for media in parse_sdp(sdp).media]
    lines, candidates = [], []
    index = -1
    for line in sdp.splitlines():
        if line.startswith("m="):
            index += 1
        if line.startswith("a=candidate:"):
            text = line.removeprefix("a=")
            candidates.append(Candidate(candidate=text, sdpMid=mids[index], sdpMLineIndex=index))
        elif line != "a=end-of-candidates":
            lines.append(line)
    return "\r\n".join(lines) + "\r\n", candidates


def count_keyframes(receiver: RTCRtpReceiver, received: Received) -> None:
    """Count the keyframes ``receiver`` hands its decoder (libvpx does not mark decoded pictures)."""
    decoder_queue = receiver._RTCRtpReceiver__decoder_queue  # type: ignore[attr-defined]
    put = decoder_queue.put

    def counted(item: Any, *args: Any, **kwargs: Any) -> None:
        if item is not None and is_vp8_keyframe(item[1].data):
            received.keyframes += 1
        put(item, *args, **kwargs)

    decoder_queue.put = counted
