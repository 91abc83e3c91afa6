"""Close frames carry a short reason beside the code: the same text for every close with that code."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import msgspec
import websockets
from websockets.asyncio.client import ClientConnection

from kintsugi_rt.settings import Settings
from kintsugi_rt.socket.protocol import CLOSE_CODES, CLOSE_REASONS, MAX_CLOSE_REASON_BYTES
from tests.support import serve_node
from tests.wsclient import new_user


async def frames_until_closed(
    ws: ClientConnection, timeout: float = 10
) -> tuple[list[dict[str, Any]], int, str]:
    """Every frame the server sends until it closes; then its close code and reason."""
    frames: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(timeout):
            while True:
                frames.append(msgspec.json.decode(await ws.recv()))
    except websockets.ConnectionClosed as closed:
        assert closed.rcvd is not None, "no close frame from the server"
        return frames, closed.rcvd.code, closed.rcvd.reason


def test_every_reason_is_short_and_belongs_to_a_documented_code() -> None:
    assert set(CLOSE_REASONS) <= set(CLOSE_CODES)
    for code, reason in CLOSE_REASONS.items():
        assert 0 < len(reason.encode()) <= MAX_CLOSE_REASON_BYTES, code


async def test_a_bad_first_frame_closes_4401_with_its_reason(settings_for: Callable[..., Settings]) -> None:
    async with serve_node(settings_for()) as node:
        for first in ('{"type": "ping", "id": "p1"}', "not json at all"):
            async with websockets.connect(node.ws_url, close_timeout=1) as ws:
                await ws.send(first)
                frames, code, reason = await frames_until_closed(ws)
            assert (code, reason) == (4401, "unauthorized"), first
            assert [f["code"] for f in frames] == ["unauthorized"], frames


async def test_an_expired_token_closes_4401_with_the_same_reason(
    settings_for: Callable[..., Settings],
) -> None:
    async with serve_node(settings_for(JWT_ACCESS_EXPIRY="2s")) as node:
        user = await new_user(node.url)
        async with websockets.connect(f"{node.ws_url}?token={user.token}", close_timeout=1) as ws:
            frames, code, reason = await frames_until_closed(ws, timeout=10)
    assert (code, reason) == (4401, "unauthorized")
    assert frames[0]["type"] == "hello"
    assert frames[-1]["type"] == "error" and frames[-1]["code"] == "token_expired", frames


async def test_a_server_shutting_down_says_so(settings_for: Callable[..., Settings]) -> None:
    async with serve_node(settings_for()) as node:
        user = await new_user(node.url)
        ws = await websockets.connect(f"{node.ws_url}?token={user.token}", close_timeout=1)
        assert msgspec.json.decode(await ws.recv())["type"] == "hello"
    # The node has stopped (uvicorn closed every socket on its way out).
    _, code, reason = await frames_until_closed(ws)
    assert (code, reason) == (1012, "server shutting down")
