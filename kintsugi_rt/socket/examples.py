"""Example frames of the gateway's own protocol, for docs/protocol.md."""

from __future__ import annotations

import uuid
from typing import Any

from kintsugi_rt.socket.protocol import (
    Auth,
    ClientMessage,
    Error,
    Hello,
    Ping,
    Pong,
    Resume,
    Resumed,
    ResyncRequired,
    ServerMessage,
)

_USER = uuid.UUID("2b0f6c1e-5d0a-4a4e-9a1c-3f1f8f0e7a21")
_EPOCH = "9d8c7b6a-5f4e-4d3c-8b2a-1a0f9e8d7c6b"

CORE_CLIENT_EXAMPLES: list[tuple[ClientMessage, dict[str, Any] | None]] = [
    (Auth(id="a1", token="eyJhbGciOiJIUzI1NiIs..."), {"expires_at": 1795736223}),  # noqa: S106
    (Ping(id="p1"), None),
    (Resume(id="r1", epoch=_EPOCH, pos=41), None),
]
CORE_SERVER_EXAMPLES: list[ServerMessage] = [
    Hello(
        conn_id="3efe11db15f749fab165f59cd8f5f206",
        user_id=_USER,
        epoch=_EPOCH,
        pos=41,
        expires_at=1795736223,
        protocol="json",
        resume_grace_ms=1000,
        features={},
    ),
    Error(code="bad_request", message="Expected `str`, got `int`", id="m7", details={"field": "user_ids[0]"}),
    Pong(id="p1"),
    Resumed(epoch=_EPOCH, pos=45, replayed=4, id="r1"),
    ResyncRequired(epoch=_EPOCH, pos=2045, reason="beyond_window", id="r1"),
]
