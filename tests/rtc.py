"""A WebRTC test peer (aiortc) that sends a tone and a moving pattern and counts what it receives.

    a = Peer("ann", ice_servers=servers, relay_only=True)
    b = Peer("bob", ice_servers=servers, relay_only=True)
    await b.accept_answer(await a.accept_offer(await b.create_offer()))  # or through call.signal
    await a.frames_received("video", at_least=10)
    assert a.selected_candidate_type() == "relay"

aiortc gathers every candidate before ``setLocalDescription`` returns, so the SDP a ``Peer`` hands out
already holds its candidates (and ``a=end-of-candidates``); ``local_candidates()`` lists them as
``call.signal`` ``Candidate`` payloads for tests of trickled ICE, and ``add_ice_candidate`` applies one.

Relay-only ICE is the standard ``RTCConfiguration(iceTransportPolicy=RTCIceTransportPolicy.RELAY)``,
which aiortc (checked with 1.16) passes to aioice as ``TransportPolicy.RELAY``: no host or server-reflexive
candidates are gathered, only the TURN allocation, so a connection can only go through the relay.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from aiortc import (
    AudioStreamTrack,
    MediaStreamTrack,
    RTCConfiguration,
    RTCIceServer,
    RTCIceTransportPolicy,
    RTCPeerConnection,
    RTCSessionDescription,
    VideoStreamTrack,
)
from aiortc.mediastreams import MediaStreamError
from aiortc.sdp import candidate_from_sdp
from av import AudioFrame, VideoFrame

from kintsugi_rt.calls.frames import Candidate, IceServer

Kind = Literal["audio", "video"]


class ToneTrack(AudioStreamTrack):
    """A sine tone, 48 kHz mono, 20 ms frames, paced in real time. One second of samples is computed
    once (a whole number of periods, so it loops without a click); each frame is a slice of it."""

    SAMPLE_RATE = 48_000
    SAMPLES = 960  # 20 ms

    def __init__(self, hz: int = 440, amplitude: float = 0.2) -> None:
        super().__init__()
        peak = int(32767 * amplitude)
        samples = (
            round(peak * math.sin(2 * math.pi * hz * n / self.SAMPLE_RATE)) for n in range(self.SAMPLE_RATE)
        )
        self._second = b"".join(s.to_bytes(2, "little", signed=True) for s in samples)
        self._pts = 0
        self._began: float | None = None

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._began is None:
            self._began = time.monotonic()
        else:
            self._pts += self.SAMPLES
            await asyncio.sleep(self._began + self._pts / self.SAMPLE_RATE - time.monotonic())
        frame = AudioFrame(format="s16", layout="mono", samples=self.SAMPLES)
        offset = (self._pts * 2) % len(self._second)
        chunk = self._second[offset : offset + self.SAMPLES * 2]
        plane = frame.planes[0]
        plane.update(chunk + bytes(plane.buffer_size - len(chunk)))
        frame.pts = self._pts
        frame.sample_rate = self.SAMPLE_RATE
        frame.time_base = fractions.Fraction(1, self.SAMPLE_RATE)
        return frame


class PatternTrack(VideoStreamTrack):
    """A small grey frame with a white bar sweeping across it (yuv420p), at ``fps`` frames a second.
    The luma planes of one sweep are computed once; each frame copies one in."""

    def __init__(self, width: int = 160, height: int = 120, fps: int = 15, positions: int = 16) -> None:
        super().__init__()
        self.width, self.height, self.fps = width, height, fps
        bar = max(1, width // positions)
        self._lumas = [
            b"".join(bytes(80 if x // bar != i else 235 for x in range(width)) for _ in range(height))
            for i in range(positions)
        ]
        self._chroma = bytes([128]) * ((width // 2) * (height // 2))
        self._count = 0
        self._began: float | None = None

    async def recv(self) -> VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._began is None:
            self._began = time.monotonic()
        else:
            self._count += 1
            await asyncio.sleep(self._began + self._count / self.fps - time.monotonic())
        frame = VideoFrame(width=self.width, height=self.height, format="yuv420p")
        luma, u, v = frame.planes
        _fill(luma, self._lumas[self._count % len(self._lumas)], self.width)
        _fill(u, self._chroma, self.width // 2)
        _fill(v, self._chroma, self.width // 2)
        frame.pts = self._count * (90_000 // self.fps)
        frame.time_base = fractions.Fraction(1, 90_000)
        return frame


def _fill(plane: Any, data: bytes, width: int) -> None:
    """Copy tightly packed rows into a plane whose rows may be padded to ``line_size``."""
    line_size: int = plane.line_size
    if line_size != width:
        pad = bytes(line_size - width)
        data = b"".join(data[row : row + width] + pad for row in range(0, len(data), width))
    plane.update(data)


def rtc_ice_servers(servers: Iterable[IceServer | RTCIceServer]) -> list[RTCIceServer]:
    """Our ``IceServer`` payloads (from ``call.start`` / ``ice_servers()``) as aiortc's ``RTCIceServer``.

    aiortc uses at most one STUN and one TURN url (the first it can use: turn with udp/tcp, turns/tcp).
    """
    out = []
    for server in servers:
        if isinstance(server, RTCIceServer):
            out.append(server)
        else:
            out.append(
                RTCIceServer(urls=list(server.urls), username=server.username, credential=server.credential)
            )
    return out


@dataclass
class SelectedPair:
    """The nominated ICE candidate pair: each side's candidate type and address."""

    local_type: str
    remote_type: str
    local_address: tuple[str, int]
    remote_address: tuple[str, int]


class Peer:
    """One aiortc ``RTCPeerConnection`` with a tone and a moving pattern, counting received frames.

    ``ice_servers``: our ``IceServer`` payloads or aiortc ``RTCIceServer``s (none: host candidates only,
    not aiortc's default Google STUN). ``relay_only``: ICE transport policy "relay". ``audio`` /
    ``video``: send a tone / a pattern (sendrecv); ``receive_only``: kinds to receive without sending
    (a recvonly transceiver each, e.g. a listener in an SFU room).

    With no local candidate (relay-only, and the TURN server refused the allocation) aiortc never
    starts ICE: connectionState stays "new" rather than turning "failed" as a browser's would.
    """

    def __init__(
        self,
        name: str = "peer",
        *,
        ice_servers: Sequence[IceServer | RTCIceServer] = (),
        relay_only: bool = False,
        audio: bool = True,
        video: bool = True,
        receive_only: Iterable[Kind] = (),
    ) -> None:
        self.name = name
        policy = RTCIceTransportPolicy.RELAY if relay_only else RTCIceTransportPolicy.ALL
        self.pc = RTCPeerConnection(
            RTCConfiguration(iceServers=rtc_ice_servers(ice_servers), iceTransportPolicy=policy)
        )
        self.local_tracks: list[MediaStreamTrack] = []
        if audio:
            self.local_tracks.append(ToneTrack())
        if video:
            self.local_tracks.append(PatternTrack())
        for track in self.local_tracks:
            self.pc.addTrack(track)
        for kind in receive_only:
            self.pc.addTransceiver(kind, direction="recvonly")
        self.remote_tracks: dict[str, MediaStreamTrack] = {}
        self.frames: dict[str, int] = {}  # remote track id -> frames received
        self.states: list[str] = []  # every connectionState this peer went through
        self._changed = asyncio.Condition()
        self._readers: set[asyncio.Task[None]] = set()
        self.pc.on("track", self._on_track)
        self.pc.on("connectionstatechange", self._on_state)

    # --- signaling ---------------------------------------------------------------------------------

    async def create_offer(self) -> str:
        """Create the offer, set it as the local description, and return its SDP (with candidates)."""
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return self.pc.localDescription.sdp

    async def accept_offer(self, sdp: str) -> str:
        """Apply a remote offer, answer it, and return the answer's SDP (with candidates)."""
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        return self.pc.localDescription.sdp

    async def accept_answer(self, sdp: str) -> None:
        """Apply the remote answer to our offer."""
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))

    async def set_remote_description(self, sdp: str, kind: Literal["offer", "answer"]) -> str | None:
        """Apply remote SDP of either kind; for an offer, answer it and return the answer's SDP."""
        if kind == "offer":
            return await self.accept_offer(sdp)
        await self.accept_answer(sdp)
        return None

    def local_candidates(self) -> list[Candidate]:
        """Our gathered candidates, as ``call.signal`` payloads (``RTCIceCandidateInit``), from the SDP."""
        description = self.pc.localDescription
        if description is None:
            return []
        found: list[Candidate] = []
        index, mid = -1, None
        for line in description.sdp.splitlines():
            if line.startswith("m="):
                index, mid = index + 1, None
            elif line.startswith("a=mid:"):
                mid = line[len("a=mid:") :]
            elif line.startswith("a=candidate:") and index >= 0:
                found.append(Candidate(candidate=line[2:], sdpMid=mid, sdpMLineIndex=index))
        return found

    async def add_ice_candidate(self, candidate: Candidate | None) -> None:
        """Apply a remote candidate (``candidate:...`` as browsers send it); ``None``: end of candidates."""
        if candidate is None:
            await self.pc.addIceCandidate(None)
            return
        text = candidate.candidate.strip()
        if not text:  # a browser's empty candidate means end of candidates
            await self.pc.addIceCandidate(None)
            return
        parsed = candidate_from_sdp(text.removeprefix("a=").removeprefix("candidate:"))
        parsed.sdpMid = candidate.sdpMid
        parsed.sdpMLineIndex = candidate.sdpMLineIndex
        await self.pc.addIceCandidate(parsed)

    # --- what happened -----------------------------------------------------------------------------

    @property
    def connection_state(self) -> str:
        return str(self.pc.connectionState)

    async def connected(self, timeout: float = 10.0) -> None:
        """Wait for connectionState "connected"; AssertionError if it fails or takes longer."""
        state = await self.wait_state({"connected", "failed", "closed"}, timeout)
        if state != "connected":
            raise AssertionError(f"{self.name}: connection {state} (states: {self.states})")

    async def wait_state(self, states: set[str], timeout: float = 10.0) -> str:
        """Wait until connectionState is one of ``states``; return it (AssertionError on timeout)."""
        try:
            async with asyncio.timeout(timeout), self._changed:
                await self._changed.wait_for(lambda: self.connection_state in states)
        except TimeoutError:
            raise AssertionError(
                f"{self.name}: connection still {self.connection_state} after {timeout:.0f} s, "
                f"not {sorted(states)} (states: {self.states})"
            ) from None
        return self.connection_state

    def counts(self, kind: Kind) -> list[int]:
        """Frames received so far on each remote track of ``kind``."""
        return [self.frames[tid] for tid, track in self.remote_tracks.items() if track.kind == kind]

    async def frames_received(
        self, kind: Kind, *, at_least: int = 1, tracks: int = 1, timeout: float = 10.0
    ) -> list[int]:
        """Wait until ``tracks`` remote tracks of ``kind`` have each received ``at_least`` frames;
        return the counts of every remote track of that kind (AssertionError on timeout)."""

        def enough() -> bool:
            return sum(1 for n in self.counts(kind) if n >= at_least) >= tracks

        try:
            async with asyncio.timeout(timeout), self._changed:
                await self._changed.wait_for(enough)
        except TimeoutError:
            raise AssertionError(
                f"{self.name}: {kind} frames per remote track {self.counts(kind)} after {timeout:.0f} s, "
                f"wanted {tracks} track(s) with {at_least} (connection {self.connection_state})"
            ) from None
        return self.counts(kind)

    def selected_pair(self) -> SelectedPair | None:
        """The nominated candidate pair of the (first) ICE transport, or None before one is nominated.

        aiortc reports no candidate-pair stats; this reads aioice's private ``Connection._nominated``
        (aioice 0.13), reached through the public transceiver -> DTLS -> ICE transports.
        """
        for transceiver in self.pc.getTransceivers():
            dtls = transceiver.receiver.transport
            if dtls is None:
                continue
            nominated: dict[int, Any] = getattr(dtls.transport._connection, "_nominated", {})
            pair = nominated.get(1)
            if pair is not None:
                local, remote = pair.local_candidate, pair.remote_candidate
                return SelectedPair(
                    local.type, remote.type, (local.host, local.port), (remote.host, remote.port)
                )
        return None

    def selected_candidate_type(self) -> str | None:
        """The local candidate type of the selected pair ("host", "srflx", "prflx", "relay"), as
        ``call.stats.candidate_type`` reports it; None before a pair is selected."""
        pair = self.selected_pair()
        return pair.local_type if pair else None

    async def close(self) -> None:
        await self.pc.close()
        for task in list(self._readers):
            task.cancel()
        for task in list(self._readers):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for track in self.local_tracks:
            track.stop()

    async def __aenter__(self) -> Peer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- internals ---------------------------------------------------------------------------------

    def _on_track(self, track: MediaStreamTrack) -> None:
        self.remote_tracks[track.id] = track
        self.frames[track.id] = 0
        task = asyncio.create_task(self._read(track), name=f"{self.name}-{track.kind}-{track.id}")
        self._readers.add(task)
        task.add_done_callback(self._readers.discard)

    async def _read(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                await track.recv()
            except MediaStreamError:
                return
            self.frames[track.id] += 1
            await self._notify()

    async def _on_state(self) -> None:
        self.states.append(self.connection_state)
        await self._notify()

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()
