"""Whole encoded frames from a publisher's RTP packets, as soon as they are whole: the SFU's stand-ins
for aiortc's jitter buffer on the receivers it forwards from (``sfu_aiortc.replace_jitter_buffer``).

aiortc's buffer feeds a decoder: it hands a frame on when the next frame's first packet arrives (one
frame late: 33 ms at 30 fps), holds audio four packets back (80 ms), and when a video packet never
comes it waits until 512 packets later (seconds). Forwarding needs none of that: the subscriber's own
jitter buffer smooths the stream. Both classes keep aiortc's interface: ``add(packet)`` returns
``(ask for a keyframe, frame or None)``; a packet's payload is already depayloaded in ``packet._data``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from aiortc.jitterbuffer import JitterFrame
from aiortc.rtp import RtpPacket
from aiortc.utils import uint16_add, uint16_gt

GAP_WAIT = (
    0.3  # seconds a missing video packet may take (a NACK's retransmission) before its frame is given up
)
MAX_PACKETS = 512  # video packets held at most: 650 kB, more than a 1080p keyframe


def _payload(packet: RtpPacket) -> bytes:
    data: bytes = packet._data  # type: ignore[attr-defined]  # set by the receiver (depayloaded)
    return data


MAX_MISORDER = 100  # packets: one further behind starts a new sequence (the sender restarted), as in aiortc


def _newer(sequence_number: int, than: int) -> bool:
    return uint16_gt(sequence_number, than)


def _restarted(sequence_number: int, expected: int) -> bool:
    """Far behind where the stream was: a new sequence (a new SSRC), not a late packet."""
    return MAX_MISORDER < (expected - sequence_number) % 65536 <= 32768


class AudioPackets:
    """Audio: an Opus packet is a whole frame, passed on as it arrives.

    A packet older than the last one passed on is dropped: the subscriber's jitter buffer has moved
    past it, and aiortc would read its older timestamp as the timestamp wrapping around.
    """

    def __init__(self) -> None:
        self._last: int | None = None

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        number = packet.sequence_number
        if self._last is not None and not _newer(number, self._last) and not _restarted(number, self._last):
            return False, None
        self._last = packet.sequence_number
        return False, JitterFrame(data=_payload(packet), timestamp=packet.timestamp)


class VideoFrames:
    """Video: a frame is whole when its packets, from the one after the previous frame's last to the
    one with the marker bit (RFC 7741), are all in; it is passed on at once.

    When a gap stays open longer than ``GAP_WAIT`` (the retransmission asked for by NACK did not come),
    or ``MAX_PACKETS`` wait behind it, the frame is given up: everything held is dropped, packets are
    skipped until the next frame boundary (a marker bit), and a keyframe is asked for, since the frames
    after a lost one do not decode without one.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._packets: dict[int, RtpPacket] = {}
        self._next: int | None = None  # sequence number of the next frame's first packet
        self._resync = False  # after giving a frame up: wait for a frame boundary
        self._newest: int | None = None
        self._gap_since: float | None = None

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        number = packet.sequence_number
        if self._newest is not None and _restarted(number, self._newest):
            self._reset()
        if self._newest is None or _newer(number, self._newest):
            self._newest = number
        if self._resync:
            if packet.marker and number == self._newest:  # not a late one from before the boundary
                self._resync = False
                self._next = uint16_add(number, 1)
            return False, None
        if self._next is None:
            self._next = number
        if number != self._next and not _newer(number, self._next):
            return False, None  # late or repeated: its frame went out (or was given up) already
        self._packets[number] = packet
        frame, gap = self._whole_frame()
        if frame is not None or not gap:
            self._gap_since = None
            return False, frame
        now = self._clock()
        if self._gap_since is None:
            self._gap_since = now
        if now - self._gap_since > GAP_WAIT or len(self._packets) >= MAX_PACKETS:
            self._give_up()
            return True, None
        return False, None

    def _whole_frame(self) -> tuple[JitterFrame | None, bool]:
        """The next frame if all its packets are in; else whether packets wait behind a missing one."""
        assert self._next is not None
        parts: list[RtpPacket] = []
        number = self._next
        while (packet := self._packets.get(number)) is not None:
            parts.append(packet)
            if packet.marker:
                for part in parts:
                    del self._packets[part.sequence_number]
                self._next = uint16_add(number, 1)
                data = b"".join(_payload(part) for part in parts)
                return JitterFrame(data=data, timestamp=parts[0].timestamp), False
            number = uint16_add(number, 1)
        return None, len(parts) < len(self._packets)

    def _give_up(self) -> None:
        self._packets.clear()
        self._gap_since = None
        self._resync = True

    def _reset(self) -> None:
        """The sender restarted its sequence: start over at its next packet."""
        self._packets.clear()
        self._next = self._newest = self._gap_since = None
        self._resync = False
