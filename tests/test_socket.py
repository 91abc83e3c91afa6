"""The socket over real WebSockets: auth paths, close codes, the typed protocol, flow control."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import msgspec
import pytest
import websockets

from kintsugi_rt.settings import Settings
from kintsugi_rt.socket.gateway import Gateway
from kintsugi_rt.socket.protocol import ServerMessage
from tests.support import serve_node
from tests.wsclient import Socket, login, new_user


class Note(ServerMessage, tag="test.note"):
    """A durable event type the tests publish through the same API modules use."""

    text: str


async def test_token_in_query(settings_for: Callable[..., Settings]) -> None:
    async with serve_node(settings_for()) as node:
        user = await new_user(node.url)
        sock = await Socket.open(node.ws_url, user.token)
        hello = await sock.recv()
        assert hello["type"] == "hello"
        assert hello["user_id"] == user.id
        assert hello["pos"] == 0 and hello["epoch"]
        assert hello["protocol"] == "json"
        assert (await sock.request("ping"))["type"] == "pong"
        await sock.close()


async def test_an_idle_socket_holds_no_writer_queue_or_grace_timer(
    settings_for: Callable[..., Settings],
) -> None:
    """Memory per idle socket (docs/performance.md): once its frames are written and the resume grace
    is over, a connection keeps no writer task, no queue and no grace timer; they come back on demand."""
    async with serve_node(settings_for(WS_RESUME_GRACE="10ms")) as node:
        user = await new_user(node.url)
        sock = await Socket.open(node.ws_url, user.token)
        hello = await sock.expect("hello")
        await asyncio.sleep(0.1)
        gateway = node.services.gateway
        assert isinstance(gateway, Gateway)
        conn = gateway.local.by_id[hello["conn_id"]]
        assert conn.synced
        assert (conn._writer, conn._queue, conn.grace) == (None, None, None)
        assert conn.expiry is not None and not conn.topics
        assert (await sock.request("ping"))["type"] == "pong"
        await node.ctx.events.emit([uuid.UUID(user.id)], Note(text="after idle"))
        assert (await sock.expect("test.note"))["pos"] == hello["pos"] + 1
        await asyncio.sleep(0.05)
        assert (conn._writer, conn._queue) == (None, None)
        assert conn.websocket.scope["state"]["request_id"]
        await sock.close()


async def test_token_in_authorization_header(settings_for: Callable[..., Settings]) -> None:
    async with serve_node(settings_for()) as node:
        user = await new_user(node.url)
        sock = await Socket.open(node.ws_url, additional_headers={"Authorization": f"Bearer {user.token}"})
        assert (await sock.recv())["type"] == "hello"
        await sock.close()


async def test_token_in_first_frame(settings_for: Callable[..., Settings]) -> None:
    async with serve_node(settings_for()) as node:
        user = await new_user(node.url)
        sock = await Socket.open(node.ws_url)
        await sock.send({"type": "auth", "id": "a1", "token": user.token})
        assert (await sock.recv())["type"] == "hello"
        ok = await sock.recv()
        assert ok["type"] == "ok" and ok["id"] == "a1" and ok["expires_at"] > 0
        await sock.close()


@pytest.mark.parametrize("token", ["garbage", ""])
async def test_bad_token_closes_4401(token: str, settings_for: Callable[..., Settings]) -> None:
    async with serve_node(settings_for(WS_AUTH_TIMEOUT="300ms")) as node:
        sock = await Socket.open(node.ws_url, token or None)
        code = await sock.closed_with()
        if token:
            assert code == 4401
            assert sock.backlog[0]["code"] == "invalid_token"
        else:
            assert code == 4408  # no token at all: waited for an auth frame in vain


async def test_first_frame_must_be_auth(settings_for: Callable[..., Settings]) -> None:
    async with serve_node(settings_for()) as node:
        sock = await Socket.open(node.ws_url)
        await sock.send({"type": "ping"})
        assert await sock.closed_with() == 4401
        assert sock.backlog[0]["code"] == "unauthorized"


async def test_auth_timeout_closes_4408(settings_for: Callable[..., Settings]) -> None:
    async with serve_node(settings_for(WS_AUTH_TIMEOUT="300ms")) as node:
        sock = await Socket.open(node.ws_url)
        assert await sock.closed_with() == 4408


async def test_expired_token_closes_4401_and_renewal_keeps_it_open(
    settings_for: Callable[..., Settings],
) -> None:
    async with serve_node(settings_for(JWT_ACCESS_EXPIRY="3s")) as node:
        user = await new_user(node.url)
        lapsing = await Socket.open(node.ws_url, user.token)
        renewed = await Socket.open(node.ws_url, await login(node.url, user))
        await lapsing.expect("hello")
        hello = await renewed.expect("hello")
        await asyncio.sleep(1.5)
        fresh = await login(node.url, user)
        reply = await renewed.request("auth", token=fresh)
        assert reply["type"] == "ok" and reply["expires_at"] > hello["expires_at"]

        assert await lapsing.closed_with(timeout=6) == 4401
        assert any(f.get("code") == "token_expired" for f in lapsing.backlog)
        assert (await renewed.request("ping"))["type"] == "pong"  # past the first token's expiry
        await renewed.close()


async def test_renewal_with_another_users_token_is_refused(settings_for: Callable[..., Settings]) -> None:
    async with serve_node(settings_for()) as node:
        alice, bob = await new_user(node.url), await new_user(node.url)
        sock = await Socket.open(node.ws_url, alice.token)
        reply = await sock.request("auth", token=bob.token)
        assert reply["type"] == "error" and reply["code"] == "forbidden"
        bad = await sock.request("auth", token="nonsense")
        assert bad["type"] == "error" and bad["code"] == "invalid_token"
        assert (await sock.request("ping"))["type"] == "pong"
        await sock.close()


async def test_logout_all_closes_every_socket_of_the_user(settings_for: Callable[..., Settings]) -> None:
    async with serve_node(settings_for()) as node:
        alice, bob = await new_user(node.url), await new_user(node.url)
        first = await Socket.open(node.ws_url, alice.token)
        second = await Socket.open(node.ws_url, await login(node.url, alice))
        bystander = await Socket.open(node.ws_url, bob.token)
        for sock in (first, second, bystander):
            await sock.expect("hello")
        async with httpx.AsyncClient(base_url=node.url) as http:
            response = await http.post(
                "/api/auth/logout-all", headers={"Authorization": f"Bearer {alice.token}"}
            )
            assert response.status_code == 200
        for sock in (first, second):
            assert await sock.closed_with() == 4401
            assert any(f.get("code") == "session_revoked" for f in sock.backlog)
        assert (await bystander.request("ping"))["type"] == "pong"
        await bystander.close()


async def test_logout_closes_only_that_logins_sockets(settings_for: Callable[..., Settings]) -> None:
    async with serve_node(settings_for()) as node:
        alice = await new_user(node.url)
        other_token = await login(node.url, alice)
        ended = await Socket.open(node.ws_url, alice.token)
        kept = await Socket.open(node.ws_url, other_token)
        async with httpx.AsyncClient(base_url=node.url) as http:
            response = await http.post("/api/auth/logout", headers={"Authorization": f"Bearer {alice.token}"})
            assert response.status_code == 204
        assert await ended.closed_with() == 4401
        assert (await kept.request("ping"))["type"] == "pong"
        await kept.close()


async def test_malformed_frames_get_bad_request_and_the_socket_stays(
    settings_for: Callable[..., Settings],
) -> None:
    async with serve_node(settings_for()) as node:
        user = await new_user(node.url)
        sock = await Socket.open(node.ws_url, user.token)
        await sock.expect("hello")
        cases: list[tuple[Any, str | None, str | None]] = [
            ({"type": "no.such.type", "id": "u1"}, "u1", "type"),
            ({"id": "u2"}, "u2", "type"),
            ({"type": "presence.watch", "id": "u3"}, "u3", "user_ids"),
            ({"type": "presence.watch", "id": "u4", "user_ids": "me"}, "u4", "user_ids"),
            ({"type": "presence.watch", "id": "u5", "user_ids": ["not-a-uuid"]}, "u5", "user_ids[0]"),
            ({"type": "resume", "id": "u6", "epoch": "e", "pos": -1}, "u6", "pos"),
            ({"type": "ping", "id": "x" * 65}, None, "id"),
            ([1, 2, 3], None, "$"),
        ]
        for frame, request_id, field in cases:
            await sock.send(frame)
            error = await sock.expect("error")
            assert error["code"] == "bad_request", frame
            assert error.get("id") == request_id, frame
            assert error["details"]["field"] == field, (frame, error)
        await sock.ws.send("{not json")
        assert (await sock.expect("error"))["code"] == "bad_request"
        assert (await sock.request("ping"))["type"] == "pong"
        await sock.close()


async def test_msgpack_subprotocol(settings_for: Callable[..., Settings]) -> None:
    async with serve_node(settings_for()) as node:
        user = await new_user(node.url)
        sock = await Socket.open(node.ws_url, user.token, subprotocols=["kintsugi.msgpack"])
        assert sock.ws.subprotocol == "kintsugi.msgpack"
        raw = await sock.ws.recv()
        assert isinstance(raw, bytes)
        hello = msgspec.msgpack.decode(raw)
        assert hello["type"] == "hello" and hello["protocol"] == "msgpack"
        assert (await sock.request("ping"))["type"] == "pong"
        await sock.ws.send(b"\xc1")  # never valid MessagePack
        assert (await sock.expect("error"))["code"] == "bad_request"

        await node.ctx.events.emit([uuid.UUID(user.id)], Note(text="hi"))
        note = await sock.expect("test.note")
        assert note == {"pos": 1, "type": "test.note", "text": "hi"}
        await sock.close()


async def test_oversized_frame_closes_1009(settings_for: Callable[..., Settings]) -> None:
    async with serve_node(settings_for(WS_MAX_FRAME_BYTES="1024")) as node:
        user = await new_user(node.url)
        sock = await Socket.open(node.ws_url, user.token)
        await sock.expect("hello")
        await sock.send({"type": "ping", "pad": "x" * 2000})
        assert await sock.closed_with() == 1009


async def test_flooding_gets_rate_limited_then_4429(settings_for: Callable[..., Settings]) -> None:
    async with serve_node(settings_for(WS_RATE_LIMIT="5/10s")) as node:
        user = await new_user(node.url)
        sock = await Socket.open(node.ws_url, user.token)
        await sock.expect("hello")
        for _ in range(20):
            await sock.send({"type": "ping"})
        assert await sock.closed_with() == 4429
        codes = [f.get("code") for f in sock.backlog if f["type"] == "error"]
        assert codes.count("rate_limited") >= 5
        assert sum(1 for f in sock.backlog if f["type"] == "pong") == 5


async def test_slow_consumer_is_closed_4008_without_delaying_others(
    settings_for: Callable[..., Settings],
) -> None:

    async with serve_node(settings_for(WS_OUTBOUND_QUEUE_BYTES="262144", WS_RESUME_GRACE="10ms")) as node:
        user = await new_user(node.url)
        fast = await Socket.open(node.ws_url, user.token)
        # The slow client reads nothing: small buffers, so the server's writes back up quickly.
        slow = await Socket.open(node.ws_url, user.token, max_queue=1)
        hello = await fast.expect("hello")
        await asyncio.sleep(0.1)
        text = "x" * 20_000
        total = 400  # 8 MB of durable events: more than any socket buffer holds
        received: list[int] = []

        async def read_fast() -> None:
            while len(received) < total:
                frame = await fast.expect("test.note", timeout=20)
                received.append(frame["pos"])

        reader = asyncio.create_task(read_fast())
        for _ in range(total):
            await node.ctx.events.emit([uuid.UUID(user.id)], Note(text=text))
        await asyncio.wait_for(reader, timeout=30)
        assert received == list(range(hello["pos"] + 1, hello["pos"] + total + 1))

        assert await slow.closed_with(timeout=20) == 4008
        seen = [f["pos"] for f in slow.backlog if f.get("type") == "test.note"]
        assert any(f.get("code") == "slow_consumer" for f in slow.backlog)
        assert len(seen) < total
        # It recovers by resuming from the last position it got.
        again = await Socket.open(node.ws_url, user.token)
        hello2 = await again.expect("hello")
        last = seen[-1] if seen else hello["pos"]
        await again.send({"type": "resume", "epoch": hello2["epoch"], "pos": last})
        replayed = []
        while True:
            frame = await again.recv(timeout=10)
            if frame["type"] == "resumed":
                break
            replayed.append(frame["pos"])
        assert seen + replayed == list(range(hello["pos"] + 1, hello["pos"] + total + 1))
        await fast.close()
        await again.close()


async def test_metrics_endpoint(settings_for: Callable[..., Settings]) -> None:
    async with serve_node(settings_for()) as node:
        user = await new_user(node.url)
        sock = await Socket.open(node.ws_url, user.token)
        await sock.request("ping")
        async with httpx.AsyncClient(base_url=node.url) as http:
            text = (await http.get("/metrics")).text
        for name in (
            "kintsugi_ws_connections_open",
            'kintsugi_ws_frames_in_total{type="ping"}',
            "kintsugi_ws_frames_out_total",
            "kintsugi_ws_queue_drops_total",
            "kintsugi_ws_closes_total",
            "kintsugi_hub_delivery_seconds_bucket",
        ):
            assert name in text, name
        await sock.close()


async def test_permessage_deflate_is_off_unless_enabled(settings_for: Callable[..., Settings]) -> None:
    for setting, expected in (("false", False), ("true", True)):
        async with serve_node(settings_for(WS_COMPRESSION=setting)) as node:
            user = await new_user(node.url)
            ws = await websockets.connect(f"{node.ws_url}?token={user.token}")
            extensions = ws.response.headers.get("Sec-WebSocket-Extensions", "") if ws.response else ""
            assert ("permessage-deflate" in extensions) is expected
            await ws.close()
