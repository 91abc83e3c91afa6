"""The socket's promises, each pinned by the bug that broke it: the resume grace, one reply per
request, bounded metric labels, a cap on sockets per user."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Callable
from typing import Annotated

import httpx
import msgspec
import pytest
import websockets

from kintsugi_rt.settings import Settings
from kintsugi_rt.socket.protocol import ClientMessage, ServerMessage
from kintsugi_rt.socket.registry import SocketContext, SocketFeatures, SocketHandler, SocketRegistry
from tests.support import serve_node
from tests.wsclient import Socket, new_user

SettingsFor = Callable[..., Settings]


class Note(ServerMessage, tag="test.rule_note"):
    text: str


@pytest.mark.parametrize("first", ["ping", "bad_frame", "auth"])
async def test_any_frame_but_resume_ends_the_resume_grace(settings_for: SettingsFor, first: str) -> None:
    """Regression (A3): a ``ping`` did not end the grace, so durable events stayed held (and a client
    that only pinged could be closed with 4008 having received nothing)."""
    async with serve_node(settings_for(WS_RESUME_GRACE="60s")) as node:
        ann = await new_user(node.url, "Ann")
        sock = await Socket.open(node.ws_url, ann.token)
        await sock.expect("hello")
        await node.ctx.events.emit([uuid.UUID(ann.id)], Note(text="held"))
        frame = {
            "ping": {"type": "ping", "id": "first"},
            "bad_frame": {"type": "no.such.type", "id": "first"},
            "auth": {"type": "auth", "id": "first", "token": ann.token},
        }[first]
        await sock.send(frame)
        note = await sock.expect("test.rule_note", timeout=5)
        assert note["text"] == "held" and note["pos"] == 1
        await sock.close()


async def test_rate_limited_frames_get_their_one_reply_with_their_id(settings_for: SettingsFor) -> None:
    """Regression (E17): ``rate_limited`` came without the request's id, so the request never got its
    terminal reply."""
    async with serve_node(settings_for(WS_RATE_LIMIT="5/10s")) as node:
        ann = await new_user(node.url, "Ann")
        sock = await Socket.open(node.ws_url, ann.token)
        await sock.expect("hello")
        for n in range(10):
            await sock.send({"type": "ping", "id": f"p{n}"})
        replies = {}
        for _ in range(10):
            frame = await sock.recv()
            replies[frame["id"]] = frame
        assert sorted(replies) == sorted(f"p{n}" for n in range(10))
        limited = [r for r in replies.values() if r["type"] == "error"]
        assert len(limited) == 5, replies
        for reply in limited:
            assert reply["code"] == "rate_limited", reply
            assert 0 < reply["retry_after_ms"] <= 10_000, reply
        await sock.close()


async def test_close_codes_from_clients_do_not_mint_metric_series(settings_for: SettingsFor) -> None:
    """Regression (E21): every client-chosen close code became a label value (40 sockets, 40 series)."""
    async with serve_node(settings_for()) as node:
        ann = await new_user(node.url, "Ann")
        for code in range(4100, 4140):
            ws = await websockets.connect(f"{node.ws_url}?token={ann.token}", open_timeout=5)
            await ws.recv()
            await ws.close(code)
        await asyncio.sleep(0.3)
        async with httpx.AsyncClient(base_url=node.url) as http:
            text = (await http.get("/metrics")).text
        codes = set(re.findall(r'kintsugi_ws_closes_total\{code="([^"]+)"\}', text))
        assert "other" in codes, codes
        assert not {c for c in codes if c.isdigit() and 4100 <= int(c) < 4140}, codes


async def test_metrics_can_require_a_token(settings_for: SettingsFor) -> None:
    settings = settings_for(METRICS_TOKEN="s3cret-metrics-token")
    async with serve_node(settings) as node, httpx.AsyncClient(base_url=node.url) as http:
        assert (await http.get("/metrics")).status_code == 401
        wrong = await http.get("/metrics", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        right = await http.get("/metrics", headers={"Authorization": "Bearer s3cret-metrics-token"})
        assert right.status_code == 200 and "kintsugi_ws_connections_open" in right.text


async def test_sockets_per_user_are_capped(settings_for: SettingsFor) -> None:
    """Regression (E22): one user could hold any number of sockets (300 were accepted)."""
    async with serve_node(settings_for(WS_MAX_SOCKETS_PER_USER="3")) as node:
        ann, bob = await new_user(node.url, "Ann"), await new_user(node.url, "Bob")
        open_ones = [await Socket.open(node.ws_url, ann.token) for _ in range(3)]
        for sock in open_ones:
            await sock.expect("hello")
        extra = await Socket.open(node.ws_url, ann.token)
        error = await extra.expect("error")
        assert error["code"] == "too_many_connections", error
        assert await extra.closed_with() == 4409
        for sock in open_ones:  # the open ones are untouched
            assert (await sock.request("ping"))["type"] == "pong"
        other = await Socket.open(node.ws_url, bob.token)  # the cap is per user
        await other.expect("hello")
        await open_ones[0].close()
        await asyncio.sleep(0.2)
        again = await Socket.open(node.ws_url, ann.token)
        await again.expect("hello")
        for sock in [*open_ones[1:], other, again]:
            await sock.close()


class _Unbounded(ClientMessage, tag="test.unbounded"):
    count: int


class _Bounded(ClientMessage, tag="test.bounded"):
    count: Annotated[int, msgspec.Meta(ge=0, le=100)]
    seqs: dict[str, Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]] = {}


async def _handle(conn: SocketContext, message: object) -> None:
    return None


def test_a_frame_with_an_unbounded_integer_cannot_be_registered() -> None:
    """Integers beyond bigint reached PostgreSQL (``seq`` >= 2^63 gave internal_error): every integer
    a client sends must now be bounded by its frame type, checked when modules register."""
    with pytest.raises(ValueError, match=r"test.unbounded: integer fields \['count'\]"):
        SocketRegistry(
            [], [SocketFeatures(handlers=(SocketHandler(_Unbounded, _handle, _Unbounded(count=1)),))]
        )
    SocketRegistry([], [SocketFeatures(handlers=(SocketHandler(_Bounded, _handle, _Bounded(count=1)),))])
