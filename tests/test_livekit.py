"""The LiveKit adapter against a local fake of LiveKit's Twirp API, its tokens, and its webhooks."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import jwt
import pytest

from kintsugi_rt.calls.livekit import InvalidWebhook, LiveKit, LiveKitError
from kintsugi_rt.settings import Settings
from tests.fake_livekit import TEST_API_KEY, TEST_API_SECRET, FakeLiveKit, TwirpError, sign_webhook
from tests.support import free_port, make_settings

FAST = timedelta(seconds=0.5)


def livekit_settings(url: str, *, key: str = TEST_API_KEY, secret: str = TEST_API_SECRET) -> Settings:
    return make_settings(LIVEKIT_URL=url, LIVEKIT_API_KEY=key, LIVEKIT_API_SECRET=secret)


@pytest.fixture
async def fake() -> AsyncIterator[FakeLiveKit]:
    server = FakeLiveKit()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def livekit(fake: FakeLiveKit) -> AsyncIterator[LiveKit]:
    adapter = LiveKit(livekit_settings(fake.url), timeout=FAST)
    yield adapter
    await adapter.close()


# --- configuration and tokens ----------------------------------------------------------------------


@pytest.mark.parametrize("missing", ["LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET"])
def test_enabled_only_with_all_three_settings(missing: str) -> None:
    complete = {"LIVEKIT_URL": "wss://lk.example.com", "LIVEKIT_API_KEY": "k", "LIVEKIT_API_SECRET": "s" * 32}
    assert LiveKit(make_settings(complete)).enabled
    partial = LiveKit(make_settings({k: v for k, v in complete.items() if k != missing}))
    assert not partial.enabled
    with pytest.raises(LiveKitError, match="not configured"):
        partial.join(uuid.uuid4(), uuid.uuid4(), "Ann", timedelta(hours=1))
    with pytest.raises(InvalidWebhook, match="not configured"):
        partial.verify_webhook(b"{}", sign_webhook(b"{}"))


def test_join_token_grants_exactly_joining_that_room() -> None:
    call_id, user_id, ttl = uuid.uuid4(), uuid.uuid4(), timedelta(minutes=90)
    before = int(time.time())
    join = LiveKit(livekit_settings("wss://lk.example.com/rtc")).join(call_id, user_id, "Ann Lee", ttl)
    after = int(time.time())

    assert join.url == "wss://lk.example.com/rtc"
    assert join.room == str(call_id)
    claims = jwt.decode(join.token, TEST_API_SECRET, algorithms=["HS256"], issuer=TEST_API_KEY)
    assert claims["iss"] == TEST_API_KEY
    assert claims["sub"] == str(user_id)
    assert claims["name"] == "Ann Lee"
    assert claims["video"] == {
        "roomJoin": True,
        "room": str(call_id),
        "canPublish": True,
        "canSubscribe": True,
        "canPublishData": False,
    }
    assert before + ttl.total_seconds() <= claims["exp"] <= after + ttl.total_seconds()
    assert not {"sip", "agent", "metadata", "attributes", "roomConfig"} & claims.keys()


@pytest.mark.parametrize(
    ("setting", "client_url"),
    [
        ("https://lk.example.com", "wss://lk.example.com"),
        ("http://127.0.0.1:7880", "ws://127.0.0.1:7880"),
        ("ws://127.0.0.1:7880", "ws://127.0.0.1:7880"),
    ],
)
def test_clients_get_the_websocket_form_of_the_url(setting: str, client_url: str) -> None:
    join = LiveKit(livekit_settings(setting)).join(uuid.uuid4(), uuid.uuid4(), "Ann", timedelta(hours=1))
    assert join.url == client_url


async def test_a_websocket_url_reaches_the_api_over_http(fake: FakeLiveKit) -> None:
    ws_url = fake.url.replace("http://", "ws://")
    adapter = LiveKit(livekit_settings(ws_url), timeout=FAST)
    try:
        await adapter.create_room(uuid.uuid4(), 4, timedelta(minutes=2))
    finally:
        await adapter.close()
    assert [r.method for r in fake.requests] == ["CreateRoom"]


# --- RoomService -------------------------------------------------------------------------------------


async def test_create_room_names_it_after_the_call(fake: FakeLiveKit, livekit: LiveKit) -> None:
    call_id = uuid.uuid4()
    await livekit.create_room(call_id, 8, timedelta(minutes=2))
    await livekit.create_room(call_id, 8, timedelta(minutes=2))  # creating it again is harmless

    room = fake.rooms[str(call_id)]
    assert (room.max_participants, room.empty_timeout) == (8, 120)
    assert len(fake.rooms) == 1
    request = fake.requests[0]
    assert (request.method, request.content_type, request.status) == (
        "CreateRoom",
        "application/protobuf",
        200,
    )
    assert request.body == {"name": str(call_id), "max_participants": 8, "empty_timeout": 120}
    assert request.grants["roomCreate"] is True
    assert not {"roomAdmin", "roomJoin", "roomList"} & request.grants.keys()


async def test_delete_room_and_a_missing_room_is_fine(fake: FakeLiveKit, livekit: LiveKit) -> None:
    call_id = uuid.uuid4()
    await livekit.create_room(call_id, 4, timedelta(minutes=1))
    fake.connect(livekit.join(call_id, uuid.uuid4(), "Ann", timedelta(hours=1)).token)

    await livekit.delete_room(call_id)
    assert str(call_id) not in fake.rooms
    await livekit.delete_room(call_id)
    assert [(r.method, r.status) for r in fake.requests[1:]] == [("DeleteRoom", 200), ("DeleteRoom", 404)]


async def test_remove_participant_and_a_missing_one_is_fine(fake: FakeLiveKit, livekit: LiveKit) -> None:
    call_id, ann, bob = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    await livekit.create_room(call_id, 4, timedelta(minutes=1))
    for user in (ann, bob):
        fake.connect(livekit.join(call_id, user, "someone", timedelta(hours=1)).token)

    await livekit.remove_participant(call_id, ann)
    assert set(fake.participants[str(call_id)]) == {str(bob)}
    await livekit.remove_participant(call_id, ann)  # already gone
    await livekit.remove_participant(uuid.uuid4(), ann)  # no such room
    removals = [r for r in fake.requests if r.method == "RemoveParticipant"]
    assert [r.status for r in removals] == [200, 404, 404]
    assert removals[0].body == {"room": str(call_id), "identity": str(ann)}
    grants = removals[0].grants
    assert (grants["roomAdmin"], grants["room"]) == (True, str(call_id))


async def test_a_server_error_is_a_livekit_error(fake: FakeLiveKit, livekit: LiveKit) -> None:
    fake.failure = TwirpError("internal", "database is on fire")
    started = time.monotonic()
    with pytest.raises(LiveKitError, match="database is on fire") as caught:
        await livekit.create_room(uuid.uuid4(), 4, timedelta(minutes=1))
    assert time.monotonic() - started < FAST.total_seconds()
    assert (caught.value.code, caught.value.status, caught.value.retryable) == ("internal", 500, True)


async def test_a_room_error_other_than_missing_is_raised(fake: FakeLiveKit, livekit: LiveKit) -> None:
    fake.failure = TwirpError("permission_denied", "permissions denied")
    with pytest.raises(LiveKitError) as caught:
        await livekit.delete_room(uuid.uuid4())
    assert (caught.value.code, caught.value.status, caught.value.retryable) == (
        "permission_denied",
        403,
        False,
    )


async def test_a_wrong_secret_is_refused_by_livekit(fake: FakeLiveKit) -> None:
    adapter = LiveKit(livekit_settings(fake.url, secret="not-the-secret-" + "x" * 24), timeout=FAST)
    try:
        with pytest.raises(LiveKitError, match="unauthenticated") as caught:
            await adapter.create_room(uuid.uuid4(), 4, timedelta(minutes=1))
    finally:
        await adapter.close()
    assert caught.value.status == 401
    assert fake.rooms == {}


async def test_an_unreachable_livekit_fails_at_once() -> None:
    adapter = LiveKit(livekit_settings(f"http://127.0.0.1:{free_port()}"), timeout=timedelta(seconds=3))
    started = time.monotonic()
    try:
        with pytest.raises(LiveKitError, match="cannot reach") as caught:
            await adapter.delete_room(uuid.uuid4())
    finally:
        await adapter.close()
    assert time.monotonic() - started < 1
    assert (caught.value.code, caught.value.retryable) == ("unavailable", True)


async def test_a_livekit_that_does_not_answer_times_out(fake: FakeLiveKit) -> None:
    fake.stalled = True
    adapter = LiveKit(livekit_settings(fake.url), timeout=timedelta(seconds=0.3))
    started = time.monotonic()
    try:
        with pytest.raises(LiveKitError, match="no answer") as caught:
            await adapter.remove_participant(uuid.uuid4(), uuid.uuid4())
    finally:
        await adapter.close()
    assert 0.3 <= time.monotonic() - started < 1
    assert caught.value.code == "deadline_exceeded"


async def test_the_fake_speaks_twirp_json_and_checks_grants(fake: FakeLiveKit) -> None:
    """The fake itself: JSON bodies, Twirp error bodies, tokens and grants checked as LiveKit does."""
    url = f"{fake.url}/twirp/livekit.RoomService/ListRooms"
    lister = jwt.encode(
        {"iss": TEST_API_KEY, "exp": int(time.time()) + 60, "video": {"roomList": True}}, TEST_API_SECRET
    )
    creator = jwt.encode(
        {"iss": TEST_API_KEY, "exp": int(time.time()) + 60, "video": {"roomCreate": True}}, TEST_API_SECRET
    )
    async with httpx.AsyncClient() as client:

        async def post(token: str | None) -> httpx.Response:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            return await client.post(url, json={"names": []}, headers=headers)

        ok, no_auth, wrong_grant = await post(lister), await post(None), await post(creator)
    assert (ok.status_code, ok.json()) == (200, {"rooms": []})
    assert (no_auth.status_code, no_auth.json()["code"]) == (401, "unauthenticated")
    assert (wrong_grant.status_code, wrong_grant.json()["code"]) == (403, "permission_denied")


# --- webhooks ----------------------------------------------------------------------------------------


async def test_a_signed_webhook_verifies_and_decodes(fake: FakeLiveKit, livekit: LiveKit) -> None:
    call_id, user_id = uuid.uuid4(), uuid.uuid4()
    await livekit.create_room(call_id, 4, timedelta(minutes=1))
    fake.connect(livekit.join(call_id, user_id, "Ann", timedelta(hours=1)).token)

    delivery = fake.webhook("participant_left", room=str(call_id), identity=str(user_id))
    event = livekit.verify_webhook(delivery.body, delivery.authorization)
    assert (event.event, event.room, event.identity, event.call_id) == (
        "participant_left",
        str(call_id),
        str(user_id),
        call_id,
    )
    assert event.id and event.id.startswith("EV_")
    assert event.created_at and abs(event.created_at - time.time()) < 5

    finished = fake.webhook("room_finished", room=str(call_id))
    bearer = livekit.verify_webhook(finished.body, f"Bearer {finished.authorization}")
    assert (bearer.event, bearer.room, bearer.identity) == ("room_finished", str(call_id), None)


def test_an_event_about_another_apps_room_has_no_call_id() -> None:
    fake = FakeLiveKit()
    delivery = fake.webhook("room_started", room="someone-elses-room")
    event = LiveKit(livekit_settings("wss://lk.example.com")).verify_webhook(
        delivery.body, delivery.authorization
    )
    assert (event.room, event.call_id) == ("someone-elses-room", None)


def _forge_signature(token: str) -> str:
    head, payload, signature = token.split(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    return f"{head}.{payload}.{flipped}"


def _refusals() -> list[tuple[str, bytes, str | None, str]]:
    """(case, body, Authorization, what the refusal says), each for a room our fake never saw."""
    fake = FakeLiveKit()
    good = fake.webhook("participant_joined", room=str(uuid.uuid4()), identity=str(uuid.uuid4()))
    ten_minutes_ago = time.time() - 600
    return [
        (
            "forged signature",
            good.body,
            _forge_signature(good.authorization),
            "does not match our API secret",
        ),
        (
            "wrong secret",
            good.body,
            sign_webhook(good.body, api_secret="another-secret-" + "x" * 24),
            "does not match our API secret",
        ),
        ("another API key", good.body, sign_webhook(good.body, api_key="APIother"), "another API key"),
        (
            "tampered body",
            good.body.replace(b"participant_joined", b"room_finished"),
            good.authorization,
            "does not match the signature",
        ),
        ("missing header", good.body, None, "missing Authorization"),
        ("empty header", good.body, "", "missing Authorization"),
        ("expired", good.body, sign_webhook(good.body, issued_at=ten_minutes_ago), "expired"),
        (
            "no body hash",
            good.body,
            jwt.encode({"iss": TEST_API_KEY, "exp": int(time.time()) + 60}, TEST_API_SECRET),
            "does not match the signature",
        ),
        ("not a token", good.body, "Bearer hello", "not a valid token"),
        ("not UTF-8", b"\xff" + good.body, sign_webhook(b"\xff" + good.body), "not UTF-8"),
        ("not an event", b"[1, 2]", sign_webhook(b"[1, 2]"), "not a LiveKit event"),
    ]


# The cases are signed when the test runs, not when it is collected: a token signed at collection
# could expire before a long run reaches it (it did: "no body hash" expired after 3 minutes).
REFUSAL_CASES = [r[0] for r in _refusals()]


@pytest.mark.parametrize("case", REFUSAL_CASES)
def test_webhooks_that_are_not_livekits_are_refused(case: str) -> None:
    body, authorization, reason = next((b, a, r) for c, b, a, r in _refusals() if c == case)
    livekit = LiveKit(livekit_settings("wss://lk.example.com"))
    with pytest.raises(InvalidWebhook, match=reason) as caught:
        livekit.verify_webhook(body, authorization)
    assert caught.value.reason == str(caught.value)
