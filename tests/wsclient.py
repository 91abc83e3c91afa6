"""A small test client for the socket protocol over a real WebSocket."""

from __future__ import annotations

import asyncio
import itertools
import secrets
from typing import Any

import httpx
import msgspec
import websockets
from websockets.asyncio.client import ClientConnection

PASSWORD = "correct horse battery"
_ids = itertools.count(1)


class User:
    def __init__(self, user_id: str, email: str, access_token: str, refresh_token: str) -> None:
        self.id = user_id
        self.email = email
        self.token = access_token
        self.refresh_token = refresh_token


async def new_user(base_url: str, name: str = "Tester") -> User:
    email = f"{name.lower()}-{secrets.token_hex(5)}@example.com"
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:
        response = await http.post(
            "/api/auth/register", json={"email": email, "password": PASSWORD, "display_name": name}
        )
    assert response.status_code == 201, response.text
    data = response.json()
    return User(data["user"]["id"], email, data["access_token"], data["refresh_token"])


async def login(base_url: str, user: User) -> str:
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:
        response = await http.post("/api/auth/login", json={"email": user.email, "password": PASSWORD})
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


class Socket:
    """One client connection; keeps frames it skipped over so nothing is lost between expectations."""

    def __init__(self, ws: ClientConnection, binary: bool = False) -> None:
        self.ws = ws
        self.binary = binary
        self.backlog: list[dict[str, Any]] = []

    @classmethod
    async def open(cls, ws_url: str, token: str | None = None, **kwargs: Any) -> Socket:
        url = f"{ws_url}?token={token}" if token else ws_url
        # A test socket often leaves frames unread; don't wait 10 s for the close handshake behind them.
        kwargs.setdefault("close_timeout", 1)
        ws = await websockets.connect(url, open_timeout=10, **kwargs)
        return cls(ws, binary="kintsugi.msgpack" in (kwargs.get("subprotocols") or []))

    async def send(self, frame: dict[str, Any]) -> None:
        if self.binary:
            await self.ws.send(msgspec.msgpack.encode(frame))
        else:
            await self.ws.send(msgspec.json.encode(frame).decode())

    async def recv(self, timeout: float = 5) -> dict[str, Any]:
        if self.backlog:
            return self.backlog.pop(0)
        return await self.read(timeout)

    async def expect(self, type_: str, timeout: float = 5, **match: Any) -> dict[str, Any]:
        """The next frame of ``type_`` (matching ``match``); frames skipped stay in the backlog."""
        for index, frame in enumerate(self.backlog):
            if frame.get("type") == type_ and all(frame.get(k) == v for k, v in match.items()):
                return self.backlog.pop(index)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            frame = await self.read(max(0.01, deadline - loop.time()))
            if frame.get("type") == type_ and all(frame.get(k) == v for k, v in match.items()):
                return frame
            self.backlog.append(frame)

    async def read(self, timeout: float) -> dict[str, Any]:
        raw = await asyncio.wait_for(self.ws.recv(), timeout)
        frame: dict[str, Any] = (
            msgspec.msgpack.decode(raw) if isinstance(raw, bytes) else msgspec.json.decode(raw)
        )
        return frame

    async def request(self, type_: str, timeout: float = 5, **fields: Any) -> dict[str, Any]:
        """Send a request with a fresh id; return its terminal reply. Other frames go to the backlog."""
        request_id = f"r{next(_ids)}"
        await self.send({"type": type_, "id": request_id, **fields})
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            frame = await self.read(max(0.01, deadline - loop.time()))
            if frame.get("id") == request_id:
                return frame
            self.backlog.append(frame)

    async def closed_with(self, timeout: float = 10) -> int | None:
        """Read until the server closes; return its close code."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    raw = await self.ws.recv()
                    frame = (
                        msgspec.msgpack.decode(raw) if isinstance(raw, bytes) else msgspec.json.decode(raw)
                    )
                    self.backlog.append(frame)
        except websockets.ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd else None

    async def close(self) -> None:
        await self.ws.close()
