"""Presence across sockets and nodes, on both hub implementations, including a node that dies."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
from collections.abc import Callable
from contextlib import AsyncExitStack

import pytest

from kintsugi_rt.settings import Settings
from tests.support import RedisServer, free_port, serve_node, spawn_server, wait_ready
from tests.test_delivery import hub_settings
from tests.wsclient import Socket, new_user


async def share_conversation(sock: Socket, other_id: str) -> None:
    reply = await sock.request("conversation.create", kind="direct", user_ids=[other_id])
    assert reply["type"] == "ok", reply


@pytest.mark.parametrize("hub", ["local", "redis"])
async def test_online_offline_and_last_seen_reach_related_users_only(
    hub: str, settings_for: Callable[..., Settings], redis_server: RedisServer
) -> None:
    async with serve_node(settings_for(**hub_settings(hub, redis_server))) as node:
        alice, bob, carol = [await new_user(node.url, n) for n in ("Alice", "Bob", "Carol")]
        bob_sock = await Socket.open(node.ws_url, bob.token)
        carol_sock = await Socket.open(node.ws_url, carol.token)
        await share_conversation(bob_sock, alice.id)
        reply = await bob_sock.request("presence.watch", user_ids=[alice.id, alice.id])
        assert reply["type"] == "ok"
        assert reply["users"] == [{"user_id": alice.id, "status": "offline"}]

        phone = await Socket.open(node.ws_url, alice.token)
        online = await bob_sock.expect("presence")
        assert online == {"type": "presence", "user_id": alice.id, "status": "online"}
        laptop = await Socket.open(node.ws_url, alice.token)
        await laptop.expect("hello")
        await phone.close()  # still online on the laptop: no event
        await asyncio.sleep(0.3)
        assert not [f for f in bob_sock.backlog if f["type"] == "presence"]

        await laptop.close()
        offline = await bob_sock.expect("presence")
        assert offline["status"] == "offline" and offline["user_id"] == alice.id and offline["last_seen"]

        state = await bob_sock.request("presence.watch", user_ids=[alice.id])
        assert state["users"][0]["status"] == "offline"
        assert state["users"][0]["last_seen"] == offline["last_seen"]

        assert (await carol_sock.request("ping"))["type"] == "pong"
        assert not [f for f in carol_sock.backlog if f["type"] == "presence"], "carol shares nothing"
        for sock in (bob_sock, carol_sock):
            await sock.close()


@pytest.mark.parametrize("hub", ["local", "redis"])
async def test_one_presence_frame_per_change_for_a_watcher_who_shares_a_conversation(
    hub: str, settings_for: Callable[..., Settings], redis_server: RedisServer
) -> None:
    """Regression (E18): watching someone you share a conversation with delivered every change twice."""
    async with serve_node(settings_for(**hub_settings(hub, redis_server))) as node:
        alice, bob = await new_user(node.url, "Alice"), await new_user(node.url, "Bob")
        bob_sock = await Socket.open(node.ws_url, bob.token)
        await share_conversation(bob_sock, alice.id)
        assert (await bob_sock.request("presence.watch", user_ids=[alice.id]))["type"] == "ok"
        alice_sock = await Socket.open(node.ws_url, alice.token)
        await alice_sock.expect("hello")
        await bob_sock.expect("presence")
        await asyncio.sleep(0.3)
        assert (await bob_sock.request("ping"))["type"] == "pong"
        assert not [f for f in bob_sock.backlog if f["type"] == "presence"], bob_sock.backlog
        for sock in (alice_sock, bob_sock):
            await sock.close()


async def test_strangers_and_unknown_users_look_the_same(settings_for: Callable[..., Settings]) -> None:
    """Regression (E19): anyone could watch any user id and learn their status and last seen."""
    async with serve_node(settings_for()) as node:
        alice, mallory = await new_user(node.url, "Alice"), await new_user(node.url, "Mallory")
        alice_sock = await Socket.open(node.ws_url, alice.token)
        await alice_sock.expect("hello")  # Alice is online
        sock = await Socket.open(node.ws_url, mallory.token)
        nobody = "00000000-0000-0000-0000-000000000001"
        reply = await sock.request("presence.watch", user_ids=[alice.id, nobody, mallory.id])
        assert reply["users"] == [
            {"user_id": alice.id, "status": "unknown"},
            {"user_id": nobody, "status": "unknown"},
            {"user_id": mallory.id, "status": "online"},  # yourself: always
        ], reply
        await alice_sock.close()  # Alice goes offline: Mallory hears nothing
        await asyncio.sleep(0.3)
        assert (await sock.request("ping"))["type"] == "pong"
        assert not [f for f in sock.backlog if f["type"] == "presence"], sock.backlog
        await sock.close()


async def test_presence_across_two_nodes(
    settings_for: Callable[..., Settings], redis_server: RedisServer
) -> None:
    settings = settings_for(**hub_settings("redis", redis_server))
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(serve_node(settings))
        b = await stack.enter_async_context(serve_node(settings))
        alice, bob = await new_user(a.url), await new_user(b.url)
        bob_on_b = await Socket.open(b.ws_url, bob.token)
        await share_conversation(bob_on_b, alice.id)
        alice_on_a = await Socket.open(a.ws_url, alice.token)
        assert (await bob_on_b.expect("presence"))["status"] == "online"
        alice_on_b = await Socket.open(b.ws_url, alice.token)
        await alice_on_b.expect("hello")
        await alice_on_a.close()  # still on node B
        await alice_on_b.request("ping")
        assert (await bob_on_b.request("ping"))["type"] == "pong"
        assert not [f for f in bob_on_b.backlog if f["type"] == "presence"]
        await alice_on_b.close()
        assert (await bob_on_b.expect("presence"))["status"] == "offline"
        await bob_on_b.close()


async def test_a_killed_node_lets_its_users_go_offline(
    settings_for: Callable[..., Settings], redis_server: RedisServer, database_url: str, tmp_path: object
) -> None:
    prefix = f"t{secrets.token_hex(4)}:"
    common = {**hub_settings("redis", redis_server, prefix), "PRESENCE_TTL": "3s"}
    port = free_port()
    env = {
        **os.environ,
        **common,
        "PORT": str(port),
        "DATABASE_URL": database_url,
        "ENVIRONMENT": "test",
        "JWT_SECRET": settings_for().jwt_secret,
        "ARGON2_MEMORY_KIB": "8192",
        "ARGON2_TIME_COST": "1",
        "LOG_LEVEL": "warning",
    }
    doomed = await spawn_server(env)
    try:
        await wait_ready(f"http://127.0.0.1:{port}", doomed)
        async with serve_node(settings_for(**common)) as survivor:
            alice, bob = await new_user(survivor.url), await new_user(survivor.url)
            bob_sock = await Socket.open(survivor.ws_url, bob.token)
            await share_conversation(bob_sock, alice.id)
            alice_sock = await Socket.open(f"ws://127.0.0.1:{port}/ws", alice.token)
            assert (await bob_sock.expect("presence"))["status"] == "online"

            doomed.send_signal(signal.SIGKILL)  # no cleanup of any kind
            await doomed.wait()
            loop = asyncio.get_running_loop()
            started = loop.time()
            offline = await bob_sock.expect("presence", timeout=20)
            assert offline["status"] == "offline" and offline["user_id"] == alice.id
            assert loop.time() - started < 10  # TTL 3 s plus a sweep; the default 30 s TTL stays under 60 s
            await bob_sock.close()
            del alice_sock
    finally:
        if doomed.returncode is None:
            doomed.kill()
            await doomed.wait()
