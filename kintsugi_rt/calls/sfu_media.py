"""The SFU's media path: a ``Publication`` per published track, a ``ForwardedTrack`` per subscriber of it.

Forwarding (``"forward"``, the default): the publisher's receiver is tapped (``sfu_aiortc``) and each
complete encoded frame (VP8 or Opus, reassembled by ``sfu_frames`` as soon as it is whole, with its RTP
timestamp counted from the start of the track) is queued to every subscriber's ``ForwardedTrack``; that
subscriber's ``RTCRtpSender`` reads it as an ``av.Packet`` and packetizes it with its own SSRC, sequence
numbers, timestamp origin and VP8 picture ids. Nothing is decoded or encoded. A video subscriber starts
at a keyframe (it could decode nothing before one) and asks the publisher for one when it starts, when
it fell behind, and when its client sends PLI/FIR; requests to a publisher are spaced by
``KEYFRAME_INTERVAL``. Losses are repaired per hop: the SFU NACKs the publisher, each subscriber's
sender answers its NACKs from its own history. What forwarding cannot do: every subscriber gets the
publisher's bitrate (the publisher adapts to the SFU's REMB for its uplink, not to the slowest
subscriber), and simulcast is not supported (a client must send one encoding per track).

Re-encoding (``"reencode"``): the receiver decodes as aiortc does by default; the decoded frames are
queued to every subscriber's track and each subscriber's sender encodes its own copy (one decoder per
published track, one encoder per subscriber). Subscribers then get keyframes from their own encoder and
bitrate adapted to their own REMB feedback, at the cost measured in docs/performance.md.
"""

from __future__ import annotations

import asyncio
import fractions
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import av
from aiortc import RTCRtpReceiver
from aiortc.jitterbuffer import JitterFrame
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from av.frame import Frame

from kintsugi_rt import metrics
from kintsugi_rt.calls import sfu_aiortc, sfu_frames
from kintsugi_rt.calls.sfu_aiortc import CODECS, MediaKind
from kintsugi_rt.logs import get_logger

log = get_logger(__name__)

MediaMode = Literal["forward", "reencode"]

KEYFRAME_INTERVAL = 0.5  # seconds between keyframe requests to one publisher
# Frames a subscriber's queue holds before it is behind: a second of audio, a second of video at 30 fps.
# The queue only grows when the event loop is starved; a slow network is the sender's problem (NACK).
QUEUE_LIMIT: dict[MediaKind, int] = {"audio": 50, "video": 30}
# How long a new video subscriber waits for a keyframe before asking again.
KEYFRAME_WAIT = 1.0


@dataclass(frozen=True, slots=True)
class EncodedFrame:
    """One complete encoded frame of a publication, as the publisher sent it."""

    data: bytes
    timestamp: int  # in the codec's clock (48 kHz Opus, 90 kHz VP8), from 0 at the track's start
    keyframe: bool


Item = EncodedFrame | Frame


def is_vp8_keyframe(data: bytes) -> bool:
    """RFC 6386 9.1: a key frame has the inverse key frame bit clear and the start code 9d 01 2a."""
    return len(data) >= 10 and data[0] & 1 == 0 and data[3:6] == b"\x9d\x01\x2a"


class Publication:
    """One track a participant publishes, fanned out to a ``ForwardedTrack`` per subscriber."""

    def __init__(
        self,
        *,
        owner: str,
        kind: MediaKind,
        receiver: RTCRtpReceiver,
        media_ssrc: int | None,
        mode: MediaMode,
        on_end: Callable[[Publication], None],
    ) -> None:
        self.owner = owner  # the publisher's party id
        self.kind: MediaKind = kind
        self.mode: MediaMode = mode
        self.receiver = receiver
        self.time_base = fractions.Fraction(1, 48000 if kind == "audio" else 90000)
        self.ended = False
        self._closed = False
        self._media_ssrc = media_ssrc
        self._on_end = on_end
        self._tracks: set[ForwardedTrack] = set()
        self._last_keyframe_request = -KEYFRAME_INTERVAL
        self._tasks: set[asyncio.Task[None]] = set()
        self._pump: asyncio.Task[None] | None = None
        self._warned_codec = False
        self._received = metrics.SFU_RECEIVED_FRAMES.labels(kind)

    def start(self) -> None:
        """Begin taking frames from the receiver (call right after ``setRemoteDescription``)."""
        if self.mode == "forward":
            sfu_aiortc.tap_encoded_frames(self.receiver, self._on_encoded, self._receiver_stopped)
            frames = sfu_frames.AudioPackets() if self.kind == "audio" else sfu_frames.VideoFrames()
            sfu_aiortc.replace_jitter_buffer(self.receiver, frames)
        else:
            self._pump = asyncio.ensure_future(self._pump_decoded())

    def subscribe(self) -> ForwardedTrack:
        track = ForwardedTrack(self)
        self._tracks.add(track)
        return track

    def unsubscribe(self, track: ForwardedTrack) -> None:
        self._tracks.discard(track)
        track.stop()

    def request_keyframe(self) -> None:
        """Ask the publisher for a keyframe, unless one was asked for less than KEYFRAME_INTERVAL ago."""
        now = time.monotonic()
        if self.ended or self.kind != "video" or now - self._last_keyframe_request < KEYFRAME_INTERVAL:
            return
        ssrc = self._media_ssrc or self._active_ssrc()
        if ssrc is None:
            return
        self._last_keyframe_request = now
        metrics.SFU_KEYFRAME_REQUESTS.inc()
        task = asyncio.ensure_future(self._send_picture_loss(ssrc))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send_picture_loss(self, ssrc: int) -> None:
        try:
            await sfu_aiortc.send_picture_loss(self.receiver, ssrc)
        except Exception as exc:  # the connection is going: nothing to ask any more
            log.debug("sfu.keyframe_request_failed", owner=self.owner, error=repr(exc))

    def close(self) -> bool:
        """Stop forwarding: every subscriber's track ends (their senders stop reading). False if it
        was closed already."""
        if self._closed:
            return False
        self._closed = self.ended = True
        if self._pump is not None:
            self._pump.cancel()
        for track in list(self._tracks):
            track.stop()
        self._tracks.clear()
        return True

    # --- frames in ------------------------------------------------------------------------------

    def _on_encoded(self, codec: RTCRtpCodecParameters, frame: JitterFrame) -> None:
        if codec.mimeType.lower() != CODECS[self.kind]:
            if not self._warned_codec:
                self._warned_codec = True
                log.warning("sfu.unexpected_codec", owner=self.owner, codec=codec.mimeType)
            return
        keyframe = self.kind == "audio" or is_vp8_keyframe(frame.data)
        self._fan_out(EncodedFrame(data=frame.data, timestamp=frame.timestamp, keyframe=keyframe))

    async def _pump_decoded(self) -> None:
        track = self.receiver.track
        try:
            while True:
                frame = await track.recv()
                if isinstance(frame, Frame):  # a remote track yields nothing else
                    self._fan_out(frame)
        except MediaStreamError:
            self._receiver_stopped()

    def _fan_out(self, item: Item) -> None:
        self._received.inc()
        for track in self._tracks:
            track.push(item)

    def _receiver_stopped(self) -> None:
        if not self.ended:
            self.ended = True
            self._on_end(self)

    def _active_ssrc(self) -> int | None:
        """The publisher's SSRC when its SDP announced none (as seen in the last 10 seconds)."""
        sources = self.receiver.getSynchronizationSources()
        return sources[0].source if sources else None


class ForwardedTrack(MediaStreamTrack):
    """What one subscriber's sender reads: one publication's frames, in order, from its first ``recv``.

    Nothing is queued before the sender starts reading (its connection is up): a video subscriber then
    waits for the next keyframe, which it asks the publisher for.
    """

    def __init__(self, publication: Publication) -> None:
        super().__init__()
        self.kind: MediaKind = publication.kind
        self.publication = publication
        self._queue: deque[Item] = deque()
        self._wakeup = asyncio.Event()
        self._reading = False
        self._wants_keyframe = publication.mode == "forward" and publication.kind == "video"
        self._asked_at = -KEYFRAME_WAIT
        self._forwarded = metrics.SFU_FORWARDED_FRAMES.labels(publication.kind)

    def push(self, item: Item) -> None:
        if not self._reading or self.readyState != "live":
            return
        if len(self._queue) >= QUEUE_LIMIT[self.kind]:
            self._fell_behind()
        self._queue.append(item)
        self._wakeup.set()

    def keyframe_requested(self) -> None:
        """The subscriber's client sent PLI/FIR: pass it on to the publisher."""
        self.publication.request_keyframe()

    def stop(self) -> None:
        super().stop()
        self._queue.clear()
        self._wakeup.set()

    async def recv(self) -> Frame | av.Packet[Any]:
        if not self._reading:
            self._reading = True
            self._ask_for_keyframe()
        while True:
            item = await self._next()
            if isinstance(item, EncodedFrame):
                if self._wants_keyframe and not item.keyframe:
                    metrics.SFU_DROPPED_FRAMES.labels("awaiting_keyframe").inc()
                    self._ask_for_keyframe()
                    continue
                self._wants_keyframe = False
                self._forwarded.inc()
                return self._packet(item)
            self._forwarded.inc()
            return item

    async def _next(self) -> Item:
        while not self._queue:
            if self.readyState != "live":
                raise MediaStreamError
            self._wakeup.clear()
            await self._wakeup.wait()
        if self.readyState != "live":
            raise MediaStreamError
        return self._queue.popleft()

    def _packet(self, frame: EncodedFrame) -> av.Packet[Any]:
        packet = av.Packet(frame.data)
        packet.pts = frame.timestamp
        packet.time_base = self.publication.time_base
        return packet

    def _fell_behind(self) -> None:
        """The sender stopped keeping up: drop what waits (video: until the next keyframe)."""
        metrics.SFU_DROPPED_FRAMES.labels("queue_full").inc(len(self._queue))
        self._queue.clear()
        if self.publication.mode == "forward" and self.kind == "video":
            self._wants_keyframe = True
            self._ask_for_keyframe()

    def _ask_for_keyframe(self) -> None:
        """Ask while waiting for a keyframe, at most once per KEYFRAME_WAIT from this subscriber."""
        now = time.monotonic()
        if self._wants_keyframe and now - self._asked_at >= KEYFRAME_WAIT:
            self._asked_at = now
            self.publication.request_keyframe()
