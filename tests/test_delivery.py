"""Durable delivery and resume, on both hub implementations and across nodes."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import timedelta
from typing import Any

import httpx
import pytest

from kintsugi_rt.settings import Settings
from kintsugi_rt.socket import streams
from kintsugi_rt.socket.protocol import ServerMessage
from tests.support import Node, RedisServer, serve_node
from tests.wsclient import Socket, new_user


class Note(ServerMessage, tag="test.note"):
    text: str


HUBS = ["local", "redis"]


def hub_settings(hub: str, redis_server: RedisServer, prefix: str | None = None) -> dict[str, str]:
    if hub == "local":
        return {}
    return {"REDIS_URL": redis_server.url, "REDIS_KEY_PREFIX": prefix or f"t{secrets.token_hex(4)}:"}


async def read_notes(sock: Socket, count: int, timeout: float = 10) -> list[dict[str, Any]]:
    return [await sock.expect("test.note", timeout=timeout) for _ in range(count)]


async def resume(sock: Socket, epoch: str, pos: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Send resume; return the replayed notes and the terminal frame (resumed or resync_required)."""
    await sock.send({"type": "resume", "id": "res", "epoch": epoch, "pos": pos})
    replayed: list[dict[str, Any]] = []
    while True:
        frame = await sock.recv(timeout=10)
        if frame["type"] in ("resumed", "resync_required"):
            assert frame["id"] == "res"
            return replayed, frame
        if frame["type"] == "test.note":
            replayed.append(frame)


@pytest.mark.parametrize("hub", HUBS)
async def test_live_durable_events_carry_positions(
    hub: str, settings_for: Callable[..., Settings], redis_server: RedisServer
) -> None:
    async with serve_node(settings_for(**hub_settings(hub, redis_server))) as node:
        user = await new_user(node.url)
        sock = await Socket.open(node.ws_url, user.token)
        hello = await sock.expect("hello")
        for i in range(3):
            await node.ctx.events.emit([uuid.UUID(user.id)], Note(text=f"n{i}"))
        notes = await read_notes(sock, 3)
        assert [(n["pos"], n["text"]) for n in notes] == [(1, "n0"), (2, "n1"), (3, "n2")]
        assert hello["pos"] == 0
        await sock.close()


@pytest.mark.parametrize("hub", HUBS)
async def test_resume_after_reconnect_loses_nothing_and_repeats_nothing(
    hub: str, settings_for: Callable[..., Settings], redis_server: RedisServer
) -> None:
    async with serve_node(settings_for(**hub_settings(hub, redis_server))) as node:
        user = await new_user(node.url)
        uid = uuid.UUID(user.id)
        sock = await Socket.open(node.ws_url, user.token)
        hello = await sock.expect("hello")
        for i in range(3):
            await node.ctx.events.emit([uid], Note(text=f"before-{i}"))
        seen = await read_notes(sock, 2)  # the client dies having read only two
        await sock.close()

        for i in range(4):
            await node.ctx.events.emit([uid], Note(text=f"offline-{i}"))

        again = await Socket.open(node.ws_url, user.token)
        hello2 = await again.expect("hello")
        assert hello2["epoch"] == hello["epoch"] and hello2["pos"] == 7
        # Events keep coming while the client resumes.
        live = asyncio.create_task(node.ctx.events.emit([uid], Note(text="during")))
        replayed, done = await resume(again, hello["epoch"], seen[-1]["pos"])
        await live
        assert done["type"] == "resumed"
        tail = replayed + (await read_notes(again, 1) if len(replayed) == 5 else [])
        positions = [n["pos"] for n in seen + tail]
        assert positions == list(range(1, 9))
        assert [n["text"] for n in tail][:5] == [
            "before-2",
            "offline-0",
            "offline-1",
            "offline-2",
            "offline-3",
        ]
        assert (await again.request("ping"))["type"] == "pong"
        await asyncio.sleep(0.2)
        assert not [f for f in again.backlog if f.get("type") == "test.note"], "no duplicates"
        await again.close()


async def test_resume_beyond_the_window_or_from_another_epoch_needs_resync(
    settings_for: Callable[..., Settings],
) -> None:
    async with serve_node(settings_for(WS_MAX_REPLAY="5")) as node:
        user = await new_user(node.url)
        uid = uuid.UUID(user.id)
        for i in range(8):
            await node.ctx.events.emit([uid], Note(text=str(i)))
        sock = await Socket.open(node.ws_url, user.token)
        hello = await sock.expect("hello")
        replayed, done = await resume(sock, hello["epoch"], 1)
        assert replayed == []
        assert done["type"] == "resync_required" and done["reason"] == "beyond_window" and done["pos"] == 8

        other = await Socket.open(node.ws_url, user.token)
        await other.expect("hello")
        _, done = await resume(other, str(uuid.uuid4()), 7)
        assert done["reason"] == "epoch_changed"

        ahead = await Socket.open(node.ws_url, user.token)
        await ahead.expect("hello")
        _, done = await resume(ahead, hello["epoch"], 99)
        assert done["reason"] == "position_ahead"

        # Within the window it replays.
        fine = await Socket.open(node.ws_url, user.token)
        await fine.expect("hello")
        replayed, done = await resume(fine, hello["epoch"], 4)
        assert [n["pos"] for n in replayed] == [5, 6, 7, 8] and done["type"] == "resumed"
        for s in (sock, other, ahead, fine):
            await s.close()


async def test_trimmed_events_need_resync(settings_for: Callable[..., Settings]) -> None:
    async with serve_node(settings_for()) as node:
        user = await new_user(node.url)
        uid = uuid.UUID(user.id)
        for i in range(3):
            await node.ctx.events.emit([uid], Note(text=str(i)))
        removed = await streams.trim(node.ctx.db.pool, node.ctx.clock.now() + timedelta(hours=1))
        assert removed >= 3
        sock = await Socket.open(node.ws_url, user.token)
        hello = await sock.expect("hello")
        assert hello["pos"] == 3  # positions are never reused
        _, done = await resume(sock, hello["epoch"], 0)
        assert done["type"] == "resync_required" and done["reason"] == "beyond_window"
        await sock.close()


async def test_positions_survive_a_node_restart(settings_for: Callable[..., Settings]) -> None:
    settings = settings_for()
    async with serve_node(settings) as node:
        user = await new_user(node.url)
        uid = uuid.UUID(user.id)
        sock = await Socket.open(node.ws_url, user.token)
        hello = await sock.expect("hello")
        await node.ctx.events.emit([uid], Note(text="one"))
        first = await read_notes(sock, 1)
        await node.ctx.events.emit([uid], Note(text="two"))  # sent as the node goes down
    async with serve_node(settings) as node:
        await node.ctx.events.emit([uid], Note(text="three"))
        again = await Socket.open(node.ws_url, user.token)
        await again.expect("hello")
        replayed, done = await resume(again, hello["epoch"], first[-1]["pos"])
        assert [(n["pos"], n["text"]) for n in replayed] == [(2, "two"), (3, "three")]
        assert done == {"type": "resumed", "epoch": hello["epoch"], "pos": 3, "replayed": 2, "id": "res"}
        await again.close()


async def test_out_of_order_arrival_is_put_back_in_order(settings_for: Callable[..., Settings]) -> None:
    """Two nodes can publish one user's positions N and N+1 so that N+1 arrives first."""
    async with serve_node(settings_for(WS_RESUME_GRACE="10ms")) as node:
        user = await new_user(node.url)
        uid = uuid.UUID(user.id)
        sock = await Socket.open(node.ws_url, user.token)
        await sock.expect("hello")
        await sock.request("ping")  # passes the sync point
        deliveries = []
        for text in ("first", "second", "third"):
            async with node.ctx.db.pool.acquire() as conn, conn.transaction():
                deliveries.append(await streams.append(conn, [uid], Note(text=text)))
        for delivery in reversed(deliveries):  # published last-first
            await node.ctx.events.publish_durable(delivery)
        notes = await read_notes(sock, 3)
        assert [(n["pos"], n["text"]) for n in notes] == [(1, "first"), (2, "second"), (3, "third")]
        assert (await sock.request("ping"))["type"] == "pong"
        assert not [f for f in sock.backlog if f.get("type") == "test.note"], "late copies are dropped"
        await sock.close()


async def test_concurrent_appends_give_each_user_gapless_positions(
    settings_for: Callable[..., Settings],
) -> None:
    async with serve_node(settings_for()) as node:
        users = [uuid.UUID((await new_user(node.url)).id) for _ in range(4)]

        async def writer(k: int) -> None:
            for i in range(10):
                # Overlapping, differently ordered recipient sets: must not deadlock or skip.
                group = users[k % 4 :] + users[: k % 4]
                await node.ctx.events.emit(
                    group[:3] if k % 2 else list(reversed(group)), Note(text=f"{k}-{i}")
                )

        await asyncio.gather(*(writer(k) for k in range(8)))
        for uid in users:
            head = await streams.head(node.ctx.db.pool, uid)
            rows = await streams.read_range(node.ctx.db.pool, uid, 0, None, 1000)
            assert [pos for pos, _ in rows] == list(range(1, head.pos + 1))


async def test_a_missing_stream_is_created_without_holding_other_locks(
    settings_for: Callable[..., Settings],
) -> None:
    """Transaction A appends to an existing stream and a missing one that B has just created (not yet
    committed); B then needs A's existing stream. A must wait for B holding nothing, or they deadlock."""
    async with serve_node(settings_for()) as node:
        existing = uuid.UUID((await new_user(node.url)).id)
        missing = uuid.UUID((await new_user(node.url)).id)
        pool = node.ctx.db.pool
        await streams.head(pool, existing)  # as when its user connected; `missing` never did
        async with pool.acquire() as a, pool.acquire() as b:
            b_tx = b.transaction()
            await b_tx.start()
            await streams.lock(b, [missing])  # B creates the missing stream and holds it
            a_tx = a.transaction()
            await a_tx.start()
            a_append = asyncio.create_task(streams.append(a, [existing, missing], Note(text="a")))
            await asyncio.sleep(0.3)  # A now waits for B's uncommitted stream
            assert not a_append.done()
            await asyncio.wait_for(streams.lock(b, [existing]), timeout=5)  # not held by A
            await streams.append(b, [existing, missing], Note(text="b"))
            await b_tx.commit()
            delivery = await asyncio.wait_for(a_append, timeout=5)
            await a_tx.commit()
        assert sorted(delivery.positions) == [2, 2]
        rows = await streams.read_range(pool, existing, 0, None, 10)
        assert [pos for pos, _ in rows] == [1, 2]


@asynccontextmanager
async def two_nodes(
    settings_for: Callable[..., Settings], redis_server: RedisServer
) -> AsyncIterator[list[Node]]:
    prefix = f"t{secrets.token_hex(4)}:"
    settings = settings_for(**hub_settings("redis", redis_server, prefix))
    async with AsyncExitStack() as stack:
        yield [await stack.enter_async_context(serve_node(settings)) for _ in range(2)]


async def test_two_nodes_behave_as_one(
    settings_for: Callable[..., Settings], redis_server: RedisServer
) -> None:
    async with two_nodes(settings_for, redis_server) as (a, b):
        alice, bob = await new_user(a.url), await new_user(b.url)
        alice_on_a = await Socket.open(a.ws_url, alice.token)
        alice_on_b = await Socket.open(b.ws_url, alice.token)
        bob_on_b = await Socket.open(b.ws_url, bob.token)
        for sock in (alice_on_a, alice_on_b, bob_on_b):
            await sock.expect("hello")

        # Published on node A, received on both nodes by every socket of each addressee.
        await a.ctx.events.emit([uuid.UUID(alice.id), uuid.UUID(bob.id)], Note(text="hi all"))
        for sock in (alice_on_a, alice_on_b, bob_on_b):
            note = await sock.expect("test.note")
            assert note["text"] == "hi all" and note["pos"] == 1

        # Ephemeral to one connection on the other node.
        hello_b = alice_on_b.backlog
        assert not hello_b
        conn_id = next(c.conn_id for c in _connections(b) if str(c.user_id) == alice.id)
        await a.ctx.events.push_connection(conn_id, Note(text="just you"))
        assert (await alice_on_b.expect("test.note"))["text"] == "just you"
        assert (await alice_on_a.request("ping"))["type"] == "pong"
        assert not [f for f in alice_on_a.backlog if f.get("text") == "just you"]

        # Resume on node B what was published on node A while the client was away.
        await alice_on_a.close()
        await a.ctx.events.emit([uuid.UUID(alice.id)], Note(text="missed"))
        back = await Socket.open(b.ws_url, alice.token)
        hello = await back.expect("hello")
        replayed, done = await resume(back, hello["epoch"], 1)
        assert [n["text"] for n in replayed] == ["missed"] and done["pos"] == 2

        # logout-all on node B closes the user's socket on node A.
        alice_again_on_a = await Socket.open(a.ws_url, alice.token)
        await alice_again_on_a.expect("hello")
        async with httpx.AsyncClient(base_url=b.url) as http:
            response = await http.post(
                "/api/auth/logout-all", headers={"Authorization": f"Bearer {alice.token}"}
            )
            assert response.status_code == 200
        assert await alice_again_on_a.closed_with() == 4401
        assert await alice_on_b.closed_with() == 4401
        assert (await bob_on_b.request("ping"))["type"] == "pong"
        await bob_on_b.close()
        await back.close()


def _connections(node: Node) -> list[Any]:
    gateway: Any = node.services.gateway
    return list(gateway.local.by_id.values())
