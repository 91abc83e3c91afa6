"""Finding people and profiles through real sockets: exact lookup by email or @handle, search among
the people you share a conversation with, handles (rules, reservations, a race for one), avatars, the
durable profile.updated, and the rate limits that keep lookups from enumerating accounts."""

from __future__ import annotations

import asyncio
import secrets
import unicodedata
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx

from kintsugi_rt.people.service import RESERVED_HANDLES, handle_key
from kintsugi_rt.settings import RateLimit, Settings, load_settings
from tests.support import Node, RedisServer, serve_node
from tests.test_media import ogg_opus, png
from tests.wsclient import PASSWORD, Socket, User, new_user

SettingsFor = Callable[..., Settings]


async def connect(node: Node, user: User) -> Socket:
    sock = await Socket.open(node.ws_url, user.token)
    await sock.expect("hello")
    await sock.request("ping")  # past the resume grace: durable events flow at once
    return sock


async def register(node: Node, email: str, name: str) -> User:
    async with httpx.AsyncClient(base_url=node.url, timeout=10) as http:
        response = await http.post(
            "/api/auth/register", json={"email": email, "password": PASSWORD, "display_name": name}
        )
    assert response.status_code == 201, response.text
    data = response.json()
    return User(data["user"]["id"], email, data["access_token"], data["refresh_token"])


async def person(node: Node, display_name: str) -> User:
    """A new user with any display name (``new_user`` puts the name into the address)."""
    return await register(node, f"person-{secrets.token_hex(5)}@example.com", display_name)


def unique_handle(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(4)}"


async def ok(sock: Socket, type_: str, **fields: Any) -> dict[str, Any]:
    reply = await sock.request(type_, **fields)
    assert reply["type"] == "ok", reply
    return reply


async def error(sock: Socket, type_: str, code: str, **fields: Any) -> dict[str, Any]:
    reply = await sock.request(type_, **fields)
    assert reply["type"] == "error" and reply["code"] == code, reply
    return reply


async def upload(node: Node, user: User, content: bytes, filename: str, **fields: str) -> str:
    async with httpx.AsyncClient(base_url=node.url, timeout=10) as http:
        response = await http.post(
            "/api/media",
            files={"file": (filename, content, "application/octet-stream")},
            data=fields,
            headers={"Authorization": f"Bearer {user.token}"},
        )
    assert response.status_code == 201, response.text
    media_id: str = response.json()["id"]
    return media_id


async def media_status(node: Node, user: User, media_id: str) -> int:
    async with httpx.AsyncClient(base_url=node.url, timeout=10) as http:
        response = await http.get(f"/api/media/{media_id}", headers={"Authorization": f"Bearer {user.token}"})
    return response.status_code


def test_handle_normal_form() -> None:
    assert handle_key(" @Ann_Lee ") == "ann_lee"
    assert handle_key("ann_lee") == "ann_lee"
    for bad in ("ab", "1abc", "_abc", "a-b-c", "a" * 33, "@@ann", "ann lee", "\u212aelvin", "an\nn"):
        assert handle_key(bad) is None, bad
    assert handle_key("a" * 32) == "a" * 32
    assert {"admin", "support", "kintsugi", "system"} <= RESERVED_HANDLES


def test_rate_limit_settings(tmp_path: Path) -> None:
    defaults = load_settings({"KINTSUGI_DATA_DIR": str(tmp_path)})
    assert defaults.user_lookup_rate_limit == RateLimit(30, timedelta(minutes=1))
    assert defaults.user_search_rate_limit == RateLimit(60, timedelta(minutes=1))
    tuned = load_settings(
        {
            "KINTSUGI_DATA_DIR": str(tmp_path),
            "USER_LOOKUP_RATE_LIMIT": "5/10s",
            "USER_SEARCH_RATE_LIMIT": "9/1h",
        }
    )
    assert tuned.user_lookup_rate_limit == RateLimit(5, timedelta(seconds=10))
    assert tuned.user_search_rate_limit == RateLimit(9, timedelta(hours=1))


async def test_lookup_by_exact_email_or_handle(settings_for: SettingsFor) -> None:
    async with serve_node(settings_for()) as node:
        nfc = unicodedata.normalize("NFC", f"josé.{secrets.token_hex(4)}@example.com")
        jose = await register(node, nfc, "José")
        ann = await new_user(node.url, "Ann")
        ann_s, jose_s = await connect(node, ann), await connect(node, jose)
        handle = unique_handle("jose")
        await ok(jose_s, "profile.update", handle=handle.upper())

        expected = {"user_id": jose.id, "display_name": "José", "handle": handle, "avatar": None}
        nfd_upper = unicodedata.normalize("NFD", nfc).upper()
        for email in (nfc, nfd_upper, f"  {nfc.upper()}  "):
            found = await ok(ann_s, "user.lookup", email=email)
            assert found["profile"] == expected, email  # and never the email address
        for typed in (handle, f"@{handle}", f"@{handle.upper()}", f" {handle.title()} "):
            assert (await ok(ann_s, "user.lookup", handle=typed))["profile"] == expected, typed

        # Unknown address, unknown handle, something that cannot be a handle: one and the same answer.
        answers = [
            await error(
                ann_s, "user.lookup", "not_found", email=f"nobody-{secrets.token_hex(4)}@example.com"
            ),
            await error(ann_s, "user.lookup", "not_found", handle=unique_handle("nobody")),
            await error(ann_s, "user.lookup", "not_found", handle="@x"),
        ]
        assert len({(a["message"], str(a.get("details"))) for a in answers}) == 1, answers

        await error(ann_s, "user.lookup", "bad_request")  # neither
        await error(ann_s, "user.lookup", "bad_request", email=nfc, handle=handle)  # both
        bad = await error(ann_s, "user.lookup", "bad_request", email="not an address")
        assert bad["details"] == {"field": "email"}


async def test_search_finds_only_people_sharing_a_conversation(settings_for: SettingsFor) -> None:
    async with serve_node(settings_for()) as node:
        ann = await person(node, "Ann")
        rosa, carla = await person(node, "Rosa Parks"), await person(node, "Carla Rosales")
        stranger = await person(node, "Rosa Stranger")  # shares nothing with Ann
        pct, near_pct = await person(node, "Deal 50%off"), await person(node, "Deal 50 off")
        under, near_under = await person(node, "Mia_Tan"), await person(node, "MiaXTan")
        slash = await person(node, "Back\\slash")
        ann_s, rosa_s = await connect(node, ann), await connect(node, rosa)
        await ok(ann_s, "conversation.create", kind="direct", user_ids=[rosa.id])
        await ok(
            ann_s,
            "conversation.create",
            kind="group",
            title="Team",
            user_ids=[carla.id, pct.id, near_pct.id, under.id, near_under.id, slash.id],
        )
        handle = unique_handle("rp")
        await ok(rosa_s, "profile.update", handle=handle)

        async def names(query: str, **extra: Any) -> list[str]:
            reply = await ok(ann_s, "user.search", query=query, **extra)
            return [p["display_name"] for p in reply["profiles"]]

        # Prefix matches first ("Rosa Parks" starts with it; "Carla Rosales" only contains it).
        assert await names("rosa") == ["Rosa Parks", "Carla Rosales"]
        assert await names("ROSA", limit=1) == ["Rosa Parks"]
        assert stranger.id not in {
            p["user_id"] for p in (await ok(ann_s, "user.search", query="stranger"))["profiles"]
        }
        assert await names("Stranger") == []
        assert await names(handle[3:]) == ["Rosa Parks"]  # by handle, inside it
        assert await names(f"@{handle}") == ["Rosa Parks"]
        assert await names("ann") == []  # never yourself
        # LIKE's wildcards and escape are literal characters here.
        assert await names("50%") == ["Deal 50%off"]
        assert await names("a_t") == ["Mia_Tan"]
        assert await names("%") == ["Deal 50%off"]
        assert await names("_") == ["Mia_Tan", "Rosa Parks"]  # Rosa by her handle, rp_…
        assert await names("k\\s") == ["Back\\slash"]
        await error(ann_s, "user.search", "bad_request", query="   ")
        await error(ann_s, "user.search", "bad_request", query="x" * 65)
        await error(ann_s, "user.search", "bad_request", query="rosa", limit=51)

        # Search is the user's own circle: the stranger finds none of them.
        stranger_s = await connect(node, stranger)
        assert (await ok(stranger_s, "user.search", query="rosa"))["profiles"] == []


async def test_handle_rules(settings_for: SettingsFor) -> None:
    async with serve_node(settings_for()) as node:
        ann, bo = await new_user(node.url, "Ann"), await new_user(node.url, "Bo")
        ann_s, bo_s = await connect(node, ann), await connect(node, bo)
        handle = unique_handle("ann")

        mine = await ok(ann_s, "profile.update", handle=f"@{handle.upper()}")
        assert mine["profile"]["handle"] == handle  # stored lower-case, without the '@'
        await ok(ann_s, "profile.update", handle=handle)  # your own again: fine

        taken = await error(bo_s, "profile.update", "handle_taken", handle=handle.title())
        assert taken["details"] == {"field": "handle"}
        for reserved in ("admin", "Support", "@kintsugi", "SYSTEM"):
            await error(bo_s, "profile.update", "handle_taken", handle=reserved)
        for bad in ("ab", "9lives", "_ann", "ann-lee", "a" * 33, "ännä", "ann lee", "@"):
            refused = await error(bo_s, "profile.update", "bad_request", handle=bad)
            assert refused["details"] == {"field": "handle"}, bad
        # A refused update changes nothing, not even the other fields sent with it.
        await error(bo_s, "profile.update", "handle_taken", handle="admin", display_name="Robert")
        assert (await ok(bo_s, "profile.get"))["profile"]["display_name"] == "Bo"

        # null clears a handle, and the freed one can be taken.
        cleared = await ok(ann_s, "profile.update", handle=None)
        assert cleared["profile"]["handle"] is None
        assert (await ok(bo_s, "profile.update", handle=handle))["profile"]["handle"] == handle

        # Display names: trimmed, 1 to 64 characters, no control characters.
        renamed = await ok(ann_s, "profile.update", display_name="  Ann   Lee ")
        assert renamed["profile"]["display_name"] == "Ann Lee"
        for bad_name in ("   ", "x" * 65, "Ann\u200bLee", "Ann\x07"):
            refused = await error(ann_s, "profile.update", "bad_request", display_name=bad_name)
            assert refused["details"] == {"field": "display_name"}, bad_name
        # Nothing asked: the profile as it is.
        assert (await ok(ann_s, "profile.update"))["profile"]["display_name"] == "Ann Lee"


async def test_two_users_claiming_one_handle_at_once(settings_for: SettingsFor) -> None:
    async with serve_node(settings_for()) as node:
        ann, bo = await new_user(node.url, "Ann"), await new_user(node.url, "Bo")
        ann_s, bo_s = await connect(node, ann), await connect(node, bo)
        for _ in range(8):
            handle = unique_handle("race")
            replies = await asyncio.gather(
                ann_s.request("profile.update", handle=handle),
                bo_s.request("profile.update", handle=handle.upper()),
            )
            outcomes = sorted(r["type"] if r["type"] == "ok" else r["code"] for r in replies)
            assert outcomes == ["handle_taken", "ok"], replies
            winner = next(r for r in replies if r["type"] == "ok")
            found = await ok(ann_s, "user.lookup", handle=handle)
            assert found["profile"]["user_id"] == winner["profile"]["user_id"]


async def test_profile_updated_reaches_the_users_other_devices(settings_for: SettingsFor) -> None:
    async with serve_node(settings_for()) as node:
        ann, bo, eve = (
            await new_user(node.url, "Ann"),
            await new_user(node.url, "Bo"),
            await new_user(node.url, "Eve"),
        )
        phone, laptop = await connect(node, ann), await connect(node, ann)
        bo_s, eve_s = await connect(node, bo), await connect(node, eve)
        conversation = await ok(bo_s, "conversation.create", kind="direct", user_ids=[ann.id])
        handle = unique_handle("ann")

        updated = await ok(phone, "profile.update", display_name="Ann Lee", handle=handle)
        for device in (laptop, phone):
            event = await device.expect("profile.updated")
            assert event["profile"] == updated["profile"] and event["pos"] > 0
        assert (await ok(laptop, "profile.get"))["profile"] == updated["profile"]

        # Someone sharing a conversation sees the profile, and the handle beside the member's name;
        # anyone else learns nothing.
        assert (await ok(bo_s, "profile.get", user_id=ann.id))["profile"] == updated["profile"]
        view = await ok(bo_s, "conversation.get", conversation_id=conversation["conversation"]["id"])
        member = next(m for m in view["conversation"]["members"] if m["user_id"] == ann.id)
        assert (member["display_name"], member["handle"]) == ("Ann Lee", handle)
        await error(eve_s, "profile.get", "not_found", user_id=ann.id)
        await error(eve_s, "profile.get", "not_found", user_id="00000000-0000-4000-8000-000000000000")
        assert not [f for f in bo_s.backlog if f.get("type") == "profile.updated"]

        # A device that was away gets it on resume (it is durable).
        await laptop.close()
        await ok(phone, "profile.update", display_name="Ann L.")
        later = await Socket.open(node.ws_url, ann.token)
        hello = await later.expect("hello")
        await later.send({"type": "resume", "id": "res", "epoch": hello["epoch"], "pos": event["pos"]})
        replayed = await later.expect("profile.updated")
        assert replayed["profile"]["display_name"] == "Ann L." and replayed["pos"] > event["pos"]
        assert (await later.expect("resumed"))["id"] == "res"


async def test_avatars(settings_for: SettingsFor) -> None:
    async with serve_node(settings_for()) as node:
        ann, bo, eve = (
            await new_user(node.url, "Ann"),
            await new_user(node.url, "Bo"),
            await new_user(node.url, "Eve"),
        )
        ann_s, bo_s = await connect(node, ann), await connect(node, bo)
        conversation = await ok(ann_s, "conversation.create", kind="direct", user_ids=[bo.id])
        photo = await upload(node, ann, png(4, 4), "me.png")
        bos_photo = await upload(node, bo, png(2, 2), "bo.png")
        as_file = await upload(node, ann, png(3, 3), "doc.png", kind="file")
        voice = await upload(node, ann, ogg_opus(800), "hi.ogg", kind="voice")

        refused = await error(ann_s, "profile.update", "not_found", avatar_media_id=bos_photo)
        assert refused["details"] == {"field": "avatar_media_id"}
        await error(
            ann_s, "profile.update", "not_found", avatar_media_id="00000000-0000-4000-8000-000000000000"
        )
        for not_an_image in (as_file, voice):
            refused = await error(ann_s, "profile.update", "bad_request", avatar_media_id=not_an_image)
            assert refused["details"] == {"field": "avatar_media_id"}
        assert await media_status(node, eve, photo) == 404  # not an avatar yet: only Ann's

        set_ = await ok(ann_s, "profile.update", avatar_media_id=photo)
        avatar = set_["profile"]["avatar"]
        assert avatar["media_id"] == photo and avatar["expires_at"]
        # Signed links: an <img src> loads the picture and its thumbnail without a token.
        async with httpx.AsyncClient(base_url=node.url, timeout=10) as anonymous:
            picture = await anonymous.get(avatar["url"])
            assert picture.status_code == 200 and picture.content == png(4, 4)
            if avatar["thumbnail_url"] is not None:
                assert (await anonymous.get(avatar["thumbnail_url"])).status_code == 200
        # Whoever is shown the profile gets the links: Bo (a contact) and Eve (by lookup).
        assert (await ok(bo_s, "profile.get", user_id=ann.id))["profile"]["avatar"]["media_id"] == photo
        handle = unique_handle("ann")
        await ok(ann_s, "profile.update", handle=handle)
        eve_s = await connect(node, eve)
        looked_up = await ok(eve_s, "user.lookup", handle=handle)
        assert looked_up["profile"]["avatar"]["url"].startswith(f"/api/media/{photo}/")
        # Anyone may be shown Ann's profile (user.lookup), so anyone signed in may load her avatar.
        assert await media_status(node, eve, photo) == 200
        assert await media_status(node, eve, as_file) == 404  # her other files stay hers
        view = await ok(bo_s, "conversation.get", conversation_id=conversation["conversation"]["id"])
        member = next(m for m in view["conversation"]["members"] if m["user_id"] == ann.id)
        assert member["avatar_media_id"] == photo

        cleared = await ok(ann_s, "profile.update", avatar_media_id=None)
        assert cleared["profile"]["avatar"] is None
        assert await media_status(node, eve, photo) == 404


async def test_lookups_and_searches_are_rate_limited_across_nodes(
    settings_for: SettingsFor, redis_server: RedisServer
) -> None:
    settings = settings_for(
        REDIS_URL=redis_server.url,
        REDIS_KEY_PREFIX=f"p{secrets.token_hex(4)}:",
        USER_LOOKUP_RATE_LIMIT="4/1m",
        USER_SEARCH_RATE_LIMIT="3/1m",
    )
    async with serve_node(settings) as a, serve_node(settings) as b:
        ann, bo = await new_user(a.url, "Ann"), await new_user(a.url, "Bo")
        on_a, on_b, bo_s = await connect(a, ann), await connect(b, ann), await connect(a, bo)
        # Known, unknown and malformed lookups all count: four in all, on either node.
        await ok(on_a, "user.lookup", email=bo.email)
        await error(on_b, "user.lookup", "not_found", email=f"x-{secrets.token_hex(4)}@example.com")
        await error(on_a, "user.lookup", "not_found", handle="@nobody_here_at_all")
        await error(on_b, "user.lookup", "bad_request", email="nope")
        limited = await error(on_a, "user.lookup", "rate_limited", email=bo.email)
        assert 0 < limited["retry_after_ms"] <= 60_000
        await error(on_b, "user.lookup", "rate_limited", handle="@anyone")
        await ok(bo_s, "user.lookup", email=ann.email)  # per user: Bo has his own budget

        for sock in (on_a, on_b, on_a):
            await ok(sock, "user.search", query="bo")
        limited = await error(on_b, "user.search", "rate_limited", query="bo")
        assert limited["retry_after_ms"] > 0
        await ok(bo_s, "user.search", query="ann")
