"""Messenger group fan-out benchmark: ``message.send`` → ``message.new`` on every member's socket.

    .venv/bin/python -m loadtests.group_fanout --nodes 1 --groups 10 --members 100 --rate 20 --seconds 20
    .venv/bin/python -m loadtests.group_fanout --nodes 2 --groups 10 --members 100 --rate 20 --seconds 20

It needs PostgreSQL (trust auth, user postgres) and Redis on 127.0.0.1. Like ``loadtests.fanout`` it
creates a fresh database and Redis key prefix (both removed at the end) and starts the
``kintsugi-rt serve`` nodes itself. It registers ``groups x members`` users, one socket each (the
sockets alternate between the nodes, so every group spans both), and the first member of each group
creates it with ``conversation.create {kind: group}``. Then members send ``message.send`` frames at
``--rate`` messages/s in total, each from a random member of the next group in turn, through their
own sockets; the server stores each message (PostgreSQL: seq, durable event) and fans
``message.new`` out to every member's socket, the sender's included.

Reported per message: the time from the sender's ``send`` call until the ``message.new`` reached the
*last* of the group's members ("send → all members", the issue's p99), and per delivery the time
until each member's socket got it; plus the sender's ``ok`` reply time. One process and one clock
stamp both ends. The benchmark client shares the machine's cores with the nodes, PostgreSQL and
Redis; its own CPU use is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import secrets
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import msgspec
import psutil
import uvloop
from redis.asyncio import Redis
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from loadtests.fanout import (
    HOST,
    POSTGRES_ADMIN_DSN,
    REDIS_URL,
    Account,
    Node,
    _log_summary,
    _percentile,
    _raise_nofile,
    _register,
    _start_node,
    _stop_nodes,
    _wait_ready,
)

MAX_MEMBERS = 1000
MAX_SOCKETS = 20_000
MAX_SECONDS = 600.0
MAX_RATE = 2_000
CONNECT_TIMEOUT = 600.0
REPLY_TIMEOUT = 30.0
DRAIN_TIMEOUT = 15.0
CLOSE_TIMEOUT = 60.0


class _Message(msgspec.Struct):
    client_msg_id: str = ""


class _Frame(msgspec.Struct):
    """The fields of any server frame that the benchmark reads; others are ignored."""

    type: str
    id: str | None = None
    code: str | None = None
    message: _Message | str | None = None
    conversation: dict[str, object] | None = None


_decode_frame = msgspec.json.Decoder(_Frame).decode
_encode = msgspec.json.encode


@dataclass
class Sent:
    """One benchmark message: when it was sent and when each member's socket got it."""

    sent_at: float
    members: int
    received: list[float] = field(default_factory=list)
    acked_at: float = 0.0
    error: str = ""


@dataclass
class Tracker:
    sent: dict[str, Sent] = field(default_factory=dict)
    replies: dict[str, asyncio.Future[_Frame]] = field(default_factory=dict)
    other_frames: Counter[str] = field(default_factory=Counter)
    closes: Counter[int] = field(default_factory=Counter)
    unknown_messages: int = 0


class Member:
    """One user's socket and its reader task."""

    def __init__(self, account: Account, ws: ClientConnection, tracker: Tracker) -> None:
        self.account = account
        self.ws = ws
        self.tracker = tracker
        self.open = True
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        tracker = self.tracker
        try:
            async for raw in self.ws:
                now = time.time()
                try:
                    frame = _decode_frame(raw)
                except (msgspec.DecodeError, msgspec.ValidationError):
                    tracker.other_frames["(undecodable)"] += 1
                    continue
                if frame.type == "message.new" and isinstance(frame.message, _Message):
                    sent = tracker.sent.get(frame.message.client_msg_id)
                    if sent is None:
                        tracker.unknown_messages += 1
                    else:
                        sent.received.append(now)
                elif frame.id is not None and frame.type in {"ok", "error"}:
                    waiter = tracker.replies.pop(frame.id, None)
                    if waiter is not None and not waiter.done():
                        waiter.set_result(frame)
                    sent = tracker.sent.get(frame.id)
                    if sent is not None:
                        sent.acked_at = now
                        if frame.type == "error":
                            sent.error = frame.code or "error"
                else:
                    tracker.other_frames[frame.type] += 1
        except ConnectionClosed:
            pass
        finally:
            self.open = False
            if self.ws.close_code is not None:
                tracker.closes[self.ws.close_code] += 1

    async def request(self, frame: dict[str, object]) -> _Frame:
        request_id = secrets.token_hex(8)
        waiter: asyncio.Future[_Frame] = asyncio.get_running_loop().create_future()
        self.tracker.replies[request_id] = waiter
        await self.ws.send(_encode({**frame, "id": request_id}).decode())
        return await asyncio.wait_for(waiter, timeout=REPLY_TIMEOUT)


async def _connect_all(
    nodes: list[Node], accounts: list[Account], tracker: Tracker, concurrency: int
) -> list[Member]:
    members: list[Member | None] = [None] * len(accounts)
    pending = iter(enumerate(accounts))

    async def worker() -> None:
        for index, account in pending:
            node = nodes[account.node]
            ws = await connect(
                f"ws://{HOST}:{node.port}/ws?token={account.token}",
                open_timeout=30,
                ping_interval=None,
                compression=None,
                max_queue=256,
                close_timeout=5,
            )
            raw = await asyncio.wait_for(ws.recv(), timeout=30)
            if _decode_frame(raw).type != "hello":
                raise SystemExit(f"first frame was not hello: {raw!r:.200}")
            members[index] = Member(account, ws, tracker)

    await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(concurrency))), timeout=CONNECT_TIMEOUT)
    return [m for m in members if m is not None]


async def _close_all(members: list[Member]) -> None:
    async def close(member: Member) -> None:
        with contextlib.suppress(Exception):
            await member.ws.close()

    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*(close(m) for m in members)), timeout=CLOSE_TIMEOUT)
    for member in members:
        member.task.cancel()
    await asyncio.gather(*(m.task for m in members), return_exceptions=True)


@dataclass
class Group:
    conversation_id: str
    members: list[Member]


async def _create_groups(members: list[Member], size: int) -> list[Group]:
    groups: list[Group] = []
    for start in range(0, len(members) - size + 1, size):
        part = members[start : start + size]
        owner = part[0]
        reply = await owner.request(
            {
                "type": "conversation.create",
                "kind": "group",
                "title": f"bench {start // size}",
                "user_ids": [str(m.account.user_id) for m in part[1:]],
            }
        )
        if reply.type != "ok" or reply.conversation is None:
            raise SystemExit(f"conversation.create failed: {reply}")
        groups.append(Group(str(reply.conversation["id"]), part))
    return groups


async def _send_messages(
    groups: list[Group], tracker: Tracker, rate: float, seconds: float, text_size: int
) -> tuple[int, float]:
    """Send ``rate`` messages/s for ``seconds``, round-robin over the groups; return (sent, seconds)."""
    chooser = random.Random(7)
    text = "x" * text_size
    started = time.monotonic()
    deadline = started + seconds
    count = 0
    while True:
        due = started + count / rate
        if due >= deadline:
            break
        now = time.monotonic()
        if due > now:
            await asyncio.sleep(due - now)
        group = groups[count % len(groups)]
        sender = chooser.choice(group.members)
        if not sender.open:
            count += 1
            continue
        client_msg_id = f"bench-{count}"
        frame = {
            "type": "message.send",
            "id": client_msg_id,
            "conversation_id": group.conversation_id,
            "client_msg_id": client_msg_id,
            "text": f"{text} {count}",
        }
        tracker.sent[client_msg_id] = Sent(sent_at=time.time(), members=len(group.members))
        await sender.ws.send(_encode(frame).decode())
        count += 1
    return count, time.monotonic() - started


def _report(
    tracker: Tracker, sent_count: int, send_seconds: float, members: list[Member], groups: int
) -> None:
    all_members: list[float] = []
    per_delivery: list[float] = []
    acks: list[float] = []
    incomplete = 0
    deliveries = 0
    expected = 0
    errors: Counter[str] = Counter()
    for sent in tracker.sent.values():
        expected += sent.members
        deliveries += len(sent.received)
        if sent.error:
            errors[sent.error] += 1
        if sent.acked_at:
            acks.append((sent.acked_at - sent.sent_at) * 1000)
        per_delivery.extend((t - sent.sent_at) * 1000 for t in sent.received)
        if len(sent.received) >= sent.members:
            all_members.append((max(sent.received) - sent.sent_at) * 1000)
        else:
            incomplete += 1
    all_members.sort()
    per_delivery.sort()
    acks.sort()

    def line(values: list[float]) -> str:
        if not values:
            return "no samples"
        return (
            f"p50 {_percentile(values, 0.5):.1f} ms, p90 {_percentile(values, 0.9):.1f} ms, "
            f"p99 {_percentile(values, 0.99):.1f} ms, max {values[-1]:.1f} ms"
        )

    print(
        f"  sent {sent_count} messages in {send_seconds:.1f} s ({sent_count / send_seconds:.1f}/s) "
        f"to {groups} groups; send errors {dict(errors) or 0}"
    )
    print(f"  deliveries {deliveries}/{expected} ({deliveries / max(1, expected) * 100:.2f}%)")
    print(f"  send -> all members: {line(all_members)}; incomplete messages {incomplete}")
    print(f"  send -> each member: {line(per_delivery)}")
    print(f"  send -> ok reply:    {line(acks)}")
    open_now = sum(1 for m in members if m.open)
    print(f"  sockets open at the end: {open_now}/{len(members)}; closes by code: {dict(tracker.closes)}")
    if tracker.unknown_messages:
        print(f"  message.new frames for messages this run did not send: {tracker.unknown_messages}")
    others = {k: v for k, v in tracker.other_frames.items() if k not in {"hello", "presence"}}
    if others:
        print(f"  other frames: {others}")


async def run(args: argparse.Namespace) -> None:
    sockets = args.groups * args.members
    _raise_nofile(sockets * 2 + 1000)
    tag = secrets.token_hex(4)
    database = f"kintsugi_group_{tag}"
    prefix = f"kintsugi-group-{tag}:"
    database_url = f"postgresql://postgres@{HOST}:5432/{database}"
    admin = await asyncpg.connect(POSTGRES_ADMIN_DSN)
    await admin.execute(f'CREATE DATABASE "{database}"')
    workdir = Path(tempfile.mkdtemp(prefix="kintsugi-group-"))
    nodes: list[Node] = []
    members: list[Member] = []
    me = psutil.Process()
    try:
        for index in range(args.nodes):
            nodes.append(_start_node(database_url, prefix, workdir, index))
        for node in nodes:
            await _wait_ready(node)
        print(f"{args.nodes} node(s) ready on ports {[n.port for n in nodes]}; database {database}")

        started = time.monotonic()
        accounts = await _register(nodes, sockets, args.register_concurrency)
        print(f"registered {len(accounts)} users in {time.monotonic() - started:.1f} s")
        tracker = Tracker()
        members = await _connect_all(nodes, accounts, tracker, args.connect_concurrency)
        groups = await _create_groups(members, args.members)
        print(f"opened {len(members)} sockets; created {len(groups)} groups of {args.members} members")
        await asyncio.sleep(3)  # past WS_RESUME_GRACE, and let conversation.updated pushes settle

        cpu_start = [node.cpu_seconds() for node in nodes]
        me_start = me.cpu_times()
        machine_start = psutil.cpu_times()
        wall_start = time.time()
        sent_count, send_seconds = await _send_messages(
            groups, tracker, args.rate, args.seconds, args.text_size
        )
        drain_deadline = time.monotonic() + DRAIN_TIMEOUT
        while time.monotonic() < drain_deadline:
            if all(len(s.received) >= s.members for s in tracker.sent.values()):
                break
            await asyncio.sleep(0.05)
        wall = time.time() - wall_start
        cpu = [node.cpu_seconds() - before for node, before in zip(nodes, cpu_start, strict=True)]
        me_end = me.cpu_times()
        me_cpu = (me_end.user + me_end.system) - (me_start.user + me_start.system)
        machine_end = psutil.cpu_times()
        machine_busy = (sum(machine_end) - machine_end.idle - machine_end.iowait) - (
            sum(machine_start) - machine_start.idle - machine_start.iowait
        )

        print()
        print(
            f"group messages: {args.rate:.0f} messages/s for {args.seconds:.0f} s, "
            f"{args.groups} groups x {args.members} members over {args.nodes} node(s)"
        )
        _report(tracker, sent_count, send_seconds, members, len(groups))
        for i in range(len(nodes)):
            print(f"  node {i}: CPU {cpu[i]:.1f} s = {cpu[i] / wall * 100:.0f}% of a core")
        print(f"  benchmark process CPU: {me_cpu / wall * 100:.0f}% of a core")
        rest = machine_busy - sum(cpu) - me_cpu
        print(
            f"  whole machine busy: {machine_busy / wall * 100:.0f}% of a core ({psutil.cpu_count()} cores); "
            f"everything else (PostgreSQL, Redis, other work): {rest / wall * 100:.0f}%"
        )
    finally:
        await _close_all(members)
        for i, node in enumerate(nodes):
            if node.process.poll() is not None:
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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, choices=(1, 2), default=1)
    parser.add_argument("--groups", type=int, default=10)
    parser.add_argument("--members", type=int, default=100, help="members per group (sockets)")
    parser.add_argument("--rate", type=float, default=20, help="messages/s over all groups")
    parser.add_argument("--seconds", type=float, default=20, help="how long to send")
    parser.add_argument("--text-size", type=int, default=100, help="characters per message")
    parser.add_argument("--register-concurrency", type=int, default=16)
    parser.add_argument("--connect-concurrency", type=int, default=50)
    args = parser.parse_args()
    if not 2 <= args.members <= MAX_MEMBERS:
        parser.error(f"--members must be 2..{MAX_MEMBERS}")
    if args.groups < 1 or args.groups * args.members > MAX_SOCKETS:
        parser.error(f"--groups x --members must be 1..{MAX_SOCKETS} sockets")
    if not 0 < args.seconds <= MAX_SECONDS or not 0 < args.rate <= MAX_RATE:
        parser.error(f"--seconds must be 0..{MAX_SECONDS:.0f} and --rate 0..{MAX_RATE}")
    if not 1 <= args.text_size <= 4000:
        parser.error("--text-size must be 1..4000")
    uvloop.run(run(args))


if __name__ == "__main__":
    main()
