"""The built-in SFU with real aiortc peers: media over UDP on this machine, signaling in memory through a
shim that plays the call service (tests/rtc_sfu_peers.py). Each peer's tone and colour are its own, so
"receives" below means: decoded frames arrive whose tone and colour are the publisher's."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
from aiortc.rtp import RtpPacket

from kintsugi_rt.calls import sfu as sfu_module
from kintsugi_rt.calls.sfu import Sfu, SfuFull
from kintsugi_rt.calls.sfu_frames import GAP_WAIT, AudioPackets, VideoFrames
from kintsugi_rt.calls.sfu_media import KEYFRAME_INTERVAL, MediaMode, is_vp8_keyframe
from tests.rtc_sfu_peers import SfuPeer, Signaling

# name: (tone in Hz, chroma u, chroma v)
LOOKS = {"ann": (300.0, 60, 200), "bob": (700.0, 200, 60), "cyd": (1500.0, 90, 90), "dee": (2500.0, 180, 180)}


async def eventually(check: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.05)


@asynccontextmanager
async def sfu_call(
    max_participants: int = 10, media_mode: MediaMode = "forward"
) -> AsyncIterator[tuple[Sfu, Signaling]]:
    signaling = Signaling()
    sfu = Sfu(max_participants=max_participants, send=signaling.send, media_mode=media_mode)
    signaling.sfu = sfu
    try:
        yield sfu, signaling
        for peer in signaling.peers.values():
            assert peer.errors == [], f"{peer.party_id}: {peer.errors}"
    finally:
        for peer in list(signaling.peers.values()):
            await peer.close()
        await sfu.close()


def make_peer(signaling: Signaling, name: str, *, trickle: bool = False) -> SfuPeer:
    frequency, u, v = LOOKS[name]
    return SfuPeer(signaling, name, frequency=frequency, u=u, v=v, trickle=trickle)


def receives(subscriber: SfuPeer, publisher: SfuPeer, *, video_frames: int = 10) -> bool:
    """``subscriber`` decodes ``publisher``'s picture (its colour) and tone (its frequency)."""
    videos = subscriber.tracks_from(publisher.party_id, "video")
    audios = subscriber.tracks_from(publisher.party_id, "audio")
    if len(videos) != 1 or len(audios) != 1:
        return False
    video, audio = videos[0], audios[0]
    return (
        video.frames >= video_frames
        and abs(video.u - publisher.u) < 8
        and abs(video.v - publisher.v) < 8
        and audio.frames >= 25
        and abs(audio.frequency - publisher.frequency) < 0.15 * publisher.frequency
    )


def all_receive(peers: list[SfuPeer]) -> bool:
    return all(receives(a, b) for a in peers for b in peers if a is not b)


async def test_three_peers_receive_each_other_and_go_on_when_one_leaves() -> None:
    async with sfu_call() as (sfu, signaling):
        ann, cyd = make_peer(signaling, "ann"), make_peer(signaling, "cyd")
        bob = make_peer(signaling, "bob", trickle=True)  # its candidates come as ice signals
        peers = [ann, bob, cyd]
        for peer in peers:
            await peer.join()
        await eventually(lambda: all_receive(peers), "each peer decodes the other two's tone and picture")
        assert sfu.participants == 3

        await sfu.leave(signaling.call_id, cyd.party_id)
        await cyd.close()
        assert sfu.participants == 2
        await eventually(
            lambda: not ann.tracks_from("cyd", "video") and not bob.tracks_from("cyd", "audio"),
            "cyd's tracks are offered inactive to ann and bob",
        )
        seen = {
            (a.party_id, b.party_id): a.frames_from(b.party_id, "video") for a, b in ((ann, bob), (bob, ann))
        }
        await eventually(
            lambda: all(
                a.frames_from(b, "video") >= n + 30
                for (a_id, b), n in seen.items()
                for a in peers
                if a.party_id == a_id
            ),
            "ann and bob keep receiving each other's pictures",
        )
        assert receives(ann, bob) and receives(bob, ann)

        await sfu.end(signaling.call_id)
        assert sfu.participants == 0
        assert ann.pub is not None
        await eventually(
            lambda: ann.pub is not None and ann.pub.connectionState == "closed",
            "ending closes ann's connection",
        )


async def test_a_late_joiner_gets_the_existing_tracks_and_a_first_picture() -> None:
    async with sfu_call() as (sfu, signaling):
        ann, bob = make_peer(signaling, "ann"), make_peer(signaling, "bob")
        for peer in (ann, bob):
            await peer.join()
        await eventually(lambda: all_receive([ann, bob]), "ann and bob receive each other")
        # Their encoders' first keyframes are long gone (the next is 100 s away): dee's first picture
        # needs the SFU to ask each of them for one.
        await asyncio.sleep(1.0)
        asked = ann.keyframe_requests, bob.keyframe_requests

        dee = make_peer(signaling, "dee")
        await dee.join()
        await eventually(
            lambda: all_receive([ann, bob, dee]), "dee receives ann and bob, and they receive dee"
        )
        assert ann.keyframe_requests > asked[0] and bob.keyframe_requests > asked[1]
        assert sfu.participants == 3


async def test_a_keyframe_request_from_a_subscriber_reaches_the_publisher() -> None:
    async with sfu_call() as (_, signaling):
        ann, bob = make_peer(signaling, "ann"), make_peer(signaling, "bob")
        for peer in (ann, bob):
            await peer.join()
        await eventually(lambda: receives(bob, ann), "bob receives ann")
        await asyncio.sleep(KEYFRAME_INTERVAL)  # past the SFU's spacing of requests to ann
        (video,) = bob.tracks_from("ann", "video")
        requests, keyframes = ann.keyframe_requests, video.keyframes

        await bob.request_keyframe("ann")
        await eventually(
            lambda: ann.keyframe_requests > requests and video.keyframes > keyframes,
            "ann's sender is asked for a keyframe and bob decodes a new one",
        )


async def test_the_participant_past_the_maximum_is_refused() -> None:
    async with sfu_call(max_participants=2) as (sfu, signaling):
        ann, bob = make_peer(signaling, "ann"), make_peer(signaling, "bob")
        await ann.join()
        assert sfu.has_room(1) and not sfu.has_room(2)
        await bob.join()
        assert sfu.participants == 2 and not sfu.has_room()

        cyd = make_peer(signaling, "cyd")
        with pytest.raises(SfuFull):
            await cyd.join()
        await cyd.close()
        assert sfu.participants == 2

        await sfu.leave(signaling.call_id, ann.party_id)
        await ann.close()
        assert sfu.participants == 1 and sfu.has_room()
        cyd = make_peer(signaling, "cyd")
        await cyd.join()
        assert sfu.participants == 2
        await eventually(
            lambda: all_receive([bob, cyd]), "bob and cyd, let in after ann left, receive each other"
        )


async def test_malformed_and_stray_signals_are_dropped() -> None:
    async with sfu_call() as (sfu, signaling):
        await signaling.to_sfu("eve", "sfu", "offer", "v=0\r\nthis is no SDP\r\n")
        assert sfu.participants == 0  # refused, and its place given back
        await signaling.to_sfu("eve", "sfu/sub", "answer", "v=0\r\n")  # not in the call: ignored
        await signaling.to_sfu("eve", "sfu/elsewhere", "renegotiate")
        assert sfu.participants == 0

        ann = make_peer(signaling, "ann")
        await ann.join()
        assert sfu.participants == 1
        await signaling.to_sfu("ann", "sfu/sub", "answer", "v=0\r\n")  # no offer of the SFU awaits it
        await sfu.end(signaling.call_id)
        await signaling.to_sfu("zed", "sfu", "offer", "v=0\r\n")  # the call is over
        assert sfu.participants == 0


async def test_reencoding_mode_forwards_decoded_and_reencoded_media() -> None:
    async with sfu_call(media_mode="reencode") as (_, signaling):
        ann, bob = make_peer(signaling, "ann"), make_peer(signaling, "bob")
        for peer in (ann, bob):
            await peer.join()
        await eventually(
            lambda: all_receive([ann, bob]), "ann and bob receive each other through the encoders"
        )


# --- frame assembly (sfu_frames): whole frames as soon as they are whole -----------------------------


def rtp(number: int, timestamp: int, data: bytes, *, marker: bool = False) -> RtpPacket:
    packet = RtpPacket(
        payload_type=97, sequence_number=number % 65536, timestamp=timestamp, marker=int(marker)
    )
    packet._data = data  # type: ignore[attr-defined]  # as the receiver sets it (depayloaded)
    return packet


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_video_frame_goes_out_when_its_marked_packet_closes_it_whatever_the_order() -> None:
    frames = VideoFrames()
    assert frames.add(rtp(65535, 3000, b"a")) == (False, None)
    assert frames.add(rtp(1, 3000, b"c", marker=True)) == (False, None)  # 0 is missing
    asked, frame = frames.add(rtp(0, 3000, b"b"))  # across the wrap of sequence numbers
    assert not asked and frame is not None and (frame.data, frame.timestamp) == (b"abc", 3000)
    asked, frame = frames.add(rtp(2, 6000, b"d", marker=True))
    assert frame is not None and frame.data == b"d"
    assert frames.add(rtp(1, 3000, b"c", marker=True)) == (False, None)  # repeated: gone already


def test_a_video_gap_that_stays_open_gives_the_frame_up_and_asks_for_a_keyframe() -> None:
    clock = Clock()
    frames = VideoFrames(clock)
    assert frames.add(rtp(10, 3000, b"a")) == (False, None)
    assert frames.add(rtp(12, 3000, b"c", marker=True)) == (False, None)  # 11 lost
    clock.now = GAP_WAIT / 2
    assert frames.add(rtp(13, 6000, b"d", marker=True)) == (False, None)  # still hoping for 11
    clock.now = GAP_WAIT * 1.5
    assert frames.add(rtp(14, 9000, b"e")) == (True, None)  # given up: ask for a keyframe
    assert frames.add(rtp(11, 3000, b"b")) == (False, None)  # too late now
    assert frames.add(rtp(15, 9000, b"f", marker=True)) == (False, None)  # the boundary it waited for
    asked, frame = frames.add(rtp(16, 12000, b"g", marker=True))
    assert not asked and frame is not None and frame.data == b"g"


def test_audio_packets_go_out_at_once_and_late_ones_are_dropped() -> None:
    packets = AudioPackets()
    _, frame = packets.add(rtp(7, 960, b"x"))
    assert frame is not None and (frame.data, frame.timestamp) == (b"x", 960)
    _, frame = packets.add(rtp(9, 2880, b"z"))
    assert frame is not None and frame.data == b"z"
    assert packets.add(rtp(8, 1920, b"y")) == (False, None)


def test_vp8_keyframes_are_told_from_their_header() -> None:
    keyframe = bytes([0x10, 0x02, 0x00, 0x9D, 0x01, 0x2A, 0x80, 0x02, 0x68, 0x01])  # 640x360
    assert is_vp8_keyframe(keyframe)
    assert not is_vp8_keyframe(bytes([keyframe[0] | 1]) + keyframe[1:])  # inter frame bit
    assert not is_vp8_keyframe(keyframe[:6])


def test_a_sequence_far_behind_is_a_restart_not_late_packets() -> None:
    frames, packets = VideoFrames(), AudioPackets()
    assert frames.add(rtp(40000, 3000, b"a", marker=True))[1] is not None
    assert packets.add(rtp(40000, 960, b"a"))[1] is not None
    assert frames.add(rtp(39990, 3000, b"late", marker=True)) == (False, None)  # late: dropped
    assert packets.add(rtp(39990, 960, b"late")) == (False, None)
    _, frame = frames.add(rtp(30000, 123, b"new", marker=True))  # a new sender's sequence
    assert frame is not None and frame.data == b"new"
    _, frame = packets.add(rtp(30000, 123, b"new"))
    assert frame is not None and frame.data == b"new"


async def test_a_device_that_closes_its_connections_is_taken_out_without_leave() -> None:
    async with sfu_call() as (sfu, signaling):
        peers = [make_peer(signaling, name) for name in ("ann", "bob", "cyd")]
        ann, bob, cyd = peers
        for peer in peers:
            await peer.join()
        await eventually(lambda: all_receive(peers), "all three receive each other")

        await cyd.close()  # its socket is on another node: the SFU hears only DTLS close
        await eventually(lambda: sfu.participants == 2, "the SFU takes cyd out")
        await eventually(
            lambda: not ann.tracks_from("cyd", "video") and not bob.tracks_from("cyd", "video"),
            "cyd's tracks are offered inactive to the others",
        )
        assert receives(ann, bob) and receives(bob, ann)


async def test_a_receiving_connection_is_rebuilt_on_request_and_when_dead_sections_pile_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sfu_module, "MAX_DEAD_SECTIONS", 1)
    async with sfu_call() as (sfu, signaling):
        peers = [make_peer(signaling, name) for name in ("ann", "bob", "cyd", "dee")]
        ann, bob, cyd, dee = peers
        for peer in peers:
            await peer.join()
        await eventually(lambda: all_receive(peers), "all four receive each other")

        await bob.restart_receiving()
        await eventually(
            lambda: all(receives(bob, p) for p in (ann, cyd, dee)), "bob's new connection receives"
        )

        for gone in (cyd, dee):
            await sfu.leave(signaling.call_id, gone.party_id)
            await gone.close()
        # Their receiving connections have 4 dead sections for 2 live ones: the SFU rebuilds them.
        await eventually(
            lambda: all(p.renegotiations == 1 and receives(p, q) for p, q in ((ann, bob), (bob, ann))),
            "ann and bob are told to start over, and receive each other on new connections",
        )
        assert ann.sub is not None and len(ann.sub.getTransceivers()) == 2
