"""Real WebRTC (aiortc peers, tests/rtc.py) through the server's signaling: peer to peer, forced
through a real coturn with the credentials the server issues, and three peers on the server's SFU."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import msgspec

from kintsugi_rt.calls.frames import Candidate, IceServer, SignalKind
from kintsugi_rt.calls.sfu import SfuSignal
from kintsugi_rt.settings import Settings
from tests.coturn import Coturn
from tests.rtc import Peer
from tests.rtc_sfu_peers import SfuPeer, Signaling
from tests.support import Node, serve_node
from tests.wsclient import Socket, User, new_user

SettingsFor = Callable[..., Settings]


def servers(reply: dict[str, Any]) -> list[IceServer]:
    return msgspec.convert(reply["ice_servers"], list[IceServer])


class Device:
    """One socket whose frames a background reader takes: ``call.signal`` frames go straight into the
    device's WebRTC peer (offers are answered through ``call.signal``), the rest wait for the test."""

    def __init__(self, sock: Socket) -> None:
        self.sock = sock
        self.peer: Peer | None = None
        self.sfu_peer: SfuPeer | None = None
        self.call_id = ""
        self.frames: list[dict[str, Any]] = []
        self._arrived = asyncio.Condition()
        self._ids = 0
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        while True:
            frame = await self.sock.read(3600)
            if frame.get("type") == "call.signal" and self.sfu_peer is not None:
                signal = msgspec.convert(frame, SfuSignal, from_attributes=False, strict=False)
                self.sfu_peer.deliver(SfuSignal(signal.kind, signal.sdp, signal.candidate, frame["from"]))
                continue
            if frame.get("type") == "call.signal" and self.peer is not None:
                await self._signal(frame)
                continue
            async with self._arrived:
                self.frames.append(frame)
                self._arrived.notify_all()

    async def _signal(self, signal: dict[str, Any]) -> None:
        assert self.peer is not None
        if signal["kind"] == "offer":
            answer = await self.peer.accept_offer(signal["sdp"])
            reply = {"call_id": self.call_id, "to": signal["from"], "kind": "answer", "sdp": answer}
            await self.sock.send({"type": "call.signal", **reply})
        elif signal["kind"] == "answer":
            await self.peer.accept_answer(signal["sdp"])
        elif signal["kind"] == "ice":
            await self.peer.add_ice_candidate(msgspec.convert(signal["candidate"], type=Candidate))

    async def expect(self, type_: str, timeout: float = 10, **match: Any) -> dict[str, Any]:
        return await self._take(
            lambda f: f.get("type") == type_ and all(f.get(k) == v for k, v in match.items()), timeout
        )

    async def request(self, type_: str, **fields: Any) -> dict[str, Any]:
        self._ids += 1
        request_id = f"m{self._ids}"
        await self.sock.send({"type": type_, "id": request_id, **fields})
        return await self._take(lambda f: f.get("id") == request_id, 10)

    async def _take(self, wanted: Callable[[dict[str, Any]], bool], timeout: float) -> dict[str, Any]:
        async with asyncio.timeout(timeout), self._arrived:
            while True:
                for index, frame in enumerate(self.frames):
                    if wanted(frame):
                        return self.frames.pop(index)
                await self._arrived.wait()

    async def close(self) -> None:
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._reader
        if self.peer is not None:
            await self.peer.close()
        if self.sfu_peer is not None:
            await self.sfu_peer.close()
        await self.sock.close()


async def device(node: Node, user: User) -> Device:
    sock = await Socket.open(node.ws_url, user.token)
    await sock.expect("hello")
    assert (await sock.request("ping"))["type"] == "pong"
    return Device(sock)


@asynccontextmanager
async def p2p_call(node: Node, *, relay_only: bool) -> AsyncIterator[tuple[Device, Device, str]]:
    """Ann calls Bob, Bob answers, Ann's peer offers through ``call.signal``: both peers connected."""
    ann, bob = await new_user(node.url, "Ann"), await new_user(node.url, "Bob")
    a, b = await device(node, ann), await device(node, bob)
    try:
        chat = await a.request("conversation.create", kind="direct", user_ids=[bob.id])
        started = await a.request("call.start", conversation_id=chat["conversation"]["id"], media="video")
        call_id = started["call"]["id"]
        await b.expect("call.ringing")
        accepted = await b.request("call.accept", call_id=call_id)
        await a.expect("call.accepted", call_id=call_id)
        a.call_id = b.call_id = call_id
        a.peer = Peer("ann", ice_servers=servers(started), relay_only=relay_only)
        b.peer = Peer("bob", ice_servers=servers(accepted), relay_only=relay_only)
        offer = await a.peer.create_offer()
        sent = await a.request(
            "call.signal", call_id=call_id, to=accepted["party_id"], kind="offer", sdp=offer
        )
        assert sent["type"] == "ok", sent
        await asyncio.gather(a.peer.connected(timeout=20), b.peer.connected(timeout=20))
        yield a, b, call_id
    finally:
        await a.close()
        await b.close()


async def test_two_peers_call_through_the_servers_signaling(settings_for: SettingsFor) -> None:
    async with serve_node(settings_for()) as node, p2p_call(node, relay_only=False) as (a, b, call_id):
        for peer in (a.peer, b.peer):
            assert peer is not None
            await peer.frames_received("audio", at_least=20, timeout=15)
            await peer.frames_received("video", at_least=5, timeout=15)
        stats = {"call_id": call_id, "ice_state": "connected", "candidate_type": "host", "setup_ms": 300}
        assert (await a.request("call.stats", **stats))["type"] == "ok"
        assert (await a.request("call.hangup", call_id=call_id))["type"] == "ok"
        assert (await b.expect("call.ended", call_id=call_id))["reason"] == "hangup"
        history = await b.request("call.history")
        row = history["calls"][0]
        assert row["id"] == call_id and row["end_reason"] == "hangup" and row["answered_at"]


async def test_the_same_call_forced_through_coturn_with_the_issued_credentials(
    settings_for: SettingsFor, coturn: Coturn
) -> None:
    settings = settings_for(**coturn.env())
    async with serve_node(settings) as node, p2p_call(node, relay_only=True) as (a, b, call_id):
        for peer in (a.peer, b.peer):
            assert peer is not None
            await peer.frames_received("audio", at_least=20, timeout=15)
            await peer.frames_received("video", at_least=5, timeout=15)
            assert peer.selected_candidate_type() == "relay"
        await a.request("call.hangup", call_id=call_id)


class SocketSignaling(Signaling):
    """The SFU test peers' signaling, through the server: each peer's signals go out as ``call.signal``
    on its own device's socket; the SFU's come back on it (``Device`` hands them to the peer)."""

    def __init__(self, call_id: str) -> None:
        super().__init__()
        self.call = call_id
        self.devices: dict[str, Device] = {}

    async def to_sfu(
        self,
        party_id: str,
        to: str,
        kind: SignalKind,
        sdp: str | None = None,
        candidate: Candidate | None = None,
    ) -> None:
        frame: dict[str, Any] = {"type": "call.signal", "call_id": self.call, "to": to, "kind": kind}
        if sdp is not None:
            frame["sdp"] = sdp
        if candidate is not None:
            frame["candidate"] = msgspec.to_builtins(candidate)
        await self.devices[party_id].sock.send(frame)


async def test_three_peers_on_the_servers_sfu_and_one_leaves(settings_for: SettingsFor) -> None:
    async with serve_node(settings_for()) as node:
        users = [await new_user(node.url, name) for name in ("Ann", "Bob", "Cyd")]
        ann, bob, cyd = [await device(node, u) for u in users]
        team = await ann.request(
            "conversation.create", kind="group", title="Team", user_ids=[u.id for u in users[1:]]
        )
        started = await ann.request("call.start", conversation_id=team["conversation"]["id"], media="video")
        assert started["call"]["mode"] == "sfu", started
        call_id = started["call"]["id"]
        parties = {ann: started["party_id"]}
        for who in (bob, cyd):
            await who.expect("call.ringing")
            parties[who] = (await who.request("call.accept", call_id=call_id))["party_id"]
        signaling = SocketSignaling(call_id)
        peers = {}
        tone = iter((330.0, 440.0, 550.0))
        try:
            for who, party in parties.items():
                signaling.devices[party] = who
                peers[who] = who.sfu_peer = SfuPeer(signaling, party, frequency=next(tone), u=60, v=200)
            for peer in peers.values():
                await peer.join()

            def everyone_receives_everyone() -> bool:
                return all(
                    a.frames_from(b.party_id, kind) >= 5
                    for a in peers.values()
                    for b in peers.values()
                    if a is not b
                    for kind in ("audio", "video")
                )

            await eventually(
                everyone_receives_everyone, "each device decodes the other two's tone and picture"
            )
            assert (await cyd.request("call.leave", call_id=call_id))["type"] == "ok"
            before = peers[ann].frames_from(parties[bob], "video")
            await eventually(
                lambda: (
                    peers[ann].frames_from(parties[bob], "video") >= before + 30
                    and peers[bob].frames_from(parties[ann], "video") > 0
                ),
                "ann and bob go on after cyd left",
            )
            await ann.request("call.leave", call_id=call_id)
            assert (await bob.request("call.leave", call_id=call_id))["type"] == "ok"
            assert (await cyd.expect("call.ended", call_id=call_id))["reason"] == "hangup"
        finally:
            for who in (ann, bob, cyd):
                await who.close()


async def eventually(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, f"not within {timeout:.0f} s: {what}"
        await asyncio.sleep(0.1)
