"""TURN: the per-call credentials (coturn's TURN REST API scheme), and two WebRTC peers forced through a
real coturn relay with them."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from kintsugi_rt.calls.frames import IceServer
from kintsugi_rt.calls.ice import ice_servers, turn_configured, turn_credentials
from tests.coturn import Coturn
from tests.rtc import Peer
from tests.support import make_settings

USER = uuid.UUID("8d3c1f4e-2b7a-4c59-9e61-0f2a6b1d7c35")
NOW = datetime(2026, 1, 1, tzinfo=UTC)  # 1767225600


# --- credentials ---------------------------------------------------------------------------------


def test_credentials_are_coturns_rest_api_hmac() -> None:
    settings = make_settings(
        {
            "TURN_URLS": "turn:turn.example.com:3478?transport=udp",
            "TURN_SECRET": "north-wind",
            "TURN_CREDENTIAL_TTL": "2h",
        }
    )
    [turn] = ice_servers(settings, USER, NOW)
    assert turn.urls == ["turn:turn.example.com:3478?transport=udp"]
    # 2026-01-01T02:00:00Z; the credential computed apart from our code:
    # printf '%s' '1767232800:8d3c...7c35' | openssl dgst -sha1 -hmac north-wind -binary | base64
    assert turn.username == "1767232800:8d3c1f4e-2b7a-4c59-9e61-0f2a6b1d7c35"
    assert turn.credential == "3X2TTDIN51tKDEHRwgvv8u3efuU="


def test_credentials_expire_after_the_ttl() -> None:
    settings = make_settings(
        {"TURN_URLS": "turn:t.example.com", "TURN_SECRET": "s", "TURN_CREDENTIAL_TTL": "30m"}
    )
    now = datetime(2026, 3, 4, 5, 6, 7, 890_000, tzinfo=UTC)
    [turn] = ice_servers(settings, USER, now)
    assert turn.username is not None
    expiry, user = turn.username.split(":", 1)
    assert datetime.fromtimestamp(int(expiry), UTC) == datetime(2026, 3, 4, 5, 36, 7, tzinfo=UTC)
    assert user == str(USER)
    # another user or another moment: other credentials
    assert ice_servers(settings, uuid.uuid4(), now)[0].credential != turn.credential
    assert ice_servers(settings, USER, now + timedelta(seconds=1))[0].credential != turn.credential
    creds = turn_credentials("s", USER, now + timedelta(minutes=30))
    assert (creds.username, creds.credential) == (turn.username, turn.credential)
    with pytest.raises(ValueError, match="timezone-aware"):
        turn_credentials("s", USER, datetime(2026, 1, 1))


def test_stun_alone_and_no_turn_without_a_secret() -> None:
    stun = "stun:stun.example.com:3478"
    nothing = make_settings()
    assert ice_servers(nothing, USER, NOW) == []
    assert not turn_configured(nothing)

    without_secret = make_settings({"ICE_STUN_URLS": stun, "TURN_URLS": "turn:t.example.com:3478"})
    assert not turn_configured(without_secret)
    servers = ice_servers(without_secret, USER, NOW)
    assert servers == [IceServer(urls=[stun])]
    assert msgspec.json.decode(msgspec.json.encode(servers)) == [{"urls": [stun]}]  # no username/credential

    without_urls = make_settings({"TURN_SECRET": "s"})
    assert not turn_configured(without_urls)
    assert ice_servers(without_urls, USER, NOW) == []

    both = make_settings(
        {
            "ICE_STUN_URLS": f"{stun},stun:stun2.example.com",
            "TURN_URLS": "turn:a:3478,turns:a:5349",
            "TURN_SECRET": "s",
        }
    )
    assert turn_configured(both)
    first, second = ice_servers(both, USER, NOW)
    assert first == IceServer(urls=[stun, "stun:stun2.example.com"])
    assert second.urls == ["turn:a:3478", "turns:a:5349"]
    assert second.username and second.credential


# --- through a real relay ------------------------------------------------------------------------


def _servers(coturn: Coturn, secret: str, user: uuid.UUID) -> list[IceServer]:
    settings = make_settings({"TURN_URLS": coturn.url, "TURN_SECRET": secret})
    return ice_servers(settings, user, datetime.now(UTC))


async def _offer_answer(offerer: Peer, answerer: Peer) -> None:
    await offerer.accept_answer(await answerer.accept_offer(await offerer.create_offer()))


async def test_relay_only_peers_exchange_audio_and_video_through_coturn(coturn: Coturn) -> None:
    ann_id, bob_id = uuid.uuid4(), uuid.uuid4()
    ann = Peer("ann", ice_servers=_servers(coturn, coturn.secret, ann_id), relay_only=True)
    bob = Peer("bob", ice_servers=_servers(coturn, coturn.secret, bob_id), relay_only=True)
    async with ann, bob:
        await _offer_answer(ann, bob)
        # Relay-only: every candidate either side offered is a TURN allocation on coturn.
        for peer in (ann, bob):
            candidates = peer.local_candidates()
            assert candidates, f"{peer.name} gathered no relay candidate"
            assert all(" typ relay" in c.candidate for c in candidates), candidates
        await asyncio.gather(ann.connected(), bob.connected())
        for peer in (ann, bob):
            await peer.frames_received("audio", at_least=25)  # half a second of 20 ms frames
            await peer.frames_received("video", at_least=8)
            pair = peer.selected_pair()
            assert pair is not None
            assert (pair.local_type, pair.remote_type) == ("relay", "relay"), pair
            assert peer.selected_candidate_type() == "relay"
            assert pair.remote_address[0] == "127.0.0.1"
    # coturn relayed for both users (its log names the REST API usernames).
    for user in (ann_id, bob_id):
        assert coturn.log_lines(f":{user}>", "ALLOCATE processed, success"), coturn.log()[-3000:]


async def test_candidates_can_be_trickled(coturn: Coturn) -> None:
    """The offer's candidates go separately, as `call.signal` kind "ice" would carry them."""
    ann = Peer("ann", ice_servers=_servers(coturn, coturn.secret, uuid.uuid4()), relay_only=True, video=False)
    bob = Peer("bob", ice_servers=_servers(coturn, coturn.secret, uuid.uuid4()), relay_only=True, video=False)
    async with ann, bob:
        offer = await ann.create_offer()
        bare = "\r\n".join(
            line
            for line in offer.split("\r\n")
            if not line.startswith(("a=candidate:", "a=end-of-candidates"))
        )
        await ann.accept_answer(await bob.accept_offer(bare))
        for candidate in ann.local_candidates():
            await bob.add_ice_candidate(candidate)
        await bob.add_ice_candidate(None)
        await asyncio.gather(ann.connected(), bob.connected())
        await bob.frames_received("audio", at_least=10)
        assert bob.selected_candidate_type() == "relay"


@pytest.mark.parametrize(
    ("secret", "issued"),
    [("another", timedelta(0)), ("right", -timedelta(hours=3))],
    ids=["signed-with-another-secret", "expired"],
)
async def test_bad_credentials_do_not_connect(coturn: Coturn, secret: str, issued: timedelta) -> None:
    """coturn refuses the allocation (401) for credentials signed with another secret, or whose expiry
    (TURN_CREDENTIAL_TTL, 2 h) has passed, so relay-only peers gather no candidate and never connect.
    (aiortc does not start ICE without a local candidate: the state stays "new", never "failed".)"""
    secret = coturn.secret if secret == "right" else "not-" + coturn.secret
    settings = make_settings({"TURN_URLS": coturn.url, "TURN_SECRET": secret})
    users = uuid.uuid4(), uuid.uuid4()
    ann, bob = (
        Peer(
            f"peer-{n}", ice_servers=ice_servers(settings, user, datetime.now(UTC) + issued), relay_only=True
        )
        for n, user in enumerate(users)
    )
    async with ann, bob:
        started = time.monotonic()
        await _offer_answer(ann, bob)
        assert time.monotonic() - started < 5  # the refusal is immediate, not a timeout
        assert ann.local_candidates() == [] and bob.local_candidates() == []
        with pytest.raises(AssertionError, match="connection still new"):
            await ann.wait_state({"connected", "failed"}, timeout=2)
        assert bob.connection_state != "connected"
        assert ann.counts("audio") in ([], [0]) and bob.counts("video") in ([], [0])
        assert ann.selected_pair() is None and bob.selected_pair() is None
    # coturn refused the offerer's allocation (the answerer's aioice, given an offer without a single
    # candidate, ends ICE before it even asks).
    assert coturn.log_lines(f":{users[0]}>", "error 401: Unauthorized"), coturn.log()[-3000:]
