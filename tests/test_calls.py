"""Calls over real sockets, on one node and across two: ringing, answering, ending, glare, busy, and
signaling that only ever reaches the paired device."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import httpx

from kintsugi_rt.settings import Settings
from tests.fake_livekit import FakeLiveKit
from tests.support import Node, RedisServer, serve_node
from tests.wsclient import Socket, User, new_user

SettingsFor = Callable[..., Settings]


@asynccontextmanager
async def two_nodes(settings: Settings) -> AsyncIterator[tuple[Node, Node]]:
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(serve_node(settings))
        b = await stack.enter_async_context(serve_node(settings))
        yield a, b


def redis_settings(settings_for: SettingsFor, redis_server: RedisServer, **extra: str) -> Settings:
    return settings_for(REDIS_URL=redis_server.url, REDIS_KEY_PREFIX=f"c{secrets.token_hex(4)}:", **extra)


async def device(node: Node, user: User) -> Socket:
    sock = await Socket.open(node.ws_url, user.token)
    await sock.expect("hello")
    assert (await sock.request("ping"))["type"] == "pong"  # in sync: durable events flow at once
    return sock


async def conversation(sock: Socket, *others: User, group: bool = False) -> str:
    kind = "group" if group else "direct"
    fields: dict[str, Any] = {"kind": kind, "user_ids": [u.id for u in others]}
    if group:
        fields["title"] = "Team"
    reply = await sock.request("conversation.create", **fields)
    assert reply["type"] == "ok", reply
    conversation_id: str = reply["conversation"]["id"]
    return conversation_id


async def rings(sock: Socket, call_id: str) -> dict[str, Any]:
    """The next ``call.ringing`` of this call (its id is inside ``call``)."""
    while True:
        frame = await sock.expect("call.ringing")
        if frame["call"]["id"] == call_id:
            return frame


async def nothing_of(sock: Socket, type_: str, seconds: float = 0.5) -> None:
    await asyncio.sleep(seconds)
    assert (await sock.request("ping"))["type"] == "pong"
    assert not [f for f in sock.backlog if f.get("type") == type_], sock.backlog


async def test_a_direct_call_rings_every_device_on_two_nodes_and_signals_reach_only_the_paired_one(
    settings_for: SettingsFor, redis_server: RedisServer
) -> None:
    async with two_nodes(redis_settings(settings_for, redis_server)) as (a, b):
        ann, bob = await new_user(a.url, "Ann"), await new_user(a.url, "Bob")
        ann_phone = await device(a, ann)
        bob_phone, bob_laptop = await device(a, bob), await device(b, bob)
        chat = await conversation(ann_phone, bob)

        started = await ann_phone.request("call.start", conversation_id=chat, media="video")
        assert started["type"] == "ok", started
        call_id, ann_party = started["call"]["id"], started["party_id"]
        assert started["call"]["mode"] == "p2p" and started["call"]["state"] == "ringing"
        assert isinstance(started["ice_servers"], list)
        for sock in (bob_phone, bob_laptop):
            ringing = await sock.expect("call.ringing")
            assert ringing["call"]["id"] == call_id and ringing["pos"] > 0

        answered = await bob_laptop.request("call.accept", call_id=call_id)
        assert answered["type"] == "ok" and answered["call"]["state"] == "active", answered
        laptop_party = answered["party_id"]
        accepted = await ann_phone.expect("call.accepted", call_id=call_id)
        assert accepted["party_id"] == laptop_party and accepted["user_id"] == bob.id
        elsewhere = await bob_phone.expect("call.answered_elsewhere")
        assert elsewhere["party_id"] == laptop_party
        late = await bob_phone.request("call.accept", call_id=call_id)
        assert late["code"] == "call_ended", late  # the phone lost the race to the laptop

        # Offer → answer → ICE, across the two nodes, each to exactly one device.
        offer = {"call_id": call_id, "to": laptop_party, "kind": "offer", "sdp": "v=0 offer"}
        assert (await ann_phone.request("call.signal", **offer))["type"] == "ok"
        got = await bob_laptop.expect("call.signal")
        assert got["from"] == ann_party and got["from_user"] == ann.id and got["sdp"] == "v=0 offer"
        answer = {"call_id": call_id, "to": ann_party, "kind": "answer", "sdp": "v=0 answer"}
        assert (await bob_laptop.request("call.signal", **answer))["type"] == "ok"
        assert (await ann_phone.expect("call.signal"))["sdp"] == "v=0 answer"
        candidate = {"candidate": "candidate:1 1 udp 2122260223 192.0.2.1 5000 typ host", "sdpMid": "0"}
        ice = {"call_id": call_id, "to": laptop_party, "kind": "ice", "candidate": candidate}
        assert (await ann_phone.request("call.signal", **ice))["type"] == "ok"
        assert (await bob_laptop.expect("call.signal"))["candidate"] == candidate
        await nothing_of(bob_phone, "call.signal")
        # A signal to a device that is not in the call goes nowhere.
        stray = {"call_id": call_id, "to": "nobody", "kind": "ice_end"}
        assert (await ann_phone.request("call.signal", **stray))["code"] == "peer_gone"

        assert (await ann_phone.request("call.hangup", call_id=call_id))["type"] == "ok"
        for sock in (ann_phone, bob_phone, bob_laptop):
            ended = await sock.expect("call.ended", call_id=call_id)
            assert ended["reason"] == "hangup"
        entry = await bob_laptop.expect("message.new")
        assert entry["message"]["call"]["call_id"] == call_id
        assert entry["message"]["call"]["outcome"] == "completed"
        history = await bob_laptop.request("call.history")
        assert [c["id"] for c in history["calls"]] == [call_id]
        assert history["calls"][0]["end_reason"] == "hangup" and history["calls"][0]["duration_s"] >= 0
        for sock in (ann_phone, bob_phone, bob_laptop):
            await sock.close()


async def test_ring_timeout_decline_and_cancel(settings_for: SettingsFor) -> None:
    async with serve_node(settings_for(CALL_RING_TIMEOUT="1s")) as node:
        ann, bob = await new_user(node.url, "Ann"), await new_user(node.url, "Bob")
        a, b = await device(node, ann), await device(node, bob)
        chat = await conversation(a, bob)

        missed = (await a.request("call.start", conversation_id=chat))["call"]["id"]
        await b.expect("call.ringing")
        for sock in (a, b):
            assert (await sock.expect("call.ended", timeout=6, call_id=missed))["reason"] == "missed"
        entry = await b.expect("message.new")
        assert entry["message"]["call"]["outcome"] == "missed"

        declined = (await a.request("call.start", conversation_id=chat))["call"]["id"]
        await rings(b, declined)
        assert (await b.request("call.decline", call_id=declined))["type"] == "ok"
        assert (await a.expect("call.ended", call_id=declined))["reason"] == "declined"

        cancelled = (await a.request("call.start", conversation_id=chat))["call"]["id"]
        await rings(b, cancelled)
        assert (await b.request("call.cancel", call_id=cancelled))["code"] == "not_found"  # not the caller
        assert (await a.request("call.cancel", call_id=cancelled))["type"] == "ok"
        assert (await b.expect("call.ended", call_id=cancelled))["reason"] == "cancelled"
        assert (await b.request("call.accept", call_id=cancelled))["code"] == "call_ended"
        await a.close()
        await b.close()


async def test_glare_makes_one_call(settings_for: SettingsFor, redis_server: RedisServer) -> None:
    """Ann and Bob call each other at the same moment, on different nodes: one call, answered."""
    async with two_nodes(redis_settings(settings_for, redis_server)) as (na, nb):
        for _ in range(5):
            ann, bob = await new_user(na.url, "Ann"), await new_user(na.url, "Bob")
            a, b = await device(na, ann), await device(nb, bob)
            chat = await conversation(a, bob)
            first, second = await asyncio.gather(
                a.request("call.start", conversation_id=chat), b.request("call.start", conversation_id=chat)
            )
            assert first["type"] == second["type"] == "ok", (first, second)
            assert first["call"]["id"] == second["call"]["id"]
            history = await a.request("call.history")
            assert len(history["calls"]) == 1 and history["calls"][0]["state"] == "active", history
            await a.request("call.hangup", call_id=first["call"]["id"])
            await a.close()
            await b.close()


async def test_busy_and_strangers(settings_for: SettingsFor) -> None:
    async with serve_node(settings_for()) as node:
        ann, bob, eve, mal = [await new_user(node.url, n) for n in ("Ann", "Bob", "Eve", "Mal")]
        a, b, e, m = [await device(node, u) for u in (ann, bob, eve, mal)]
        ann_bob, eve_bob = await conversation(a, bob), await conversation(e, bob)
        call_id = (await a.request("call.start", conversation_id=ann_bob))["call"]["id"]
        await b.expect("call.ringing")
        bob_party = (await b.request("call.accept", call_id=call_id))["party_id"]

        busy = await e.request("call.start", conversation_id=eve_bob)
        assert busy["type"] == "ok" and busy["call"]["state"] == "ended", busy
        assert busy["call"]["end_reason"] == "busy"
        assert (await e.expect("call.ended"))["reason"] == "busy"
        await nothing_of(b, "call.ringing")

        # A stranger learns nothing and reaches nobody.
        assert (await m.request("call.start", conversation_id=ann_bob))["code"] == "not_found"
        for kind in ("call.accept", "call.join", "call.decline", "call.hangup"):
            assert (await m.request(kind, call_id=call_id))["code"] == "not_found", kind
        spoof = {"call_id": call_id, "to": bob_party, "kind": "offer", "sdp": "v=0"}
        assert (await m.request("call.signal", **spoof))["code"] == "not_found"
        await nothing_of(b, "call.signal")
        for sock in (a, b, e, m):
            await sock.close()


async def test_a_device_that_reconnects_rejoins_as_a_new_party(settings_for: SettingsFor) -> None:
    async with serve_node(settings_for(CALL_REJOIN_GRACE="30s")) as node:
        ann, bob = await new_user(node.url, "Ann"), await new_user(node.url, "Bob")
        a, b = await device(node, ann), await device(node, bob)
        chat = await conversation(a, bob)
        call_id = (await a.request("call.start", conversation_id=chat))["call"]["id"]
        await b.expect("call.ringing")
        old_party = (await b.request("call.accept", call_id=call_id))["party_id"]
        await a.expect("call.accepted", call_id=call_id, party_id=old_party)
        await b.close()  # the network drops; the call goes on for the grace period

        again = await device(node, bob)
        rejoined = await again.request("call.join", call_id=call_id)
        assert rejoined["type"] == "ok" and rejoined["party_id"] != old_party, rejoined
        moved = await a.expect("call.accepted", call_id=call_id, party_id=rejoined["party_id"])
        assert moved["user_id"] == bob.id  # Ann restarts ICE towards the new party
        restart = {"call_id": call_id, "to": rejoined["party_id"], "kind": "offer", "sdp": "v=0 ice-restart"}
        assert (await a.request("call.signal", **restart))["type"] == "ok"
        assert (await again.expect("call.signal"))["sdp"] == "v=0 ice-restart"
        gone = {"call_id": call_id, "to": old_party, "kind": "ice_end"}
        assert (await a.request("call.signal", **gone))["code"] == "peer_gone"
        await a.close()
        await again.close()


async def test_a_dropped_device_that_does_not_come_back_ends_the_call(settings_for: SettingsFor) -> None:
    async with serve_node(settings_for(CALL_REJOIN_GRACE="1s")) as node:
        ann, bob = await new_user(node.url, "Ann"), await new_user(node.url, "Bob")
        a, b = await device(node, ann), await device(node, bob)
        call_id = (await a.request("call.start", conversation_id=await conversation(a, bob)))["call"]["id"]
        await b.expect("call.ringing")
        await b.request("call.accept", call_id=call_id)
        await b.close()
        assert (await a.expect("call.ended", timeout=6, call_id=call_id))["reason"] == "failed"
        await a.close()


async def test_tier_rules_signal_limits_and_the_time_limit(settings_for: SettingsFor) -> None:
    settings = settings_for(
        CALL_VIDEO_BASIC="false",
        CALL_MAX_DURATION_BASIC="2s",
        CALL_SIGNAL_MAX_BYTES="100",
        CALL_SIGNAL_RATE_LIMIT="5/10s",
    )
    async with serve_node(settings) as node:
        ann, bob = await new_user(node.url, "Ann"), await new_user(node.url, "Bob")
        a, b = await device(node, ann), await device(node, bob)
        chat = await conversation(a, bob)
        video = await a.request("call.start", conversation_id=chat, media="video")
        assert video["code"] == "tier_required" and video["details"] == {"tier": "premium_starter"}, video

        call_id = (await a.request("call.start", conversation_id=chat, media="audio"))["call"]["id"]
        await b.expect("call.ringing")
        bob_party = (await b.request("call.accept", call_id=call_id))["party_id"]
        big = {"call_id": call_id, "to": bob_party, "kind": "offer", "sdp": "x" * 101}
        assert (await a.request("call.signal", **big))["code"] == "signal_too_large"
        small = {"call_id": call_id, "to": bob_party, "kind": "ice_end"}
        codes = [(await a.request("call.signal", **small)).get("code") for _ in range(6)]
        assert codes[-1] == "rate_limited", codes

        ended = await a.expect("call.ended", timeout=8, call_id=call_id)
        assert ended["reason"] == "time_limit"
        await a.close()
        await b.close()


async def test_a_group_call_goes_on_while_someone_is_in_it(settings_for: SettingsFor) -> None:
    async with serve_node(settings_for(CALL_RING_TIMEOUT="1s")) as node:
        ann, bob, cy, dee = [await new_user(node.url, n) for n in ("Ann", "Bob", "Cy", "Dee")]
        a, b, c, d = [await device(node, u) for u in (ann, bob, cy, dee)]
        team = await conversation(a, bob, cy, dee, group=True)
        started = await a.request("call.start", conversation_id=team, media="audio")
        assert started["call"]["mode"] == "sfu", started  # no LiveKit configured: the built-in SFU
        call_id = started["call"]["id"]
        for sock in (b, c, d):
            await rings(sock, call_id)
        assert (await b.request("call.accept", call_id=call_id))["type"] == "ok"
        assert (await d.request("call.decline", call_id=call_id))["type"] == "ok"
        left = await a.expect("call.participant", call_id=call_id, user_id=dee.id)
        assert left["state"] == "declined"
        missed = await a.expect("call.participant", timeout=6, call_id=call_id, user_id=cy.id)
        assert missed["state"] == "missed"  # the ring time is over for Cy; the call goes on
        assert (await c.request("call.join", call_id=call_id))["type"] == "ok"  # joins late
        assert (await a.request("call.leave", call_id=call_id))["type"] == "ok"
        assert (await b.expect("call.participant", call_id=call_id, user_id=ann.id))["state"] == "left"
        assert (await b.request("call.leave", call_id=call_id))["type"] == "ok"
        assert (await c.request("call.leave", call_id=call_id))["type"] == "ok"  # the last one out
        assert (await d.expect("call.ended", call_id=call_id))["reason"] == "hangup"
        for sock in (a, b, c, d):
            await sock.close()


async def test_a_group_call_on_livekit_through_the_server(settings_for: SettingsFor) -> None:
    """With LiveKit configured: a room per call, join tokens in the replies, the signed webhook moves
    people out of the call, and a forged one is refused."""
    fake = FakeLiveKit()
    url = await fake.start()
    try:
        settings = settings_for(
            LIVEKIT_URL=url, LIVEKIT_API_KEY=fake.api_key, LIVEKIT_API_SECRET=fake.api_secret
        )
        async with serve_node(settings) as node, httpx.AsyncClient(base_url=node.url) as http:
            ann, bob, cy = [await new_user(node.url, n) for n in ("Ann", "Bob", "Cy")]
            a, b, c = [await device(node, u) for u in (ann, bob, cy)]
            team = await conversation(a, bob, cy, group=True)
            started = await a.request("call.start", conversation_id=team, media="video")
            assert started["call"]["mode"] == "livekit", started
            call_id = started["call"]["id"]
            assert started["livekit"]["room"] == call_id and started["livekit"]["url"].startswith("ws")
            for sock in (b, c):
                await rings(sock, call_id)
            joined = await b.request("call.accept", call_id=call_id)
            assert fake.connect(joined["livekit"]["token"]).identity == bob.id  # a token for this room
            assert call_id in fake.rooms

            forged = fake.webhook("participant_left", room=call_id, identity=bob.id, api_secret="x" * 32)
            refused = await http.post(
                "/api/calls/livekit/webhook", content=forged.body, headers=forged.headers
            )
            assert refused.status_code == 401, refused.text
            signed = fake.webhook("participant_left", room=call_id, identity=bob.id)
            taken = await http.post("/api/calls/livekit/webhook", content=signed.body, headers=signed.headers)
            assert taken.status_code == 200, taken.text
            assert (await a.expect("call.participant", call_id=call_id, user_id=bob.id))["state"] == "left"

            finished = fake.webhook("room_finished", room=call_id)
            await http.post("/api/calls/livekit/webhook", content=finished.body, headers=finished.headers)
            assert (await c.expect("call.ended", call_id=call_id))["reason"] == "hangup"
            await asyncio.sleep(0.3)
            assert call_id not in fake.rooms  # the server deleted the room
            for sock in (a, b, c):
                await sock.close()
    finally:
        await fake.stop()


async def test_fallback_moves_a_two_party_call_to_the_sfu(settings_for: SettingsFor) -> None:
    async with serve_node(settings_for()) as node:
        ann, bob = await new_user(node.url, "Ann"), await new_user(node.url, "Bob")
        a, b = await device(node, ann), await device(node, bob)
        call_id = (await a.request("call.start", conversation_id=await conversation(a, bob)))["call"]["id"]
        await rings(b, call_id)
        await b.request("call.accept", call_id=call_id)
        moved = await b.request("call.fallback", call_id=call_id)
        assert moved["type"] == "ok" and moved["call"]["mode"] == "sfu", moved
        for sock in (a, b):
            assert (await sock.expect("call.mode"))["call"]["mode"] == "sfu"
        again = await a.request("call.fallback", call_id=call_id)  # the other device asked too: no change
        assert again["call"]["mode"] == "sfu"
        await nothing_of(a, "call.mode")
        await a.request("call.hangup", call_id=call_id)
        await a.close()
        await b.close()
