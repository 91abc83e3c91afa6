"""Where the SFU reaches inside aiortc (written against aiortc 1.16), and the SDP helpers it needs.

aiortc has no public API for encoded media on the receiving side: an ``RTCRtpReceiver`` reassembles
complete encoded frames in its jitter buffer and hands them, through a private ``queue.Queue``, to a
decoder thread. Forwarding without re-encoding needs those frames, and needs keyframe requests (RTCP
PLI/FIR) to travel from a subscriber to the publisher. Five hooks do it, each a small function here,
so an aiortc upgrade has one file to check (``tests/test_sfu.py`` exercises all of them):

- ``tap_encoded_frames``: swap the receiver's decoder queue for a ``_FrameTap`` before the receiver
  starts; complete frames then go to a callback on the event loop and the decoder thread stays idle.
- ``replace_jitter_buffer``: forwarding needs a frame as soon as it is whole, which aiortc's jitter
  buffer (made to feed a decoder) does not give: ``sfu_frames`` has the SFU's stand-ins.
- ``on_keyframe_request``: a sender given encoded packets has no encoder to force a keyframe from, so
  its PLI/FIR handler calls ours instead.
- ``send_picture_loss``: the receiver's own PLI sender, aimed at the publisher's SSRC.
- ``set_stream_id``: the ``msid`` stream id of a sender (aiortc gives every sender of a peer connection
  the same random one), so a subscriber learns whose track it receives.

The sending side needs no hook: ``RTCRtpSender`` packetizes an ``av.Packet`` returned by its track
without encoding it (``Encoder.pack``).
"""

from __future__ import annotations

import queue
from collections.abc import Callable
from typing import Any, Literal, Protocol

from aiortc import RTCPeerConnection, RTCRtpReceiver, RTCRtpSender, RTCRtpTransceiver
from aiortc.jitterbuffer import JitterFrame
from aiortc.rtcicetransport import RTCIceCandidate
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import RtpPacket
from aiortc.sdp import SessionDescription, candidate_from_sdp

from kintsugi_rt.calls.frames import Candidate
from kintsugi_rt.logs import get_logger

log = get_logger(__name__)

MediaKind = Literal["audio", "video"]
FrameSink = Callable[[RTCRtpCodecParameters, JitterFrame], None]

# The codecs the SFU negotiates. A forwarded frame reaches subscribers in the publisher's codec, so
# both ends must use the same one: Opus and VP8, which every WebRTC browser supports.
CODECS: dict[MediaKind, str] = {"audio": "audio/opus", "video": "video/vp8"}
_RTX = "video/rtx"

_DECODER_QUEUE = "_RTCRtpReceiver__decoder_queue"
_JITTER_BUFFER = "_RTCRtpReceiver__jitter_buffer"
_DECODER_THREAD = "_RTCRtpReceiver__decoder_thread"


class AiortcMismatch(RuntimeError):
    """The installed aiortc no longer looks like the version these hooks were written for."""


class _FrameTap(queue.Queue[Any]):
    """Stands in for a receiver's decoder queue.

    The receiver puts ``(codec, JitterFrame)`` here from its RTP handler, on the event loop: each goes
    to ``sink`` at once. ``None`` (the receiver stopping) still reaches the idle decoder thread, which
    then exits, and tells ``on_end``.
    """

    def __init__(self, sink: FrameSink, on_end: Callable[[], None]) -> None:
        super().__init__()
        self._sink = sink
        self._on_end = on_end

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        if item is None:
            super().put(None)
            self._on_end()
            return
        codec, frame = item
        try:
            self._sink(codec, frame)
        except Exception:  # raised into aiortc's receive loop, it would close the whole connection
            log.exception("sfu.frame_sink_failed")


def tap_encoded_frames(receiver: RTCRtpReceiver, sink: FrameSink, on_end: Callable[[], None]) -> None:
    """Send ``receiver``'s complete encoded frames to ``sink`` instead of decoding them.

    Must run before the receiver starts (``RTCRtpReceiver.receive``, which aiortc calls once the
    answer is applied and DTLS is up): right after ``setRemoteDescription`` of the offer that created it.
    """
    if not hasattr(receiver, _DECODER_QUEUE) or not hasattr(receiver, _DECODER_THREAD):
        raise AiortcMismatch("RTCRtpReceiver has no decoder queue: the SFU's frame tap needs aiortc 1.16")
    if getattr(receiver, _DECODER_THREAD) is not None:
        raise AiortcMismatch("the receiver started before its frame tap was installed")
    setattr(receiver, _DECODER_QUEUE, _FrameTap(sink, on_end))


class JitterBuffer(Protocol):
    """What a receiver needs of its jitter buffer (``sfu_frames`` has the SFU's)."""

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]: ...


def replace_jitter_buffer(receiver: RTCRtpReceiver, buffer: JitterBuffer) -> None:
    """Reassemble ``receiver``'s frames with ``buffer`` (before its first packet)."""
    if not hasattr(receiver, _JITTER_BUFFER):
        raise AiortcMismatch(
            "RTCRtpReceiver has no jitter buffer: the SFU's frame assembly needs aiortc 1.16"
        )
    setattr(receiver, _JITTER_BUFFER, buffer)


def on_keyframe_request(sender: RTCRtpSender, callback: Callable[[], None]) -> None:
    """Call ``callback`` when the remote end asks ``sender`` for a keyframe (RTCP PLI or FIR)."""
    if not callable(getattr(sender, "_send_keyframe", None)):
        raise AiortcMismatch("RTCRtpSender has no _send_keyframe: the SFU's keyframe hook needs aiortc 1.16")
    sender._send_keyframe = callback  # type: ignore[method-assign]


async def send_picture_loss(receiver: RTCRtpReceiver, media_ssrc: int) -> None:
    """Ask the remote sender of ``media_ssrc`` for a keyframe (RTCP PLI, RFC 4585 6.3.1)."""
    await receiver._send_rtcp_pli(media_ssrc)


def set_stream_id(sender: RTCRtpSender, stream_id: str) -> None:
    """The stream id the next offer gives this sender's track (``a=msid:<stream id> <track id>``)."""
    sender._stream_id = stream_id


# --- codecs ---------------------------------------------------------------------------------------


def prefer_sfu_codecs(transceiver: RTCRtpTransceiver) -> None:
    """Negotiate only the SFU's codec for this transceiver's kind (and RTX for video)."""
    wanted = {CODECS["audio"] if transceiver.kind == "audio" else CODECS["video"], _RTX}
    capabilities = RTCRtpSender.getCapabilities(transceiver.kind).codecs
    transceiver.setCodecPreferences([c for c in capabilities if c.mimeType.lower() in wanted])


def add_receiving_transceivers(pc: RTCPeerConnection, offer: SessionDescription) -> None:
    """One recvonly transceiver, with the SFU's codecs, for each new audio or video section of ``offer``.

    ``setRemoteDescription`` takes existing transceivers without a mid for new sections, in order; a
    transceiver it creates itself could not have codec preferences before the codecs are chosen.
    """
    known = {t.mid for t in pc.getTransceivers() if t.mid is not None}
    for media in offer.media:
        if media.kind in CODECS and media.rtp.muxId not in known:
            prefer_sfu_codecs(pc.addTransceiver(media.kind, direction="recvonly"))


# --- SDP ------------------------------------------------------------------------------------------


def parse_sdp(sdp: str) -> SessionDescription:
    """Parse an SDP (``ValueError`` if it is not one)."""
    try:
        return SessionDescription.parse(sdp)
    except (ValueError, IndexError, KeyError, AssertionError) as exc:
        raise ValueError(f"unparseable SDP ({exc!r})") from None


def media_sections(description: SessionDescription) -> int:
    """How many audio and video sections the description has."""
    return sum(1 for m in description.media if m.kind in CODECS)


def ice_ufrag(description: SessionDescription) -> str | None:
    """The ICE username fragment: a new one means a new connection (aiortc cannot restart ICE)."""
    for media in description.media:
        if media.ice is not None and media.ice.usernameFragment:
            return media.ice.usernameFragment
    return None


def remote_ssrc(description: SessionDescription, mid: str | None) -> int | None:
    """The SSRC the remote end sends section ``mid`` with (the first of an FID group: not its RTX)."""
    for media in description.media:
        if media.rtp.muxId != mid:
            continue
        for group in media.ssrc_group:
            if group.semantic == "FID" and group.items:
                return int(group.items[0])
        return media.ssrc[0].ssrc if media.ssrc else None
    return None


def ice_candidate(candidate: Candidate) -> RTCIceCandidate | None:
    """aiortc's form of a trickled candidate; ``None`` for the empty one that ends the candidates."""
    text = candidate.candidate.strip().removeprefix("a=").removeprefix("candidate:")
    if not text:
        return None
    if len(text.split()) < 8:
        raise ValueError("not an ICE candidate")
    parsed = candidate_from_sdp(text)
    parsed.sdpMid = candidate.sdpMid
    parsed.sdpMLineIndex = candidate.sdpMLineIndex
    if parsed.sdpMid is None and parsed.sdpMLineIndex is None:
        parsed.sdpMLineIndex = 0
    return parsed
