"""Locust users that each hold one WebSocket: pings, presence, and messenger traffic.

Start a server that allows many registrations from one IP, then run locust headless:

    AUTH_RATE_LIMIT_IP=1000000/1m AUTH_RATE_LIMIT_EMAIL=1000000/1m ARGON2_TIME_COST=1 \\
        ARGON2_MEMORY_KIB=8192 ARGON2_PARALLELISM=1 PORT=8080 .venv/bin/kintsugi-rt serve &
    .venv/bin/locust -f loadtests/ws_locust.py --headless -u 200 -r 50 -t 30s --host http://127.0.0.1:8080

Each simulated user registers over REST (reported as ``POST register``), opens
``ws://<host>/ws?token=<access token>`` (reported as ``WS connect``: handshake until ``hello``), then
runs its tasks. Every request/reply pair is one locust request of type ``WS`` named after the frame
type. Pushed frames that arrive while waiting for a reply (``presence``, ``message.new``, receipts,
typing) are counted as ``WS push <type>`` entries of zero time and otherwise skipped.

Messaging: once connected, each user opens a direct conversation with an earlier user and a group
with up to ``GROUP_SIZE`` - 1 earlier users, then sends to both (``message.send``, idempotent on a
fresh ``client_msg_id``), pages history, marks messages read and signals typing. Needs the ``load``
extra: ``pip install -e '.[dev,load]'``.
"""

from __future__ import annotations

import json
import random
import secrets
import time
from collections.abc import Callable
from typing import Any

import websocket
from locust import HttpUser, between, task

REPLY_TIMEOUT = 10.0
MAX_SKIPPED_FRAMES = 1000  # pushes tolerated while waiting for one reply
GROUP_SIZE = 20

# Users registered by this locust process, so each can watch another one's presence.
_registered: list[str] = []


class WebSocketUser(HttpUser):
    """REST through ``self.client`` (locust's HTTP session), then one WebSocket per user."""

    abstract = True
    ws_path = "/ws"

    def on_start(self) -> None:
        self.ws: websocket.WebSocket | None = None
        self.user_id = ""
        self.token = ""
        self._seq = 0
        self.register()
        self.connect()

    def on_stop(self) -> None:
        if self.ws is not None:
            self._drop()

    def _drop(self) -> None:
        if self.ws is not None:
            ws, self.ws = self.ws, None
            ws.close()

    def register(self) -> None:
        email = f"locust-{secrets.token_hex(8)}@example.com"
        body = {"email": email, "password": "Locust-" + secrets.token_urlsafe(12), "display_name": "Locust"}
        with self.client.post(
            "/api/auth/register", json=body, name="register", catch_response=True
        ) as response:
            if response.status_code != 201:
                response.failure(f"{response.status_code}: {response.text[:200]}")
                return
            data = response.json()
            self.user_id = str(data["user"]["id"])
            self.token = str(data["access_token"])
            _registered.append(self.user_id)

    def connect(self) -> None:
        if not self.token:
            return
        url = (self.host or "").replace("http://", "ws://", 1).replace("https://", "wss://", 1).rstrip("/")
        started = time.perf_counter()
        try:
            ws = websocket.create_connection(f"{url}{self.ws_path}?token={self.token}", timeout=REPLY_TIMEOUT)
            hello, size = self._receive_until(ws, lambda frame: frame.get("type") in {"hello", "error"})
            if hello.get("type") != "hello":
                raise RuntimeError(f"no hello: {hello}")
        except Exception as exc:
            self._report("connect", started, 0, exc)
            return
        self.ws = ws
        self._report("connect", started, size, None)

    def request(self, frame: dict[str, Any], reply_type: str) -> dict[str, Any] | None:
        """Send ``frame`` with a fresh id and wait for the reply with that id; report it to locust."""
        if self.ws is None:
            self.connect()
            if self.ws is None:
                return None
        self._seq += 1
        request_id = str(self._seq)
        name = str(frame["type"])
        data = json.dumps({**frame, "id": request_id})
        started = time.perf_counter()
        try:
            self.ws.send(data)
            reply, size = self._receive_until(
                self.ws, lambda f: f.get("id") == request_id and f.get("type") in {reply_type, "error"}
            )
            if reply.get("type") == "error":
                raise RuntimeError(f"{reply.get('code')}: {reply.get('message')}")
        except Exception as exc:
            self._report(name, started, 0, exc)
            if not isinstance(exc, RuntimeError):
                self._drop()  # timed out or the socket is gone: reconnect on the next task
            return None
        self._report(name, started, size, None)
        return reply

    def _receive_until(
        self, ws: websocket.WebSocket, wanted: Callable[[dict[str, Any]], bool]
    ) -> tuple[dict[str, Any], int]:
        """The first frame ``wanted`` accepts, and its size; pushed frames before it are skipped."""
        deadline = time.monotonic() + REPLY_TIMEOUT
        for _ in range(MAX_SKIPPED_FRAMES):
            ws.settimeout(max(0.01, deadline - time.monotonic()))
            raw = ws.recv()
            frame = json.loads(raw)
            if isinstance(frame, dict) and wanted(frame):
                return frame, len(raw)
            if isinstance(frame, dict) and "id" not in frame:
                self._report_push(str(frame.get("type")), len(raw))
            if time.monotonic() > deadline:
                break
        raise TimeoutError("no reply in time")

    def _report_push(self, frame_type: str, length: int) -> None:
        """A pushed frame, so locust's table shows how many of each type every user received."""
        self.environment.events.request.fire(
            request_type="WS push",
            name=frame_type,
            response_time=0,
            response_length=length,
            exception=None,
            context={},
        )

    def _report(self, name: str, started: float, length: int, exc: Exception | None) -> None:
        self.environment.events.request.fire(
            request_type="WS",
            name=name,
            response_time=(time.perf_counter() - started) * 1000,
            response_length=length,
            exception=exc,
            context={},
        )


class RealtimeUser(WebSocketUser):
    wait_time = between(0.5, 1.5)

    @task(3)
    def ping(self) -> None:
        self.request({"type": "ping"}, "pong")

    @task(1)
    def watch_presence(self) -> None:
        others = [u for u in _registered[-1000:] if u != self.user_id]
        target = random.choice(others) if others else self.user_id
        self.request({"type": "presence.watch", "user_ids": [target]}, "ok")

    # --- messenger ------------------------------------------------------------------------------

    def on_start(self) -> None:
        super().on_start()
        self.direct_id = ""
        self.group_id = ""
        self.last_seq: dict[str, int] = {}
        others = [u for u in _registered[-1000:] if u != self.user_id]
        if not others or self.ws is None:
            return
        direct = self.request(
            {"type": "conversation.create", "kind": "direct", "user_ids": [random.choice(others)]}, "ok"
        )
        if direct is not None:
            self.direct_id = str(direct["conversation"]["id"])
        members = random.sample(others, min(len(others), GROUP_SIZE - 1))
        group = self.request(
            {"type": "conversation.create", "kind": "group", "title": "locust", "user_ids": members}, "ok"
        )
        if group is not None:
            self.group_id = str(group["conversation"]["id"])

    def _conversation(self) -> str:
        choices = [c for c in (self.direct_id, self.group_id) if c]
        return random.choice(choices) if choices else ""

    @task(3)
    def send_message(self) -> None:
        conversation_id = self._conversation()
        if not conversation_id:
            return
        frame = {
            "type": "message.send",
            "conversation_id": conversation_id,
            "client_msg_id": secrets.token_hex(8),
            "text": "locust " + secrets.token_urlsafe(random.randint(8, 120)),
        }
        reply = self.request(frame, "ok")
        if reply is not None:
            self.last_seq[conversation_id] = int(reply["message"]["seq"])

    @task(1)
    def history(self) -> None:
        conversation_id = self._conversation()
        if conversation_id:
            self.request({"type": "message.history", "conversation_id": conversation_id, "limit": 50}, "ok")

    @task(1)
    def read(self) -> None:
        conversation_id = self._conversation()
        seq = self.last_seq.get(conversation_id)
        if conversation_id and seq is not None:
            self.request({"type": "message.read", "conversation_id": conversation_id, "seq": seq}, "ok")

    @task(1)
    def typing(self) -> None:
        conversation_id = self._conversation()
        if conversation_id:
            self.request({"type": "typing", "conversation_id": conversation_id}, "ok")

    @task(1)
    def conversations(self) -> None:
        self.request({"type": "conversation.list"}, "ok")
