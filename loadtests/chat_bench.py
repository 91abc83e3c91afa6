"""AI chat streaming benchmark: added time-to-first-token and inter-token gaps, through our socket vs direct.

    .venv/bin/python -m loadtests.chat_bench --streams 1,64,512 --ttft 0.2 --tps 50 --tokens 100 \\
        --delta-interval 50ms,1ms --ramp 250,500,1000,1500
    .venv/bin/python -m loadtests.chat_bench --streams 1,64 --litellm /tmp/litellm-venv/bin/litellm

Three (or four) processes on 127.0.0.1, none sharing an event loop:

- the OpenAI simulator (``python -m loadtests.openai_sim``) with the given ``--ttft/--tps/--tokens``;
- ``kintsugi-rt serve`` with a fresh PostgreSQL database (created here, dropped at the end), its
  provider pointed at the simulator, restarted for each ``--delta-interval`` (CHAT_DELTA_INTERVAL);
- optionally the LiteLLM proxy (``--litellm PATH``, installed in a venv of its own) in front of the
  simulator, as a peer: a client calling it with the SDK;
- this process: the client (uvloop).

Modes, each at every ``--streams`` level:

- ``direct``: the official ``openai`` SDK streaming straight from the simulator. TTFT = from calling
  ``create(stream=True)`` to the first chunk with content; gaps = between content chunks.
- ``socket``: one user, socket and chat per concurrent stream. TTFT = from sending ``chat.send`` to
  the first ``chat.delta``; gaps = between ``chat.delta`` frames (batched every CHAT_DELTA_INTERVAL,
  so several tokens per frame unless the interval is shorter than the token pace).
- ``litellm``: the SDK streaming through the LiteLLM proxy.

N concurrent streams = N workers, each running its streams back to back, their starts spread evenly
over one reply's duration so that about N are in flight at any time. The first stream of each worker
is a warm-up: its errors count, its timings do not. "Added TTFT" is the socket (or LiteLLM) TTFT
percentile minus the direct one at the same level: a difference of percentiles of two runs, not a
paired difference.

``--ramp`` then holds more and more socket streams (first delta interval) until errors appear
(``chat.error``, ``error`` replies, closed sockets, timeouts) or TTFT p99 passes ``--collapse``.
Server CPU (share of one core) and RSS (peak, sampled) are measured by psutil at every level.

Everything runs on one machine: the client, the simulator and the server compete for its cores, so
read the numbers with the CPU columns.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import re
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import msgspec
import openai
import psutil
import uvloop
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

HOST = "127.0.0.1"
POSTGRES_ADMIN_DSN = f"postgresql://postgres@{HOST}:5432/postgres"
API_KEY = "sk-sim-test"
MODEL = "gpt-4o-mini"
PASSWORD = "correct horse battery"
LITELLM_KEY = "sk-litellm-bench-" + "k" * 24  # the proxy's master key, which its clients send
REPO = Path(__file__).resolve().parent.parent

# Hard bounds, whatever the arguments say.
MAX_STREAMS = 5_000
MAX_ROUNDS = 100
MAX_TOKENS = 10_000
READY_TIMEOUT = 90.0
SETUP_TIMEOUT = 30.0  # one user's register + connect + chat.create
STREAM_SLACK = 30.0  # a stream times out after ttft + tokens/tps + this
STOP_TIMEOUT = 30.0
SAMPLE_EVERY = 0.25


# --- frames -------------------------------------------------------------------------------------------


class _ChatRef(msgspec.Struct):
    id: str


class _Frame(msgspec.Struct):
    """The fields of server frames the benchmark reads; others are ignored."""

    type: str
    id: str | None = None
    code: str | None = None
    chat: _ChatRef | None = None
    message_id: str | None = None


_decode_frame = msgspec.json.Decoder(_Frame).decode
_encode = msgspec.json.encode


# --- processes -----------------------------------------------------------------------------------------


@dataclass
class Proc:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    ps: psutil.Process

    def cpu_seconds(self) -> float:
        """CPU of the process and its children (LiteLLM may fork workers)."""
        total = 0.0
        for proc in [self.ps, *self._children()]:
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                total += times.user + times.system
        return total

    def rss(self) -> int:
        total = 0
        for proc in [self.ps, *self._children()]:
            with contextlib.suppress(psutil.Error):
                total += int(proc.memory_info().rss)
        return total

    def _children(self) -> list[psutil.Process]:
        with contextlib.suppress(psutil.Error):
            return list(self.ps.children(recursive=True))
        return []

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _raise_nofile() -> None:
    """Raise the open-file limit of this process to the hard limit; the children inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1_048_576)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def _spawn(name: str, command: list[str], env: dict[str, str], workdir: Path, cwd: Path) -> Proc:
    log_path = workdir / f"{name}.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(command, env=env, stdout=log_file, stderr=subprocess.STDOUT, cwd=cwd)
    return Proc(name, process, log_path, psutil.Process(process.pid))


async def _wait_http(proc: Proc, url: str, headers: dict[str, str] | None = None) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    async with httpx.AsyncClient(timeout=2) as client:
        while time.monotonic() < deadline:
            if proc.process.poll() is not None:
                raise SystemExit(f"{proc.name} exited with {proc.process.returncode}:\n{proc.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(url, headers=headers)).status_code == 200:
                    return
            await asyncio.sleep(0.2)
    raise SystemExit(f"{proc.name} not ready within {READY_TIMEOUT:.0f} s:\n{proc.log_tail()}")


async def start_simulator(args: argparse.Namespace, workdir: Path) -> tuple[Proc, str]:
    port = _free_port()
    command = [sys.executable, "-m", "loadtests.openai_sim", "--host", HOST, "--port", str(port)]
    command += ["--ttft", str(args.ttft), "--tps", str(args.tps), "--tokens", str(args.tokens)]
    proc = _spawn("simulator", command, dict(os.environ), workdir, REPO)
    url = f"http://{HOST}:{port}/v1"
    await _wait_http(proc, f"{url}/models", {"authorization": f"Bearer {API_KEY}"})
    return proc, url


def _server_command() -> list[str]:
    local = Path(sys.executable).parent / "kintsugi-rt"
    found = str(local) if local.exists() else shutil.which("kintsugi-rt")
    if found is None:
        raise SystemExit("kintsugi-rt is not installed: pip install -e '.[dev]'")
    return [found, "serve"]


async def start_server(
    database_url: str, sim_url: str, delta_interval: str, workdir: Path, index: int
) -> tuple[Proc, str]:
    port = _free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "CHAT_", "REDIS_"))},
        "PORT": str(port),
        "HOST": HOST,
        "DATABASE_URL": database_url,
        "ENVIRONMENT": "test",
        "JWT_SECRET": "chat-benchmark-secret-" + "x" * 40,
        "OPENAI_API_KEY": API_KEY,
        "OPENAI_BASE_URL": sim_url,
        "CHAT_MODELS": msgspec.json.encode(
            [{"id": MODEL, "label": "Mini", "context_window": 128000, "max_output": 16384}]
        ).decode(),
        "CHAT_DEFAULT_MODEL": MODEL,
        "CHAT_DELTA_INTERVAL": delta_interval,
        "AUTH_RATE_LIMIT_IP": "1000000/1m",
        "AUTH_RATE_LIMIT_EMAIL": "1000000/1m",
        "ARGON2_TIME_COST": "1",
        "ARGON2_MEMORY_KIB": "8192",
        "ARGON2_PARALLELISM": "1",
        "WS_RATE_LIMIT": "100000/1s",
        "DATABASE_POOL_MAX": "20",
        "LOG_LEVEL": "warning",
        "KINTSUGI_DATA_DIR": str(workdir / f"server{index}"),
    }
    proc = _spawn(f"server{index}", _server_command(), env, workdir, workdir)
    url = f"http://{HOST}:{port}"
    await _wait_http(proc, f"{url}/readyz")
    return proc, url


async def start_litellm(binary: str, sim_url: str, workdir: Path) -> tuple[Proc, str]:
    port = _free_port()
    config = workdir / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        f"  - model_name: {MODEL}\n"
        "    litellm_params:\n"
        f"      model: openai/{MODEL}\n"
        f"      api_base: {sim_url}\n"
        f"      api_key: {API_KEY}\n"
        "general_settings:\n"
        f"  master_key: {LITELLM_KEY}\n"
    )
    env = {
        **os.environ,
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no download of the price list
        "LITELLM_LOG": "ERROR",
        "LITELLM_TELEMETRY": "False",
    }
    command = [binary, "--config", str(config), "--host", HOST, "--port", str(port), "--num_workers", "1"]
    proc = _spawn("litellm", command, env, workdir, workdir)
    url = f"http://{HOST}:{port}"
    await _wait_http(proc, f"{url}/health/liveliness")
    return proc, f"{url}/v1"


_LOG_LINE = re.compile(r"\[(warning|error|critical)\s*\]\s+(\S+)")
_LOG_EXCEPTION = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception)): ")


def _log_summary(proc: Proc) -> dict[str, int]:
    found: Counter[str] = Counter()
    with contextlib.suppress(OSError):
        for line in proc.log_path.read_text(errors="replace").splitlines():
            if event := _LOG_LINE.search(line):
                found[f"{event.group(1)} {event.group(2)}"] += 1
            if exception := _LOG_EXCEPTION.match(line):
                found[f"exception {exception.group(1)}"] += 1
    return dict(found.most_common(10))


# --- measurements --------------------------------------------------------------------------------------


@dataclass
class StreamResult:
    error: str | None = None
    ttft: float | None = None  # seconds
    ack: float | None = None  # socket only: chat.send -> its "ok" reply
    gaps: list[float] = field(default_factory=list)  # seconds between content frames/chunks
    frames: int = 0


def _percentile(values: list[float], fraction: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


@dataclass
class LevelResult:
    mode: str
    interval: str
    streams: int
    samples: int = 0
    ttft: list[float] = field(default_factory=list)
    ack: list[float] = field(default_factory=list)
    gaps: list[float] = field(default_factory=list)
    frames: list[int] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    wall: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)  # share of one core, by process
    rss_peak: dict[str, int] = field(default_factory=dict)

    def add(self, result: StreamResult, warmup: bool) -> None:
        if result.error is not None:
            self.errors[result.error] += 1
            return
        if warmup:
            return
        self.samples += 1
        if result.ttft is not None:
            self.ttft.append(result.ttft)
        if result.ack is not None:
            self.ack.append(result.ack)
        self.gaps.extend(result.gaps)
        self.frames.append(result.frames)


class Watch:
    """CPU and peak RSS of some processes over one level."""

    def __init__(self, procs: dict[str, Proc]) -> None:
        self.procs = procs
        self.me = psutil.Process()
        self.cpu0 = {name: p.cpu_seconds() for name, p in procs.items()}
        times = self.me.cpu_times()
        self.me0 = times.user + times.system
        self.wall0 = time.monotonic()
        self.peak = {name: p.rss() for name, p in procs.items()}
        self._task = asyncio.create_task(self._sample())

    async def _sample(self) -> None:
        while True:
            await asyncio.sleep(SAMPLE_EVERY)
            for name, proc in self.procs.items():
                self.peak[name] = max(self.peak[name], proc.rss())

    async def finish(self, level: LevelResult) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        wall = max(1e-9, time.monotonic() - self.wall0)
        level.wall = wall
        for name, proc in self.procs.items():
            level.cpu[name] = (proc.cpu_seconds() - self.cpu0[name]) / wall
            level.rss_peak[name] = max(self.peak[name], proc.rss())
        times = self.me.cpu_times()
        level.cpu["client"] = (times.user + times.system - self.me0) / wall


async def run_level(
    level: LevelResult,
    measured_rounds: int,
    reply_seconds: float,
    one: Callable[[int], Awaitable[StreamResult]],
    procs: dict[str, Proc],
) -> LevelResult:
    """``level.streams`` workers, each 1 warm-up + ``measured_rounds`` streams back to back."""
    n = level.streams
    watch = Watch(procs)

    async def worker(i: int) -> None:
        await asyncio.sleep(reply_seconds * i / n)
        for round_ in range(measured_rounds + 1):
            level.add(await one(i), warmup=round_ == 0)

    await asyncio.gather(*(worker(i) for i in range(n)))
    await watch.finish(level)
    return level


# --- direct (SDK) ------------------------------------------------------------------------------------


def make_sdk_client(base_url: str, api_key: str = API_KEY) -> openai.AsyncOpenAI:
    # The SDK's defaults (connection limits included), as the server's provider uses them.
    return openai.AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=120)


async def sdk_stream(client: openai.AsyncOpenAI, max_tokens: int, timeout: float) -> StreamResult:  # noqa: ASYNC109
    result = StreamResult()
    last: float | None = None
    started = time.perf_counter()
    try:
        async with asyncio.timeout(timeout):
            stream = await client.chat.completions.create(
                model=MODEL,
                messages=[{"role": "user", "content": "hi"}],
                max_tokens=max_tokens,
                stream=True,
                stream_options={"include_usage": True},
            )
            async with stream:
                async for chunk in stream:
                    now = time.perf_counter()
                    if not chunk.choices or not chunk.choices[0].delta.content:
                        continue
                    result.frames += 1
                    if last is None:
                        result.ttft = now - started
                    else:
                        result.gaps.append(now - last)
                    last = now
    except TimeoutError:
        result.error = "timeout"
    except Exception as exc:
        result.error = f"{type(exc).__name__}"
    if result.error is None and result.ttft is None:
        result.error = "no content"
    return result


# --- through the socket ------------------------------------------------------------------------------


class _Run:
    """One answer being received on a socket."""

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        self.result = StreamResult()
        self.sent_at = 0.0
        self.message_id: str | None = None  # from the "ok" reply
        self.last: float | None = None
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def end(self, error: str | None = None) -> None:
        if error is not None and self.result.error is None:
            self.result.error = error
        if not self.done.done():
            self.done.set_result(None)


class ChatClient:
    """One user, one socket, one chat; a reader task dispatching the frames."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.chat_id = ""
        self.replies: dict[str, asyncio.Future[_Frame]] = {}
        self.run: _Run | None = None
        self.closed: str | None = None
        self.seq = 0
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                now = time.perf_counter()
                frame = _decode_frame(raw)
                run = self.run
                kind = frame.type
                if kind in ("ok", "error") and frame.id is not None:
                    if run is not None and frame.id == run.request_id:
                        if kind == "ok":
                            run.result.ack = now - run.sent_at
                            run.message_id = frame.message_id
                        else:
                            run.end(f"error reply {frame.code}")
                    elif (future := self.replies.pop(frame.id, None)) is not None:
                        future.set_result(frame)
                # Only frames of this run's answer: a stale chat.done of an answer that timed out
                # earlier must not end this one.
                elif run is None or run.message_id is None or frame.message_id != run.message_id:
                    continue
                elif kind == "chat.delta":
                    result = run.result
                    result.frames += 1
                    if run.last is None:
                        result.ttft = now - run.sent_at
                    else:
                        result.gaps.append(now - run.last)
                    run.last = now
                elif kind == "chat.done":
                    run.end()
                elif kind == "chat.error":
                    run.end(f"chat.error {frame.code}")
        except ConnectionClosed:
            pass
        except Exception as exc:  # a frame we could not read: report it as a dropped socket
            self.closed = f"reader {type(exc).__name__}"
        finally:
            if self.closed is None:
                self.closed = f"socket closed {self.ws.close_code}"
            for future in self.replies.values():
                if not future.done():
                    future.set_exception(ConnectionError(self.closed))
            if self.run is not None:
                self.run.end(self.closed)

    async def request(self, frame: dict[str, Any], timeout: float = 30) -> _Frame:  # noqa: ASYNC109
        self.seq += 1
        request_id = f"r{self.seq}"
        future: asyncio.Future[_Frame] = asyncio.get_running_loop().create_future()
        self.replies[request_id] = future
        await self.ws.send(_encode({**frame, "id": request_id}).decode())
        return await asyncio.wait_for(future, timeout)

    async def stream(self, timeout: float) -> StreamResult:  # noqa: ASYNC109
        if self.closed is not None:
            return StreamResult(error=self.closed)
        self.seq += 1
        run = _Run(f"s{self.seq}")
        self.run = run
        payload = _encode(
            {"type": "chat.send", "id": run.request_id, "chat_id": self.chat_id, "content": "hi"}
        )
        try:
            run.sent_at = time.perf_counter()
            await self.ws.send(payload.decode())
            await asyncio.wait_for(asyncio.shield(run.done), timeout)
        except TimeoutError:
            run.end("timeout")
        except ConnectionClosed:
            run.end(self.closed or "socket closed")
        finally:
            self.run = None
        if run.result.error is None and run.result.ttft is None:
            run.result.error = "no delta"
        return run.result

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(), 5)
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


class Users:
    """Registered users with an open socket and a chat each, added as levels need them."""

    def __init__(self, server_url: str) -> None:
        self.server_url = server_url
        self.ws_url = server_url.replace("http://", "ws://", 1) + "/ws"
        self.clients: list[ChatClient] = []
        self.run = secrets.token_hex(4)

    async def ensure(self, count: int, concurrency: int = 32) -> str | None:
        """Set up clients up to ``count``; on the first failure stop and return what went wrong."""
        start = len(self.clients)
        if count <= start:
            return None
        indexes = iter(range(start, count))
        http = httpx.AsyncClient(base_url=self.server_url, timeout=SETUP_TIMEOUT)
        failures: Counter[str] = Counter()

        async def worker() -> None:
            for i in indexes:
                if failures:
                    return
                try:
                    async with asyncio.timeout(SETUP_TIMEOUT):
                        self.clients.append(await self._one(http, i))
                except Exception as exc:
                    failures[f"{type(exc).__name__} {exc}"[:120]] += 1

        try:
            await asyncio.gather(*(worker() for _ in range(concurrency)))
        finally:
            await http.aclose()
        return f"setup failed: {dict(failures)}" if failures else None

    async def _one(self, http: httpx.AsyncClient, i: int) -> ChatClient:
        response = await http.post(
            "/api/auth/register",
            json={"email": f"chat-{self.run}-{i}@example.com", "password": PASSWORD, "display_name": f"C{i}"},
        )
        if response.status_code != 201:
            raise RuntimeError(f"register {response.status_code} {response.text[:200]}")
        token = response.json()["access_token"]
        ws = await connect(
            f"{self.ws_url}?token={token}",
            open_timeout=30,
            ping_interval=None,  # the server pings; we answer
            compression=None,
            max_queue=None,  # never stall the reader: the timings are taken as frames arrive
            close_timeout=5,
        )
        hello = _decode_frame(await asyncio.wait_for(ws.recv(), 30))
        if hello.type != "hello":
            raise RuntimeError(f"first frame was {hello.type!r}, not hello")
        client = ChatClient(ws)
        reply = await client.request({"type": "chat.create", "title": "bench"})
        if reply.type != "ok" or reply.chat is None:
            await client.close()
            raise RuntimeError(f"chat.create answered {reply.type} {reply.code}")
        client.chat_id = reply.chat.id
        return client

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self.clients), return_exceptions=True)
        self.clients.clear()


# --- reporting ----------------------------------------------------------------------------------------


def _ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value * 1000:.1f}"


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**20:.0f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.0f}%"


HEADER = (
    "mode",
    "interval",
    "streams",
    "samples",
    "TTFT p50",
    "TTFT p99",
    "added p50",
    "added p99",
    "ok p50",
    "gap p50",
    "gap p99",
    "frames/stream",
    "errors",
    "server CPU",
    "server RSS MiB",
    "upstream CPU",
    "client CPU",
)


def _row(level: LevelResult, direct: LevelResult | None) -> tuple[str, ...]:
    p50, p99 = _percentile(level.ttft, 0.5), _percentile(level.ttft, 0.99)
    added50 = added99 = math.nan
    if direct is not None and level is not direct:
        added50 = p50 - _percentile(direct.ttft, 0.5)
        added99 = p99 - _percentile(direct.ttft, 0.99)
    frames = sum(level.frames) / len(level.frames) if level.frames else math.nan
    upstream = level.cpu.get("simulator")
    if "litellm" in level.cpu:
        upstream = (level.cpu.get("simulator") or 0.0) + level.cpu["litellm"]
    errors = ", ".join(f"{k}: {v}" for k, v in level.errors.most_common(3)) or "0"
    return (
        level.mode,
        level.interval,
        str(level.streams),
        str(level.samples),
        _ms(p50),
        _ms(p99),
        _ms(added50),
        _ms(added99),
        _ms(_percentile(level.ack, 0.5)),
        _ms(_percentile(level.gaps, 0.5)),
        _ms(_percentile(level.gaps, 0.99)),
        f"{frames:.1f}",
        errors,
        _pct(level.cpu.get("server")),
        _mib(level.rss_peak.get("server")),
        _pct(upstream),
        _pct(level.cpu.get("client")),
    )


def print_table(title: str, rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in [HEADER, *rows]) for i in range(len(HEADER))]
    print()
    print(title)
    print("| " + " | ".join(h.ljust(w) for h, w in zip(HEADER, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")


def print_level(level: LevelResult, direct: LevelResult | None) -> None:
    row = _row(level, direct)
    print("  " + ", ".join(f"{h}={c}" for h, c in zip(HEADER, row, strict=True)), flush=True)


# --- the run ------------------------------------------------------------------------------------------


def _rounds(streams: int, args: argparse.Namespace) -> int:
    rounds: int = args.max_rounds
    wanted: int = args.min_samples
    return max(1, min(rounds, math.ceil(wanted / streams)))


async def run(args: argparse.Namespace) -> None:
    _raise_nofile()
    reply_seconds = args.ttft + (args.tokens / args.tps if args.tps > 0 else 0.0)
    timeout = reply_seconds + STREAM_SLACK
    max_tokens = args.tokens + 10
    tag = secrets.token_hex(4)
    database = f"kintsugi_chatbench_{tag}"
    database_url = f"postgresql://postgres@{HOST}:5432/{database}"
    workdir = Path(tempfile.mkdtemp(prefix="kintsugi-chatbench-"))
    admin = await asyncpg.connect(POSTGRES_ADMIN_DSN)
    await admin.execute(f'CREATE DATABASE "{database}"')
    procs: list[Proc] = []
    direct_by_level: dict[int, LevelResult] = {}
    rows: list[tuple[str, ...]] = []
    ramp_rows: list[tuple[str, ...]] = []
    logs: dict[str, dict[str, int]] = {}
    print(
        f"simulator: ttft {args.ttft} s, {args.tps} tokens/s, {args.tokens} tokens; "
        f"{psutil.cpu_count()} cores; database {database}",
        flush=True,
    )
    try:
        sim, sim_url = await start_simulator(args, workdir)
        procs.append(sim)
        print(f"simulator ready at {sim_url}", flush=True)

        # 1. Direct, with the SDK.
        client = make_sdk_client(sim_url)
        try:
            for n in args.streams:
                level = LevelResult("direct", "-", n)

                async def direct_one(i: int, client: openai.AsyncOpenAI = client) -> StreamResult:
                    return await sdk_stream(client, max_tokens, timeout)

                await run_level(level, _rounds(n, args), reply_seconds, direct_one, {"simulator": sim})
                direct_by_level[n] = level
                rows.append(_row(level, None))
                print_level(level, None)
        finally:
            await client.close()

        # 2. The LiteLLM proxy, as a peer.
        if args.litellm:
            try:
                litellm, litellm_url = await start_litellm(args.litellm, sim_url, workdir)
            except SystemExit as exc:
                print(f"LiteLLM proxy did not start: {exc}", flush=True)
            else:
                procs.append(litellm)
                print(f"LiteLLM proxy ready at {litellm_url}", flush=True)
                client = make_sdk_client(litellm_url, LITELLM_KEY)
                try:
                    for n in args.streams:
                        level = LevelResult("litellm", "-", n)

                        async def proxy_one(i: int, client: openai.AsyncOpenAI = client) -> StreamResult:
                            return await sdk_stream(client, max_tokens, timeout)

                        watched = {"simulator": sim, "litellm": litellm}
                        await run_level(level, _rounds(n, args), reply_seconds, proxy_one, watched)
                        rows.append(_row(level, direct_by_level.get(n)))
                        print_level(level, direct_by_level.get(n))
                finally:
                    await client.close()
                    litellm.stop()
                    logs["litellm"] = _log_summary(litellm)

        # 3. Through the socket, once per delta interval; the ramp with the first one.
        for index, interval in enumerate(args.delta_interval):
            server, server_url = await start_server(database_url, sim_url, interval, workdir, index)
            procs.append(server)
            print(f"server ready at {server_url} (CHAT_DELTA_INTERVAL={interval})", flush=True)
            users = Users(server_url)
            watched = {"server": server, "simulator": sim}
            try:
                for n in args.streams:
                    level = LevelResult("socket", interval, n)
                    if failed := await users.ensure(n):
                        level.errors[failed] += 1
                        rows.append(_row(level, None))
                        print(f"  {n} streams: {failed}", flush=True)
                        break

                    async def socket_one(i: int, users: Users = users) -> StreamResult:
                        return await users.clients[i].stream(timeout)

                    await run_level(level, _rounds(n, args), reply_seconds, socket_one, watched)
                    rows.append(_row(level, direct_by_level.get(n)))
                    print_level(level, direct_by_level.get(n))
                if index == 0 and args.ramp:
                    base = direct_by_level.get(1)
                    for n in args.ramp:
                        started = time.monotonic()
                        level = LevelResult("ramp", interval, n)
                        if failed := await users.ensure(n):
                            level.errors[failed] += 1
                            ramp_rows.append(_row(level, None))
                            print(f"  ramp stops at {n}: {failed}", flush=True)
                            break
                        print(f"  {n} users, sockets and chats ready in {time.monotonic() - started:.1f} s")

                        async def ramp_one(i: int, users: Users = users) -> StreamResult:
                            return await users.clients[i].stream(timeout)

                        await run_level(level, args.ramp_rounds, reply_seconds, ramp_one, watched)
                        ramp_rows.append(_row(level, base))
                        print_level(level, base)
                        p99 = _percentile(level.ttft, 0.99)
                        if level.errors or not p99 <= args.collapse:
                            print(f"  ramp stops at {n}: errors {dict(level.errors)}, TTFT p99 {_ms(p99)} ms")
                            break
                    else:
                        print("  ramp: no errors at any level")
            finally:
                await users.close()
                server.stop()
                logs[server.name] = _log_summary(server)
                procs.remove(server)
    finally:
        for proc in procs:
            proc.stop()
        if procs:
            logs.setdefault("simulator", _log_summary(procs[0]))
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await admin.close()
        shutil.rmtree(workdir, ignore_errors=True)

    print_table(
        "Streams: TTFT (ms), added TTFT vs direct at the same level (ms), 'ok' = chat.send -> ok reply (ms), "
        "gaps between content frames (ms); CPU as share of one core",
        rows,
    )
    if ramp_rows:
        print_table("Ramp (socket): added TTFT vs direct at 1 stream", ramp_rows)
    for name, found in logs.items():
        print(f"{name} log: {found or 'no warnings or errors'}")


def _int_list(text: str) -> list[int]:
    values = [int(v) for v in text.split(",") if v.strip()]
    if any(not 1 <= v <= MAX_STREAMS for v in values):
        raise argparse.ArgumentTypeError(f"stream counts must be 1..{MAX_STREAMS}")
    return values


def _str_list(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.chat_bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--streams", type=_int_list, default=[1, 64, 512], help="concurrency levels")
    parser.add_argument("--ttft", type=float, default=0.2, help="simulator: seconds to the first token")
    parser.add_argument("--tps", type=float, default=50.0, help="simulator: tokens per second")
    parser.add_argument("--tokens", type=int, default=100, help="simulator: tokens per reply")
    parser.add_argument(
        "--delta-interval", type=_str_list, default=["50ms", "1ms"], help="CHAT_DELTA_INTERVAL values"
    )
    parser.add_argument("--ramp", type=_int_list, default=[], help="socket streams to ramp through")
    parser.add_argument("--ramp-rounds", type=int, default=2, help="measured streams per ramp worker")
    parser.add_argument("--collapse", type=float, default=2.0, help="ramp stops past this TTFT p99 (s)")
    parser.add_argument("--min-samples", type=int, default=200, help="measured streams wanted per level")
    parser.add_argument("--max-rounds", type=int, default=20, help="most measured streams per worker")
    parser.add_argument("--litellm", default="", help="path of the litellm CLI (a separate venv)")
    args = parser.parse_args()
    if not 0 <= args.ttft <= 60 or not 0 <= args.tps <= 100_000 or not 1 <= args.tokens <= MAX_TOKENS:
        parser.error(f"--ttft 0..60, --tps 0..100000, --tokens 1..{MAX_TOKENS}")
    if not 1 <= args.max_rounds <= MAX_ROUNDS or not 1 <= args.ramp_rounds <= MAX_ROUNDS:
        parser.error(f"--max-rounds and --ramp-rounds must be 1..{MAX_ROUNDS}")
    if args.min_samples < 1 or args.collapse <= 0 or not args.delta_interval:
        parser.error("--min-samples >= 1, --collapse > 0, at least one --delta-interval")
    uvloop.run(run(args))


if __name__ == "__main__":
    main()
