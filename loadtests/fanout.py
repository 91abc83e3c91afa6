"""Socket fan-out benchmark: publish→deliver latency, deliveries/s, RSS per idle socket, server CPU.

    .venv/bin/python -m loadtests.fanout --nodes 1 --sockets 5000 --rate 0 --seconds 10   # idle sockets
    .venv/bin/python -m loadtests.fanout --nodes 1 --sockets 1000 --rate 10000 --seconds 20
    .venv/bin/python -m loadtests.fanout --nodes 2 --sockets 1000 --rate 10000 --seconds 20
    .venv/bin/python -m loadtests.fanout --nodes 1 --sockets 1000 --rate 10000 --seconds 20 --durable

It needs PostgreSQL (trust auth, user postgres) and Redis on 127.0.0.1. It creates a fresh database
(dropped at the end) and a unique Redis key prefix (its keys deleted at the end), starts one or two
``kintsugi-rt serve`` nodes as subprocesses, registers one user per socket (spread over the nodes)
and connects every socket, then publishes ``bench.event`` frames as a publishing node of its own:
``Events.push`` (ephemeral) or ``Events.emit`` (durable, stored in PostgreSQL) through ``RedisHub``.
Each event goes to ``--fanout`` users (one socket each), so events/s = rate / fanout. Latency is the
client's receive time minus the ``sent_at`` stamped just before publishing (one process, one clock).

The benchmark client runs on the same machine as the servers, PostgreSQL and Redis: on a small
machine it competes with them for CPU, so read the numbers with its own CPU use (printed too).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import resource
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import asyncpg
import httpx
import msgspec
import psutil
import uvloop
from redis.asyncio import Redis
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from kintsugi_rt.db.database import Database
from kintsugi_rt.settings import load_settings
from kintsugi_rt.socket.events import Events
from kintsugi_rt.socket.hub import Envelope, RedisHub
from kintsugi_rt.socket.protocol import ServerMessage

HOST = "127.0.0.1"
POSTGRES_ADMIN_DSN = f"postgresql://postgres@{HOST}:5432/postgres"
REDIS_URL = f"redis://{HOST}:6379/0"
CLOSE_SLOW_CONSUMER = 4008

# Hard bounds, whatever the arguments say.
MAX_SOCKETS = 20_000
MAX_SECONDS = 600.0
MAX_RATE = 200_000
MAX_SAMPLES = 5_000_000
READY_TIMEOUT = 60.0
REGISTER_TIMEOUT = 900.0
CONNECT_TIMEOUT = 600.0
DRAIN_TIMEOUT = 10.0
PUBLISH_TIMEOUT = 30.0
CLOSE_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


class BenchEvent(ServerMessage, tag="bench.event"):
    """The frame this benchmark publishes."""

    seq: int
    sent_at: float


class _Frame(msgspec.Struct):
    """The fields of any server frame that the benchmark reads; others are ignored."""

    type: str
    sent_at: float = 0.0
    pos: int | None = None


_decode_frame = msgspec.json.Decoder(_Frame).decode


# --- the server nodes -------------------------------------------------------------------------


@dataclass
class Node:
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    ps: psutil.Process

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def rss(self) -> int:
        return int(self.ps.memory_info().rss)

    def cpu_seconds(self) -> float:
        times = self.ps.cpu_times()
        return float(times.user + times.system)

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


_LOG_EVENT = re.compile(r"\[(warning|error|critical)\s*\]\s+(\S+)")
_LOG_EXCEPTION = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception)): ")


def _log_summary(nodes: list[Node]) -> None:
    """Warnings and errors the nodes logged, by event name and exception type."""
    found: Counter[str] = Counter()
    for node in nodes:
        with contextlib.suppress(OSError):
            for line in node.log_path.read_text(errors="replace").splitlines():
                event = _LOG_EVENT.search(line)
                if event:
                    found[f"{event.group(1)} {event.group(2)}"] += 1
                exception = _LOG_EXCEPTION.match(line)
                if exception:
                    found[f"exception {exception.group(1)}"] += 1
    if found:
        print(f"server logs (whole run, shutdown included): {dict(found.most_common(10))}")
    else:
        print("server logs: no warnings or errors")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _server_command() -> list[str]:
    local = Path(sys.executable).parent / "kintsugi-rt"
    found = str(local) if local.exists() else shutil.which("kintsugi-rt")
    if found is None:
        raise SystemExit("kintsugi-rt is not installed: pip install -e '.[dev,load]'")
    return [found, "serve"]


def _raise_nofile(wanted: int) -> None:
    """Raise the open-file limit of this process; the server nodes inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, wanted)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if target < wanted:
        print(f"warning: RLIMIT_NOFILE hard limit {hard} is below the {wanted} descriptors this run needs")


def _start_node(database_url: str, prefix: str, workdir: Path, index: int) -> Node:
    port = _free_port()
    env = {
        **os.environ,
        "PORT": str(port),
        "HOST": HOST,
        "DATABASE_URL": database_url,
        "REDIS_URL": REDIS_URL,
        "REDIS_KEY_PREFIX": prefix,
        "ENVIRONMENT": "test",
        "JWT_SECRET": "fanout-benchmark-secret-" + "x" * 40,
        "AUTH_RATE_LIMIT_IP": "1000000/1m",
        "AUTH_RATE_LIMIT_EMAIL": "1000000/1m",
        "ARGON2_TIME_COST": "1",
        "ARGON2_MEMORY_KIB": "8192",
        "ARGON2_PARALLELISM": "1",
        "WS_RATE_LIMIT": "100000/1s",
        "LOG_LEVEL": "warning",
        "KINTSUGI_DATA_DIR": str(workdir / f"node{index}"),
    }
    log_path = workdir / f"node{index}.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(  # the children inherit our raised RLIMIT_NOFILE
            _server_command(), env=env, stdout=log_file, stderr=subprocess.STDOUT, cwd=workdir
        )
    return Node(port, process, log_path, psutil.Process(process.pid))


async def _wait_ready(node: Node) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    async with httpx.AsyncClient(base_url=node.url, timeout=2) as client:
        while time.monotonic() < deadline:
            if node.process.poll() is not None:
                raise SystemExit(f"node on port {node.port} exited:\n{node.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get("/readyz")).status_code == 200:
                    return
            await asyncio.sleep(0.2)
    raise SystemExit(f"node on port {node.port} not ready within {READY_TIMEOUT:.0f} s:\n{node.log_tail()}")


def _stop_nodes(nodes: list[Node]) -> None:
    for node in nodes:
        if node.process.poll() is None:
            node.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    for node in nodes:
        try:
            node.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            node.process.kill()
            node.process.wait(timeout=10)


@dataclass
class Cluster:
    nodes: list[Node]
    database_url: str
    prefix: str  # Redis key prefix


@contextlib.asynccontextmanager
async def cluster(count: int, name: str) -> AsyncIterator[Cluster]:
    """``count`` server nodes on a fresh database and Redis key prefix; on exit the nodes are stopped
    (their warnings and errors summed up), the keys deleted and the database dropped."""
    tag = secrets.token_hex(4)
    database = f"kintsugi_{name}_{tag}"
    prefix = f"kintsugi-{name}-{tag}:"
    database_url = f"postgresql://postgres@{HOST}:5432/{database}"
    admin = await asyncpg.connect(POSTGRES_ADMIN_DSN)
    await admin.execute(f'CREATE DATABASE "{database}"')
    workdir = Path(tempfile.mkdtemp(prefix=f"kintsugi-{name}-"))
    nodes: list[Node] = []
    try:
        for index in range(count):
            nodes.append(_start_node(database_url, prefix, workdir, index))
        for node in nodes:
            await _wait_ready(node)
        print(f"{count} node(s) ready on ports {[n.port for n in nodes]}; database {database}")
        yield Cluster(nodes, database_url, prefix)
    finally:
        for i, node in enumerate(nodes):
            if node.process.poll() is not None:  # it died before we stopped it
                print(f"node {i} exited early with {node.process.returncode}:\n{node.log_tail(40)}")
        _stop_nodes(nodes)
        _log_summary(nodes)
        redis = Redis.from_url(REDIS_URL)
        keys = [key async for key in redis.scan_iter(match=f"{prefix}*", count=1000)]
        for i in range(0, len(keys), 1000):
            await redis.delete(*keys[i : i + 1000])
        await redis.aclose()
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await admin.close()
        shutil.rmtree(workdir, ignore_errors=True)


@dataclass
class CpuUse:
    wall: float
    nodes: list[float]  # CPU seconds of each node
    me: float  # of this process
    machine: float  # busy seconds of the whole machine

    def print_rest(self) -> None:
        """This process's share and the machine's, and what neither the nodes nor we used."""
        print(f"  benchmark process CPU: {self.me:.1f} s = {self.me / self.wall * 100:.0f}% of a core")
        rest = self.machine - sum(self.nodes) - self.me
        print(
            f"  whole machine busy: {self.machine / self.wall * 100:.0f}% of a core "
            f"({psutil.cpu_count()} cores); "
            f"everything else (PostgreSQL, Redis, other work): {rest / self.wall * 100:.0f}%"
        )


class CpuWindow:
    """CPU used by the nodes, this process and the whole machine from now until ``end``."""

    def __init__(self, nodes: list[Node]) -> None:
        self._nodes = nodes
        self._node_start = [node.cpu_seconds() for node in nodes]
        self._me = psutil.Process()
        self._me_start = self._busy_me()
        self._machine_start = self._busy_machine()
        self._wall_start = time.time()

    def _busy_me(self) -> float:
        times = self._me.cpu_times()
        return float(times.user + times.system)

    @staticmethod
    def _busy_machine() -> float:
        times = psutil.cpu_times()
        return float(sum(times) - times.idle - times.iowait)

    def end(self) -> CpuUse:
        return CpuUse(
            wall=max(1e-9, time.time() - self._wall_start),
            nodes=[
                node.cpu_seconds() - start for node, start in zip(self._nodes, self._node_start, strict=True)
            ],
            me=self._busy_me() - self._me_start,
            machine=self._busy_machine() - self._machine_start,
        )


# --- users and sockets ------------------------------------------------------------------------


@dataclass
class Account:
    user_id: uuid.UUID
    token: str
    node: int


async def _register(nodes: list[Node], count: int, concurrency: int) -> list[Account]:
    password = "Bench-" + secrets.token_urlsafe(12)
    run = secrets.token_hex(4)
    accounts: list[Account | None] = [None] * count
    clients = [httpx.AsyncClient(base_url=node.url, timeout=60) for node in nodes]
    next_index = iter(range(count))

    async def worker() -> None:
        for i in next_index:  # shared iterator: each index is taken once
            node = i % len(nodes)
            response = await clients[node].post(
                "/api/auth/register",
                json={"email": f"fan-{run}-{i}@example.com", "password": password, "display_name": f"F{i}"},
            )
            if response.status_code != 201:
                raise SystemExit(f"register failed: {response.status_code} {response.text}")
            body = response.json()
            accounts[i] = Account(uuid.UUID(body["user"]["id"]), body["access_token"], node)

    try:
        await asyncio.wait_for(
            asyncio.gather(*(worker() for _ in range(concurrency))), timeout=REGISTER_TIMEOUT
        )
    finally:
        for client in clients:
            await client.aclose()
    return [a for a in accounts if a is not None]


@dataclass
class Stats:
    durable: bool
    latencies_ms: list[float] = field(default_factory=list)
    received: int = 0
    durable_without_pos: int = 0
    first_receive: float = 0.0
    last_receive: float = 0.0
    other_frames: Counter[str] = field(default_factory=Counter)
    closes: Counter[int] = field(default_factory=Counter)


class Reader:
    """One socket and the task reading it; subclasses handle each frame."""

    def __init__(self, account: Account, ws: ClientConnection, closes: Counter[int]) -> None:
        self.account = account
        self.ws = ws
        self.open = True
        self._closes = closes
        self.task = asyncio.create_task(self._read())

    def on_frame(self, raw: str | bytes, now: float) -> None:
        raise NotImplementedError

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                self.on_frame(raw, time.time())
        except ConnectionClosed:
            pass
        finally:
            self.open = False
            if self.ws.close_code is not None:
                self._closes[self.ws.close_code] += 1


class Client(Reader):
    def __init__(self, account: Account, ws: ClientConnection, stats: Stats) -> None:
        self.stats = stats
        super().__init__(account, ws, stats.closes)

    def on_frame(self, raw: str | bytes, now: float) -> None:
        stats = self.stats
        try:
            frame = _decode_frame(raw)
        except (msgspec.DecodeError, msgspec.ValidationError):
            stats.other_frames["(undecodable)"] += 1
            return
        if frame.type == "bench.event":
            stats.received += 1
            if len(stats.latencies_ms) < MAX_SAMPLES:
                stats.latencies_ms.append((now - frame.sent_at) * 1000)
            if stats.first_receive == 0.0:
                stats.first_receive = now
            stats.last_receive = now
            if frame.pos is None and stats.durable:
                stats.durable_without_pos += 1
        else:
            stats.other_frames[frame.type] += 1


R = TypeVar("R", bound=Reader)


async def connect_all(
    nodes: list[Node],
    accounts: list[Account],
    make: Callable[[Account, ClientConnection], R],
    concurrency: int,
    *,
    max_queue: int = 64,
) -> list[R]:
    """Open every account's socket on its node (up to ``hello``), in the accounts' order; a socket
    that fails to open is counted and left out."""
    opened: list[R | None] = [None] * len(accounts)
    failures: Counter[str] = Counter()
    pending = iter(enumerate(accounts))

    async def worker() -> None:
        for index, account in pending:  # shared iterator: each account is taken once
            node = nodes[account.node]
            uri = f"ws://{HOST}:{node.port}/ws?token={account.token}"
            try:
                ws = await connect(
                    uri,
                    open_timeout=30,
                    ping_interval=None,  # the server pings; we answer
                    compression=None,
                    max_queue=max_queue,
                    close_timeout=5,
                )
                raw = await asyncio.wait_for(ws.recv(), timeout=30)
                if _decode_frame(raw).type != "hello":
                    raise RuntimeError(f"first frame was not hello: {raw!r:.200}")
            except Exception as exc:
                failures[type(exc).__name__] += 1
                continue
            opened[index] = make(account, ws)

    await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(concurrency))), timeout=CONNECT_TIMEOUT)
    if failures:
        print(f"warning: {sum(failures.values())} sockets failed to open: {dict(failures)}")
    return [r for r in opened if r is not None]


async def close_all(readers: Sequence[Reader]) -> None:
    async def close(reader: Reader) -> None:
        with contextlib.suppress(Exception):
            await reader.ws.close()

    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*(close(r) for r in readers)), timeout=CLOSE_TIMEOUT)
    for reader in readers:
        reader.task.cancel()
    await asyncio.gather(*(r.task for r in readers), return_exceptions=True)


# --- publishing ----------------------------------------------------------------------------------


@dataclass
class PublishResult:
    events: int = 0
    deliveries_targeted: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    publish_ms: list[float] = field(default_factory=list)
    started: float = 0.0
    finished: float = 0.0


async def _publish(
    events: Events,
    groups: list[list[uuid.UUID]],
    rate: float,
    seconds: float,
    durable: bool,
    max_in_flight: int,
) -> PublishResult:
    """Publish to the groups in turn, paced so that deliveries/s approaches ``rate``."""
    result = PublishResult()
    fanout = statistics.mean(len(g) for g in groups)
    events_per_second = rate / fanout
    max_events = int(events_per_second * seconds) + 1
    in_flight = asyncio.Semaphore(max_in_flight)
    tasks: set[asyncio.Task[None]] = set()

    async def one(seq: int, users: list[uuid.UUID]) -> None:
        try:
            started = time.perf_counter()
            event = BenchEvent(seq=seq, sent_at=time.time())
            call = events.emit(users, event) if durable else events.push(users, event)
            await asyncio.wait_for(call, timeout=PUBLISH_TIMEOUT)
            result.publish_ms.append((time.perf_counter() - started) * 1000)
        except Exception as exc:
            result.errors[type(exc).__name__] += 1
        finally:
            in_flight.release()

    result.started = time.monotonic()
    deadline = result.started + seconds
    for seq in range(max_events):
        due = result.started + seq / events_per_second
        if due >= deadline:
            break
        now = time.monotonic()
        if due > now:
            await asyncio.sleep(due - now)
        await in_flight.acquire()  # when the publisher falls behind, the achieved rate shows it
        users = groups[seq % len(groups)]
        result.events += 1
        result.deliveries_targeted += len(users)
        task = asyncio.create_task(one(seq, users))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(tasks, timeout=DRAIN_TIMEOUT)
    result.finished = time.monotonic()
    return result


# --- reporting ------------------------------------------------------------------------------------


def _percentile(ordered: list[float], fraction: float) -> float:
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def _kib(value: float) -> str:
    return f"{value / 1024:.1f} KiB"


async def run(args: argparse.Namespace) -> None:
    _raise_nofile(args.sockets * 2 + 1000)
    async with cluster(args.nodes, "fanout") as bench:
        await _measure(args, bench)


async def _measure(args: argparse.Namespace, bench: Cluster) -> None:
    nodes = bench.nodes
    clients: list[Client] = []
    db: Database | None = None
    redis: Redis | None = None
    hub: RedisHub | None = None
    try:
        db = Database(
            load_settings(
                {
                    "ENVIRONMENT": "test",
                    "JWT_SECRET": "bench-" + "x" * 40,
                    "DATABASE_URL": bench.database_url,
                    "DATABASE_POOL_MIN": "2",
                    "DATABASE_POOL_MAX": str(args.max_in_flight + 2),
                }
            )
        )
        await db.open()
        redis = Redis.from_url(REDIS_URL)
        hub = RedisHub(redis, bench.prefix)

        def ignore(envelope: Envelope) -> None:
            return None

        await hub.start(ignore)
        events = Events(hub, db)

        started = time.monotonic()
        accounts = await _register(nodes, args.sockets, args.register_concurrency)
        print(f"registered {len(accounts)} users in {time.monotonic() - started:.1f} s")

        await asyncio.sleep(1)
        rss_before = [node.rss() for node in nodes]
        stats = Stats(durable=args.durable)
        started = time.monotonic()
        clients = await connect_all(
            nodes, accounts, lambda a, ws: Client(a, ws, stats), args.connect_concurrency
        )
        connect_seconds = time.monotonic() - started
        per_node = Counter(c.account.node for c in clients)
        print(f"opened {len(clients)} sockets in {connect_seconds:.1f} s ({dict(sorted(per_node.items()))})")

        # Idle: past WS_RESUME_GRACE (durable events flow after it), and long enough to see idle CPU.
        await asyncio.sleep(2)
        rss_after = [node.rss() for node in nodes]
        cpu_idle_start = [node.cpu_seconds() for node in nodes]
        idle_started = time.monotonic()
        await asyncio.sleep(args.idle_seconds)
        idle_seconds = max(1e-9, time.monotonic() - idle_started)
        cpu_idle = [node.cpu_seconds() - before for node, before in zip(nodes, cpu_idle_start, strict=True)]

        print()
        print(
            f"idle sockets: {len(clients)} over {args.nodes} node(s), idle window {args.idle_seconds:.0f} s"
        )
        for i in range(len(nodes)):
            sockets = per_node.get(i, 0)
            grown = rss_after[i] - rss_before[i]
            per_socket = grown / sockets if sockets else float("nan")
            print(
                f"  node {i}: RSS {rss_before[i] / 2**20:.1f} -> {rss_after[i] / 2**20:.1f} MiB, "
                f"{_kib(per_socket)} per socket ({sockets} sockets), "
                f"idle CPU {cpu_idle[i] / idle_seconds * 100:.1f}% of a core"
            )

        if args.rate <= 0 or not clients:
            return

        users = [c.account.user_id for c in clients]
        fanout = max(1, min(args.fanout, len(users)))
        groups = [users[i : i + fanout] for i in range(0, len(users), fanout)]
        if len(groups) > 1 and len(groups[-1]) < fanout:
            groups[-2].extend(groups.pop())  # keep every event's fan-out about equal

        stats.latencies_ms.clear()
        stats.received = 0
        stats.first_receive = stats.last_receive = 0.0
        window = CpuWindow(nodes)
        wall_start = time.time()
        result = await _publish(events, groups, args.rate, args.seconds, args.durable, args.max_in_flight)
        # Let the last deliveries arrive.
        deadline = time.monotonic() + DRAIN_TIMEOUT
        while stats.received < result.deliveries_targeted and time.monotonic() < deadline:
            if not any(c.open for c in clients):
                break
            await asyncio.sleep(0.05)
        use = window.end()
        wall, cpu = use.wall, use.nodes
        rss_end = [node.rss() for node in nodes]

        publish_seconds = result.finished - result.started
        ordered = sorted(stats.latencies_ms)
        delivery_seconds = max(1e-9, stats.last_receive - wall_start)
        open_now = sum(1 for c in clients if c.open)
        kind = "durable (emit)" if args.durable else "ephemeral (push)"
        print()
        print(
            f"{kind}: target {args.rate:.0f} deliveries/s for {args.seconds:.0f} s, "
            f"fan-out {fanout} users/event, {len(groups)} groups"
        )
        print(
            f"  published {result.events} events = {result.deliveries_targeted} deliveries in "
            f"{publish_seconds:.1f} s -> {result.deliveries_targeted / publish_seconds:.0f} deliveries/s "
            f"({result.events / publish_seconds:.0f} events/s); errors {dict(result.errors) or 0}"
        )
        if result.publish_ms:
            pub = sorted(result.publish_ms)
            print(f"  publish call: p50 {_percentile(pub, 0.5):.2f} ms, p99 {_percentile(pub, 0.99):.2f} ms")
        print(
            f"  received {stats.received} ({stats.received / max(1, result.deliveries_targeted) * 100:.2f}%)"
            f" -> {stats.received / delivery_seconds:.0f} deliveries/s"
        )
        print(
            f"  latency publish->deliver: p50 {_percentile(ordered, 0.5):.1f} ms, "
            f"p90 {_percentile(ordered, 0.9):.1f} ms, p99 {_percentile(ordered, 0.99):.1f} ms, "
            f"max {ordered[-1] if ordered else float('nan'):.1f} ms"
        )
        if args.durable:
            print(f"  durable frames without pos: {stats.durable_without_pos}")
        total_cpu = sum(cpu)
        for i in range(len(nodes)):
            print(
                f"  node {i}: CPU {cpu[i]:.1f} s = {cpu[i] / wall * 100:.0f}% of a core; "
                f"RSS {rss_end[i] / 2**20:.1f} MiB at the end"
            )
        if stats.received:
            print(f"  server CPU per delivery (all nodes): {total_cpu / stats.received * 1e6:.1f} us")
        use.print_rest()
        print(f"  sockets open at the end: {open_now}/{len(clients)}; closes by code: {dict(stats.closes)}")
        slow = stats.closes.get(CLOSE_SLOW_CONSUMER, 0)
        print(f"  closed as slow consumers (4008): {slow}")
        others = {k: v for k, v in stats.other_frames.items() if k != "hello"}
        if others:
            print(f"  other frames: {others}")
    finally:
        await close_all(clients)
        if hub is not None:
            await hub.stop()
        if db is not None:
            await db.close()
        if redis is not None:
            await redis.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, choices=(1, 2), default=1)
    parser.add_argument("--sockets", type=int, default=1000, help="sockets, one user each")
    parser.add_argument("--rate", type=float, default=10_000, help="target deliveries/s; 0: idle only")
    parser.add_argument("--seconds", type=float, default=20, help="how long to publish")
    parser.add_argument("--durable", action="store_true", help="Events.emit (PostgreSQL) instead of push")
    parser.add_argument("--fanout", type=int, default=100, help="users per event")
    parser.add_argument("--idle-seconds", type=float, default=5, help="idle window for idle CPU")
    parser.add_argument("--max-in-flight", type=int, default=16, help="publish calls at once")
    parser.add_argument("--register-concurrency", type=int, default=16)
    parser.add_argument("--connect-concurrency", type=int, default=100)
    args = parser.parse_args()
    if not 1 <= args.sockets <= MAX_SOCKETS:
        parser.error(f"--sockets must be 1..{MAX_SOCKETS}")
    if not 0 < args.seconds <= MAX_SECONDS or not 0 <= args.idle_seconds <= MAX_SECONDS:
        parser.error(f"--seconds and --idle-seconds must be at most {MAX_SECONDS:.0f}")
    if not 0 <= args.rate <= MAX_RATE:
        parser.error(f"--rate must be 0..{MAX_RATE}")
    if args.fanout < 1 or args.max_in_flight < 1:
        parser.error("--fanout and --max-in-flight must be at least 1")
    uvloop.run(run(args))


if __name__ == "__main__":
    main()
