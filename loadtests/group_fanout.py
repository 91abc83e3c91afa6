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
import random
import secrets
import time
from collections import Counter
from dataclasses import dataclass, field

import msgspec
import uvloop
from websockets.asyncio.client import ClientConnection

from loadtests.fanout import (
    Account,
    Cluster,
    CpuWindow,
    Reader,
    _percentile,
    _raise_nofile,
    _register,
    close_all,
    cluster,
    connect_all,
)

MAX_MEMBERS = 1000
MAX_SOCKETS = 20_000
MAX_SECONDS = 600.0
MAX_RATE = 2_000
REPLY_TIMEOUT = 30.0
DRAIN_TIMEOUT = 15.0


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


class Member(Reader):
    """One user's socket: records when each benchmark message reaches it, and matches replies."""

    def __init__(self, account: Account, ws: ClientConnection, tracker: Tracker) -> None:
        self.tracker = tracker
        super().__init__(account, ws, tracker.closes)

    def on_frame(self, raw: str | bytes, now: float) -> None:
        tracker = self.tracker
        try:
            frame = _decode_frame(raw)
        except (msgspec.DecodeError, msgspec.ValidationError):
            tracker.other_frames["(undecodable)"] += 1
            return
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

    async def request(self, frame: dict[str, object]) -> _Frame:
        request_id = secrets.token_hex(8)
        waiter: asyncio.Future[_Frame] = asyncio.get_running_loop().create_future()
        self.tracker.replies[request_id] = waiter
        await self.ws.send(_encode({**frame, "id": request_id}).decode())
        return await asyncio.wait_for(waiter, timeout=REPLY_TIMEOUT)


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
    _raise_nofile(args.groups * args.members * 2 + 1000)
    async with cluster(args.nodes, "group") as bench:
        await _measure(args, bench)


async def _measure(args: argparse.Namespace, bench: Cluster) -> None:
    nodes = bench.nodes
    members: list[Member] = []
    try:
        started = time.monotonic()
        accounts = await _register(nodes, args.groups * args.members, args.register_concurrency)
        print(f"registered {len(accounts)} users in {time.monotonic() - started:.1f} s")
        tracker = Tracker()
        members = await connect_all(
            nodes, accounts, lambda a, ws: Member(a, ws, tracker), args.connect_concurrency, max_queue=256
        )
        groups = await _create_groups(members, args.members)
        print(f"opened {len(members)} sockets; created {len(groups)} groups of {args.members} members")
        await asyncio.sleep(3)  # past WS_RESUME_GRACE, and let conversation.updated pushes settle

        window = CpuWindow(nodes)
        sent_count, send_seconds = await _send_messages(
            groups, tracker, args.rate, args.seconds, args.text_size
        )
        drain_deadline = time.monotonic() + DRAIN_TIMEOUT
        while time.monotonic() < drain_deadline:
            if all(len(s.received) >= s.members for s in tracker.sent.values()):
                break
            await asyncio.sleep(0.05)
        use = window.end()

        print()
        print(
            f"group messages: {args.rate:.0f} messages/s for {args.seconds:.0f} s, "
            f"{args.groups} groups x {args.members} members over {args.nodes} node(s)"
        )
        _report(tracker, sent_count, send_seconds, members, len(groups))
        for i, cpu in enumerate(use.nodes):
            print(f"  node {i}: CPU {cpu:.1f} s = {cpu / use.wall * 100:.0f}% of a core")
        use.print_rest()
    finally:
        await close_all(members)


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
