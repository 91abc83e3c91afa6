"""Built-in SFU benchmark (issue 12): CPU per forwarded stream, and participants per core.

    .venv/bin/python -m loadtests.sfu_bench --media audio --mode forward --call-size 4 --calls 1,2,4,8
    .venv/bin/python -m loadtests.sfu_bench --media video --mode forward --call-size 4 --calls 1,2,3
    .venv/bin/python -m loadtests.sfu_bench --media video --mode reencode --call-size 4 --calls 1

The ``Sfu`` runs alone in a child process pinned to CPU 0 (``--serve-fd``, started by this one), as it
would in a node. This process, pinned to CPU 1, plays ``--calls`` calls of ``--call-size`` devices,
each a real aiortc client of the SFU's signaling (relayed over a socket pair, as the call service would
relay it over the hub): every device publishes Opus (and, with ``--media video``, 360p VP8 at 30 fps)
and receives every other device's tracks. Publishers replay a clip encoded once at start (Opus at
32 kb/s; VP8 at about 600 kb/s, keyframes only when a keyframe request arrives, as a browser does), and
subscribers count encoded frames without decoding them, so this process spends its CPU on the network
path only. With ``--mode forward`` each frame carries its send time in 8 trailing bytes (the SFU does
not decode it), which gives the latency from the publisher's track to the subscriber's whole frame
through the SFU (subscribers reassemble frames as the SFU does, ``sfu_frames``, to leave out a
decoder's jitter buffer).

Measured over ``--seconds`` after ``--warmup``: the SFU process's CPU (all its threads; 100 % = one
core), CPU per forwarded stream (a call of n devices forwards n(n-1) streams per kind), this process's
CPU, and the share of the expected frames (50/s audio, 30/s video per stream) that reached subscribers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fractions
import logging
import os
import random
import resource
import socket
import struct
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import av
import msgspec
import psutil
import structlog
from aiortc import (
    MediaStreamTrack,
    RTCBundlePolicy,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCSessionDescription,
)
from aiortc.jitterbuffer import JitterFrame
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from kintsugi_rt import metrics
from kintsugi_rt.calls.frames import SFU_PARTY, Candidate, SignalKind
from kintsugi_rt.calls.sfu import SUBSCRIBER_PARTY, Sfu, SfuSignal
from kintsugi_rt.calls.sfu_aiortc import on_keyframe_request, replace_jitter_buffer, tap_encoded_frames
from kintsugi_rt.calls.sfu_frames import AudioPackets, VideoFrames
from kintsugi_rt.calls.sfu_media import MediaMode

Media = Literal["audio", "video"]
FPS = {"audio": 50, "video": 30}
CLOCK = {"audio": 48000, "video": 90000}
VIDEO_SIZE = (640, 360)
VIDEO_BITRATE = 600_000
AUDIO_BITRATE = 32_000
STAMP = struct.Struct("!d")  # the send time trailing each frame (forward mode)
READY_TIMEOUT = 120.0
SFU_CPU, LOAD_CPU = 0, 1


# --- messages over the socket pair ---------------------------------------------------------------


class ToSfu(msgspec.Struct, tag="signal"):
    call_id: uuid.UUID
    party_id: str
    to: str
    kind: SignalKind
    sdp: str | None = None
    candidate: Candidate | None = None


class StatsRequest(msgspec.Struct, tag="stats"):
    pass


class FromSfu(msgspec.Struct, tag="from_sfu"):
    call_id: uuid.UUID
    party_id: str
    signal: SfuSignal


class SfuStats(msgspec.Struct, tag="sfu_stats"):
    participants: int
    forwarded: dict[str, float]
    dropped: float


Message = ToSfu | StatsRequest | FromSfu | SfuStats
_decoder = msgspec.json.Decoder(Message)


def _line(message: Message) -> bytes:
    return msgspec.json.encode(message) + b"\n"


# --- the SFU process ------------------------------------------------------------------------------


async def serve(fd: int, mode: MediaMode) -> None:
    """The child: one ``Sfu``, its signals relayed over the socket pair ``fd``."""
    reader, writer = await asyncio.open_unix_connection(sock=socket.socket(fileno=fd), limit=1 << 24)

    async def send(call_id: uuid.UUID, party_id: str, signal: SfuSignal) -> None:
        writer.write(_line(FromSfu(call_id=call_id, party_id=party_id, signal=signal)))

    sfu = Sfu(max_participants=100_000, send=send, media_mode=mode)
    tasks: set[asyncio.Task[None]] = set()
    try:
        while line := await reader.readline():
            message = _decoder.decode(line)
            if isinstance(message, ToSfu):
                work = sfu.signal(
                    message.call_id,
                    message.party_id,
                    message.to,
                    message.kind,
                    message.sdp,
                    message.candidate,
                )
                task = asyncio.ensure_future(work)
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            elif isinstance(message, StatsRequest):
                writer.write(_line(_sfu_stats(sfu)))
    except ConnectionError:
        pass  # the load process is done
    await sfu.close()


def _sfu_stats(sfu: Sfu) -> SfuStats:
    forwarded = {kind: metrics.SFU_FORWARDED_FRAMES.labels(kind)._value.get() for kind in ("audio", "video")}
    dropped = sum(
        metrics.SFU_DROPPED_FRAMES.labels(r)._value.get() for r in ("queue_full", "awaiting_keyframe")
    )
    return SfuStats(participants=sfu.participants, forwarded=forwarded, dropped=dropped)


# --- media ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Clip:
    """Encoded frames to replay in a loop (the first one a keyframe)."""

    kind: Media
    frames: list[bytes]


def opus_clip(seconds: float = 2.0) -> Clip:
    codec = av.CodecContext.create("libopus", "w")
    codec.sample_rate, codec.layout, codec.format, codec.bit_rate = 48000, "stereo", "s16", AUDIO_BITRATE
    noise = random.Random(1)
    frames: list[bytes] = []
    for index in range(int(seconds * FPS["audio"])):
        frame = av.AudioFrame(format="s16", layout="stereo", samples=960)
        frame.planes[0].update(noise.randbytes(960 * 4))
        frame.sample_rate, frame.pts, frame.time_base = 48000, index * 960, fractions.Fraction(1, 48000)
        frames += [bytes(packet) for packet in codec.encode(frame)]
    return Clip("audio", frames)


def vp8_clip(seconds: float = 5.0) -> Clip:
    """360p VP8 of a moving gradient under noise: constant bitrate, one keyframe."""
    width, height = VIDEO_SIZE
    codec = av.CodecContext.create("libvpx", "w")
    codec.width, codec.height, codec.pix_fmt = width, height, "yuv420p"
    codec.bit_rate, codec.time_base, codec.gop_size = VIDEO_BITRATE, fractions.Fraction(1, 30), 100_000
    rate = str(VIDEO_BITRATE)
    codec.options = {
        "deadline": "realtime",
        "cpu-used": "8",
        "lag-in-frames": "0",
        "minrate": rate,
        "maxrate": rate,
    }
    noise = random.Random(1)
    frames: list[bytes] = []
    for index in range(int(seconds * FPS["video"])):
        frame = av.VideoFrame(width, height, "yuv420p")
        luma = frame.planes[0]
        gradient = bytes((x * 2 + index * 4) % 256 for x in range(luma.line_size)) * height
        grain = noise.randbytes(luma.line_size * height)
        luma.update(bytes(a ^ (b & 0x1F) for a, b in zip(gradient, grain, strict=True)))
        frame.planes[1].update(bytes([110]) * frame.planes[1].buffer_size)
        frame.planes[2].update(bytes([150]) * frame.planes[2].buffer_size)
        frame.pts, frame.time_base = index, codec.time_base
        frames += [bytes(packet) for packet in codec.encode(frame)]
    return Clip("video", frames)


class ClipTrack(MediaStreamTrack):
    """Replays a clip as ``av.Packet``s in real time (the sender packetizes them without encoding).

    A keyframe request restarts the clip at its keyframe. With ``stamp`` each frame ends with its
    send time.
    """

    def __init__(self, clip: Clip, *, stamp: bool) -> None:
        super().__init__()
        self.kind = clip.kind
        self._clip = clip
        self._stamp = stamp
        self._index = 0
        self._count = 0
        self._start = time.monotonic() + random.random() / FPS[clip.kind]  # publishers out of phase
        self._time_base = fractions.Fraction(1, CLOCK[clip.kind])

    def restart(self) -> None:
        self._index = 0

    async def recv(self) -> av.Packet[Any]:
        if self.readyState != "live":
            raise MediaStreamError
        await asyncio.sleep(max(0.0, self._start + self._count / FPS[self.kind] - time.monotonic()))
        data = self._clip.frames[self._index]
        self._index = (self._index + 1) % len(self._clip.frames)
        packet = av.Packet(data + STAMP.pack(time.time()) if self._stamp else data)
        packet.pts, packet.time_base = self._count * CLOCK[self.kind] // FPS[self.kind], self._time_base
        self._count += 1
        return packet


# --- the devices ------------------------------------------------------------------------------------


@dataclass
class Stream:
    """One track a device receives: frames counted, latencies while recording."""

    kind: str
    frames: int = 0
    latencies: list[float] = field(default_factory=list)


class Load:
    """This process: the devices, and the SFU child they signal with."""

    def __init__(self, args: argparse.Namespace, clips: dict[Media, Clip]) -> None:
        self.args = args
        self.clips = clips
        self.devices: dict[str, Device] = {}
        self.recording = False
        self.stamped = args.mode == "forward"
        self._writer: asyncio.StreamWriter | None = None
        self._stats: asyncio.Future[SfuStats] | None = None
        self.process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Future[None] | None = None

    async def start_sfu(self) -> None:
        mine, theirs = socket.socketpair()
        command = [sys.executable, "-m", "loadtests.sfu_bench", "--serve-fd", str(theirs.fileno())]
        command += ["--mode", self.args.mode, "--loop", self.args.loop, "--log-level", self.args.log_level]
        self.process = await asyncio.create_subprocess_exec(*command, pass_fds=[theirs.fileno()])
        os.sched_setaffinity(self.process.pid, {SFU_CPU})
        theirs.close()
        reader, self._writer = await asyncio.open_unix_connection(sock=mine, limit=1 << 24)
        self._reader = asyncio.ensure_future(self._read(reader))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(ConnectionError):
            while line := await reader.readline():
                message = _decoder.decode(line)
                if isinstance(message, FromSfu):
                    self.devices[message.party_id].deliver(message.signal)
                elif isinstance(message, SfuStats) and self._stats is not None:
                    self._stats.set_result(message)

    def to_sfu(self, message: ToSfu) -> None:
        assert self._writer is not None
        self._writer.write(_line(message))

    async def sfu_stats(self) -> SfuStats:
        self._stats = asyncio.get_running_loop().create_future()
        assert self._writer is not None
        self._writer.write(_line(StatsRequest()))
        return await self._stats

    async def stop(self) -> None:
        for device in self.devices.values():
            await device.close()
        if self._writer is not None:
            self._writer.close()
        if self.process is not None:
            await self.process.wait()
        if self._reader is not None:
            self._reader.cancel()


class Device:
    """One device in a call: publishes the clips, receives everyone else's tracks (counted, not decoded)."""

    def __init__(self, load: Load, call_id: uuid.UUID, party_id: str) -> None:
        self.load = load
        self.call_id = call_id
        self.party_id = party_id
        self.pub = _bundled()
        self.sub: RTCPeerConnection | None = None
        self.streams: dict[str, Stream] = {}  # by mid of the receiving connection
        self._inbox: asyncio.Queue[SfuSignal] = asyncio.Queue()
        self._worker = asyncio.ensure_future(self._work())
        load.devices[party_id] = self

    async def join(self) -> None:
        for clip in self.load.clips.values():
            track = ClipTrack(clip, stamp=self.load.stamped)
            transceiver = self.pub.addTransceiver(track, direction="sendonly")
            if clip.kind == "video":
                on_keyframe_request(transceiver.sender, track.restart)
        await self.pub.setLocalDescription(await self.pub.createOffer())
        self._signal(SFU_PARTY, "offer", self.pub.localDescription.sdp)

    def deliver(self, signal: SfuSignal) -> None:
        self._inbox.put_nowait(signal)

    async def close(self) -> None:
        self._worker.cancel()
        for pc in (self.pub, self.sub):
            if pc is not None:
                await pc.close()

    def _signal(self, to: str, kind: SignalKind, sdp: str) -> None:
        self.load.to_sfu(ToSfu(call_id=self.call_id, party_id=self.party_id, to=to, kind=kind, sdp=sdp))

    async def _work(self) -> None:
        while True:
            signal = await self._inbox.get()
            if signal.kind == "answer" and signal.sdp is not None:
                await self.pub.setRemoteDescription(RTCSessionDescription(sdp=signal.sdp, type="answer"))
            elif signal.kind == "offer" and signal.sdp is not None:
                await self._receive(signal.sdp)

    async def _receive(self, sdp: str) -> None:
        if self.sub is None:
            self.sub = _bundled()
        await self.sub.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        for transceiver in self.sub.getTransceivers():
            if transceiver.mid is not None and transceiver.mid not in self.streams:
                self.streams[transceiver.mid] = stream = Stream(kind=transceiver.kind)
                self._count(transceiver.receiver, stream)
        await self.sub.setLocalDescription(await self.sub.createAnswer())
        self._signal(SUBSCRIBER_PARTY, "answer", self.sub.localDescription.sdp)

    def _count(self, receiver: RTCRtpReceiver, stream: Stream) -> None:
        def sink(codec: RTCRtpCodecParameters, frame: JitterFrame) -> None:
            stream.frames += 1
            if self.load.recording and self.load.stamped and len(frame.data) > STAMP.size:
                stream.latencies.append(time.time() - STAMP.unpack(frame.data[-STAMP.size :])[0])

        tap_encoded_frames(receiver, sink, lambda: None)
        # As in the SFU: each frame is counted as soon as it is whole.
        replace_jitter_buffer(receiver, AudioPackets() if stream.kind == "audio" else VideoFrames())


def _bundled() -> RTCPeerConnection:
    return RTCPeerConnection(RTCConfiguration(bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))


# --- one run ------------------------------------------------------------------------------------------


@dataclass
class Result:
    calls: int
    participants: int
    streams: dict[str, int]
    sfu_cpu: float  # percent of one core
    load_cpu: float
    machine_cpu: float  # both cores: 200 % at most; more than the two above is someone else's work
    sfu_rss: float  # MiB
    delivered: dict[str, float]  # share of the expected frames
    latency: dict[str, tuple[float, float]]  # p50, p95 in ms
    dropped: float


async def run_once(args: argparse.Namespace, clips: dict[Media, Clip], calls: int) -> Result:
    load = Load(args, clips)
    await load.start_sfu()
    assert load.process is not None
    try:
        devices = await _connect(load, calls, args.call_size)
        await _until_everyone_receives(devices, len(clips) * (args.call_size - 1))
        await asyncio.sleep(args.warmup)
        return await _measure(load, devices, calls, args)
    finally:
        await load.stop()


async def _connect(load: Load, calls: int, size: int) -> list[Device]:
    devices = []
    for _ in range(calls):
        call_id = uuid.uuid4()
        for index in range(size):
            device = Device(load, call_id, f"{call_id.hex[:8]}-{index}")
            await device.join()
            devices.append(device)
        await asyncio.sleep(0.2)
    return devices


async def _until_everyone_receives(devices: Sequence[Device], tracks: int) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while not all(len(d.streams) == tracks and all(s.frames for s in d.streams.values()) for d in devices):
        if time.monotonic() > deadline:
            raise RuntimeError("not every device received every track in time")
        await asyncio.sleep(0.5)


async def _measure(load: Load, devices: Sequence[Device], calls: int, args: argparse.Namespace) -> Result:
    assert load.process is not None
    sfu, me = psutil.Process(load.process.pid), psutil.Process()
    streams = [s for d in devices for s in d.streams.values()]
    before = [s.frames for s in streams]
    cpu_before = _busy(sfu), _busy(me), _busy_machine()
    stats_before = await load.sfu_stats()
    load.recording, started = True, time.monotonic()
    await asyncio.sleep(args.seconds)
    load.recording, wall = False, time.monotonic() - started
    cpu_after = _busy(sfu), _busy(me), _busy_machine()
    stats_after = await load.sfu_stats()
    counts: dict[str, int] = {}
    frames: dict[str, int] = {}
    latencies: dict[str, list[float]] = {}
    for stream, start in zip(streams, before, strict=True):
        counts[stream.kind] = counts.get(stream.kind, 0) + 1
        frames[stream.kind] = frames.get(stream.kind, 0) + stream.frames - start
        latencies.setdefault(stream.kind, []).extend(stream.latencies)
    return Result(
        calls=calls,
        participants=len(devices),
        streams=counts,
        sfu_cpu=100 * (cpu_after[0] - cpu_before[0]) / wall,
        load_cpu=100 * (cpu_after[1] - cpu_before[1]) / wall,
        machine_cpu=100 * (cpu_after[2] - cpu_before[2]) / wall,
        sfu_rss=sfu.memory_info().rss / 2**20,
        delivered={k: frames[k] / (counts[k] * FPS[k] * wall) for k in counts},
        latency={k: (_percentile(v, 0.5), _percentile(v, 0.95)) for k, v in latencies.items()},
        dropped=stats_after.dropped - stats_before.dropped,
    )


def _busy(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def _busy_machine() -> float:
    times = psutil.cpu_times()
    return float(sum(times) - times.idle - times.iowait)


def _percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return 1000 * ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def _report(args: argparse.Namespace, result: Result) -> None:
    streams = sum(result.streams.values()) // len(result.streams)  # forwarded per kind
    per_stream = result.sfu_cpu / streams
    delivered = " ".join(f"{k} {100 * v:.1f}%" for k, v in result.delivered.items())
    latency = " ".join(f"{k} {p50:.0f}/{p95:.0f}" for k, (p50, p95) in result.latency.items())
    print(
        f"{args.media:5} {args.mode:8} size {args.call_size} calls {result.calls:3} "
        f"participants {result.participants:3} forwarded/kind {streams:4} | SFU CPU {result.sfu_cpu:5.1f}% "
        f"= {per_stream:.2f}%/forwarded {'pair' if args.media == 'video' else 'stream'} | load CPU "
        f"{result.load_cpu:5.1f}% | machine {result.machine_cpu:5.1f}% | SFU RSS {result.sfu_rss:.0f} MiB "
        f"| delivered {delivered} "
        f"| latency p50/p95 ms {latency or '-'} | dropped {result.dropped:.0f}",
        flush=True,
    )


async def main_async(args: argparse.Namespace) -> None:
    clips: dict[Media, Clip] = {"audio": opus_clip()}
    if args.media == "video":
        clips["video"] = vp8_clip()
    for calls in args.calls:
        _report(args, await run_once(args, clips, calls))


def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--media", choices=("audio", "video"), default="audio")
    parser.add_argument("--mode", choices=("forward", "reencode"), default="forward")
    parser.add_argument("--call-size", type=int, default=4, help="devices per call")
    parser.add_argument("--calls", type=lambda text: [int(n) for n in text.split(",")], default=[1])
    parser.add_argument("--seconds", type=float, default=20.0, help="measured time per run")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds after everyone receives")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    parser.add_argument("--log-level", choices=("debug", "info", "warning"), default="warning")
    parser.add_argument("--serve-fd", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    _raise_nofile()
    level = logging.getLevelNamesMapping()[args.log_level.upper()]
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(level))
    if args.loop == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    if args.serve_fd is not None:
        asyncio.run(serve(args.serve_fd, args.mode))
        return
    os.sched_setaffinity(0, {LOAD_CPU})
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
