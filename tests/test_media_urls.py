"""Media URLs a browser element can load: signed, expiring, bound to one file and variant; byte ranges
and ETags on every download; thumbnails made on upload; ``media.links`` to renew them; and messages
whose attachments carry them. On a local directory and an S3-compatible server (moto) alike."""

from __future__ import annotations

import hashlib
import io
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from PIL import Image

from kintsugi_rt.clock import ManualClock
from kintsugi_rt.media import MediaLinks, MediaNotFound, MediaService
from kintsugi_rt.settings import Settings
from tests import test_media
from tests.support import serve_node
from tests.test_media import Store, assert_error, auth, media_node, png, upload, wav
from tests.wsclient import Socket, User, login, new_user

TTL = 3600

# The storage backends under test (local directory, moto's S3), as test_media.py runs them.
store = test_media.store
s3_endpoint = test_media.s3_endpoint


def jpeg(width: int, height: int, *, orientation: int = 1) -> bytes:
    """A JPEG whose EXIF says how to turn it (6: 90° clockwise) and names a camera."""
    image = Image.new("RGB", (width, height), (200, 30, 30))
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "Test Camera Maker"
    out = io.BytesIO()
    image.save(out, "JPEG", exif=exif.tobytes(), quality=90)
    return out.getvalue()


def transparent_png(width: int, height: int) -> bytes:
    image = Image.new("RGBA", (width, height), (0, 0, 255, 0))
    image.paste((0, 255, 0, 255), (0, 0, width // 2, height))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def corrupt_png(width: int, height: int) -> bytes:
    """A PNG whose header is fine (so it is sniffed and sized) but whose pixel data is garbage."""
    good = png(width, height)
    idat = good.index(b"IDAT")
    return good[: idat + 4] + b"\x00garbage-not-zlib" * 8 + good[idat + 4 + 16 * 8 :]


async def links_of(client: httpx.AsyncClient, user: User, media_id: str) -> dict[str, Any]:
    response = await client.get(f"/api/media/{media_id}/links", headers=auth(user))
    assert response.status_code == 200, response.text
    links: dict[str, Any] = response.json()
    return links


def query_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def with_query(url: str, **changes: str) -> str:
    query = {**query_of(url), **changes}
    return urlsplit(url).path + "?" + "&".join(f"{k}={v}" for k, v in query.items())


async def connect(base_url: str, user: User) -> Socket:
    sock = await Socket.open(base_url.replace("http://", "ws://") + "/ws", user.token)
    await sock.expect("hello")
    await sock.request("ping")
    return sock


# --- signed URLs -----------------------------------------------------------------------------------


async def test_signed_url_loads_without_a_token(settings_for: Callable[..., Settings], store: Store) -> None:
    image = png(640, 480)
    async with media_node(settings_for(**store.env())) as (node, client):
        ann = await new_user(node.url, "Ann")
        media_id = (await upload(client, ann, image, filename="cat.png")).json()["id"]
        links = await links_of(client, ann, media_id)
        assert set(links) == {"media_id", "url", "thumbnail_url", "expires_at"}
        assert links["media_id"] == media_id
        assert links["url"].startswith(f"/api/media/{media_id}/content?variant=original&exp=")
        expires = datetime.fromisoformat(links["expires_at"])
        ahead = (expires - datetime.now(UTC)).total_seconds()
        assert TTL - 5 <= ahead <= TTL + TTL / 4, ahead  # the TTL, rounded up to a quarter of it
        assert int(query_of(links["url"])["exp"]) == int(expires.timestamp())

        got = await client.get(links["url"])  # no Authorization header: that is the point
        assert got.status_code == 200, got.text
        assert got.content == image
        assert got.headers["content-type"] == "image/png"
        assert got.headers["content-length"] == str(len(image))
        assert got.headers["accept-ranges"] == "bytes"
        assert got.headers["x-content-type-options"] == "nosniff"
        assert got.headers["content-security-policy"] == "default-src 'none'; sandbox"
        assert got.headers["content-disposition"].startswith("inline")
        assert got.headers["etag"] == f'"{upload_sha(image)}"'
        cache = got.headers["cache-control"]
        assert cache.startswith("private, max-age=")
        assert 0 < int(cache.split("max-age=")[1].split(",")[0]) <= ahead + 1

        thumb = await client.get(links["thumbnail_url"])
        assert thumb.status_code == 200, thumb.text
        assert thumb.headers["content-type"] in ("image/webp", "image/jpeg")
        with Image.open(io.BytesIO(thumb.content)) as shown:
            assert shown.size == (320, 240)

        # The same file gets the same URLs for a while (browsers keep what they cached).
        assert await links_of(client, ann, media_id) == links
        # The thumbnail with the token, too.
        authed = await client.get(f"/api/media/{media_id}?variant=thumbnail", headers=auth(ann))
        assert authed.content == thumb.content

        head = await client.head(links["url"])
        assert head.status_code == 200
        assert head.headers["content-length"] == str(len(image)) and head.content == b""


def upload_sha(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


async def test_signed_url_refusals(settings_for: Callable[..., Settings]) -> None:
    clock = ManualClock(datetime.now(UTC))
    async with serve_node(settings_for(), clock) as node, httpx.AsyncClient(base_url=node.url) as client:
        ann = await new_user(node.url, "Ann")
        image_id = (await upload(client, ann, png(8, 8))).json()["id"]
        other_id = (await upload(client, ann, png(9, 9))).json()["id"]
        text_id = (await upload(client, ann, b"just words\n", filename="a.txt")).json()["id"]
        links = await links_of(client, ann, image_id)
        other = await links_of(client, ann, other_id)
        text = await links_of(client, ann, text_id)
        assert text["thumbnail_url"] is None
        url, sig = links["url"], query_of(links["url"])["sig"]

        tampered = sig[:-2] + ("AA" if not sig.endswith("AA") else "BB")
        refused = [
            with_query(url, sig=tampered),
            with_query(url, sig=query_of(other["url"])["sig"]),  # another file's signature
            url.replace(image_id, other_id),  # this signature on another file
            with_query(url, variant="thumbnail"),  # the original's signature for the thumbnail
            with_query(url, exp=str(int(query_of(url)["exp"]) + 3600)),  # a later expiry
            with_query(url, sig=""),
            with_query(url, sig="!" * 43),
            with_query(url, exp="soon"),
            with_query(url, variant="poster"),
            urlsplit(url).path,  # no signature at all
            f"/api/media/not-a-uuid/content?{urlsplit(url).query}",
        ]
        bodies = set()
        for bad in refused:
            response = await client.get(bad)
            assert_error(response, 403, "url_invalid")
            bodies.add(response.content)
        assert len(bodies) == 1

        # A valid signature for a variant the file does not have: the file has no such thing.
        service = node.services.media
        exp = int(query_of(text["url"])["exp"])
        no_thumb = service.signer.url(uuid.UUID(text_id), "thumbnail", exp)
        assert_error(await client.get(no_thumb), 404, "not_found")
        # A valid signature for a file that does not exist.
        ghost = service.signer.url(uuid.uuid4(), "original", exp)
        assert_error(await client.get(ghost), 404, "not_found")

        # Past its expiry the URL is refused as expired; a renewed one works again.
        assert (await client.get(url)).status_code == 200
        clock.advance(timedelta(seconds=exp - clock.now().timestamp() + 1))
        expired = await client.get(url)
        assert_error(expired, 410, "url_expired")
        assert_error(await client.get(links["thumbnail_url"]), 410, "url_expired")
        ann_token = await login(node.url, ann)  # the clock moved past the access token's life too
        renewed = await client.get(
            f"/api/media/{image_id}/links", headers={"Authorization": f"Bearer {ann_token}"}
        )
        assert renewed.json()["url"] != url
        assert (await client.get(renewed.json()["url"])).status_code == 200


async def test_a_url_secret_of_its_own(settings_for: Callable[..., Settings]) -> None:
    """MEDIA_URL_SECRET replaces the key derived from JWT_SECRET: URLs signed with one fail with the other."""
    async with serve_node(settings_for()) as node, httpx.AsyncClient(base_url=node.url) as client:
        ann = await new_user(node.url, "Ann")
        media_id = (await upload(client, ann, png(4, 4))).json()["id"]
        derived = (await links_of(client, ann, media_id))["url"]
    async with (
        serve_node(settings_for(MEDIA_URL_SECRET="m" * 40)) as node,
        httpx.AsyncClient(base_url=node.url) as client,
    ):
        assert_error(await client.get(derived), 403, "url_invalid")
        own = (await links_of(client, ann, media_id))["url"]
        assert own != derived
        assert (await client.get(own)).status_code == 200


# --- ranges and ETags ------------------------------------------------------------------------------


async def test_ranges_and_etags(settings_for: Callable[..., Settings], store: Store) -> None:
    audio = wav(700)
    size = len(audio)
    async with media_node(settings_for(**store.env())) as (node, client):
        ann = await new_user(node.url, "Ann")
        media_id = (await upload(client, ann, audio, filename="a.wav", kind="voice")).json()["id"]
        signed = (await links_of(client, ann, media_id))["url"]
        etag = f'"{upload_sha(audio)}"'

        for url, headers in ((signed, {}), (f"/api/media/{media_id}", auth(ann))):
            cases = (
                ("bytes=0-99", 0, 99),
                ("bytes=100-", 100, size - 1),
                ("bytes=-50", size - 50, size - 1),
                ("bytes=10-99999999", 10, size - 1),
                (f"bytes=-{size * 3}", 0, size - 1),
            )
            for header, start, end in cases:
                part = await client.get(url, headers={**headers, "Range": header})
                assert part.status_code == 206, (header, part.text)
                assert part.content == audio[start : end + 1], header
                assert part.headers["content-range"] == f"bytes {start}-{end}/{size}"
                assert part.headers["content-length"] == str(end - start + 1)
                assert part.headers["content-type"] == "audio/wav"
                assert part.headers["accept-ranges"] == "bytes"

            for header in (f"bytes={size}-", f"bytes={size + 10}-{size + 20}", "bytes=-0"):
                refused = await client.get(url, headers={**headers, "Range": header})
                assert_error(refused, 416, "range_not_satisfiable")
                assert refused.headers["content-range"] == f"bytes */{size}"

            # Several ranges, malformed ones and other units: the whole file.
            for header in ("bytes=0-1,5-6", "bytes=5-1", "bytes=abc", "pages=1-2", "bytes=1"):
                whole = await client.get(url, headers={**headers, "Range": header})
                assert whole.status_code == 200, header
                assert whole.content == audio
            # If-Range with another ETag: the file changed, so the whole of it.
            stale = await client.get(url, headers={**headers, "Range": "bytes=0-9", "If-Range": '"old"'})
            assert stale.status_code == 200 and stale.content == audio
            fresh = await client.get(url, headers={**headers, "Range": "bytes=0-9", "If-Range": etag})
            assert fresh.status_code == 206 and fresh.content == audio[:10]

            for held in (etag, f"W/{etag}", f'"other", {etag}', "*"):
                same = await client.get(url, headers={**headers, "If-None-Match": held})
                assert same.status_code == 304, held
                assert same.content == b""
                assert same.headers["etag"] == etag
            changed = await client.get(url, headers={**headers, "If-None-Match": '"other"'})
            assert changed.status_code == 200 and changed.content == audio


async def test_executable_types_are_never_inline(settings_for: Callable[..., Settings]) -> None:
    """Markup uploads as plain text at most, and is served as a sandboxed attachment either way."""
    markup = b"<html><script>alert(1)</script></html>\n"
    async with media_node(settings_for()) as (node, client):
        ann = await new_user(node.url, "Ann")
        uploaded = await upload(client, ann, markup, filename="x.html", content_type="text/html")
        assert uploaded.json()["content_type"] == "text/plain"
        got = await client.get((await links_of(client, ann, uploaded.json()["id"]))["url"])
        assert got.headers["content-type"] == "text/plain; charset=utf-8"
        assert got.headers["content-disposition"].startswith("attachment")
        assert "sandbox" in got.headers["content-security-policy"]
        assert got.headers["x-content-type-options"] == "nosniff"


# --- thumbnails ------------------------------------------------------------------------------------


async def thumbnail_of(client: httpx.AsyncClient, user: User, media_id: str) -> Image.Image:
    links = await links_of(client, user, media_id)
    assert links["thumbnail_url"] is not None
    got = await client.get(links["thumbnail_url"])
    assert got.status_code == 200
    image = Image.open(io.BytesIO(got.content))
    image.load()
    return image


async def test_thumbnails(settings_for: Callable[..., Settings], store: Store) -> None:
    async with media_node(settings_for(**store.env())) as (node, client):
        ann = await new_user(node.url, "Ann")
        wide = (await upload(client, ann, png(1000, 500))).json()
        thumb = await thumbnail_of(client, ann, wide["id"])
        assert thumb.size == (320, 160)
        pixel = thumb.convert("RGB").getpixel((10, 10))
        assert isinstance(pixel, tuple)
        assert all(abs(got - want) <= 4 for got, want in zip(pixel, (255, 128, 0), strict=True))  # lossy

        # A photo taken on its side: the thumbnail is upright, and keeps none of the camera's metadata.
        photo = (await upload(client, ann, jpeg(400, 200, orientation=6))).json()
        assert photo["content_type"] == "image/jpeg"
        thumb = await thumbnail_of(client, ann, photo["id"])
        assert thumb.size == (160, 320)
        assert dict(thumb.getexif()) == {}
        assert "icc_profile" not in thumb.info and "exif" not in thumb.info

        # Small images get one too (re-encoded, never enlarged); transparency survives in WebP.
        small = (await upload(client, ann, transparent_png(40, 20))).json()
        thumb = await thumbnail_of(client, ann, small["id"])
        assert thumb.size == (40, 20)
        if thumb.format == "WEBP":
            corner = thumb.getpixel((39, 10))
            assert thumb.mode == "RGBA" and isinstance(corner, tuple) and corner[3] == 0

        rows = await node.ctx.db.pool.fetch(
            "SELECT width, height FROM media_thumbnails WHERE media_id = ANY($1)",
            [uuid.UUID(wide["id"]), uuid.UUID(photo["id"]), uuid.UUID(small["id"])],
        )
        assert len(rows) == 3 and all(max(r["width"], r["height"]) <= 320 for r in rows)
        assert len(await store.leftovers(node)) == 6  # three images, three thumbnails


async def test_images_without_a_thumbnail_still_upload(settings_for: Callable[..., Settings]) -> None:
    settings = settings_for(MEDIA_THUMBNAIL_MAX_PIXELS="10000")
    async with media_node(settings) as (node, client):
        ann = await new_user(node.url, "Ann")
        broken = await upload(client, ann, corrupt_png(30, 20), filename="broken.png")
        assert broken.status_code == 201, broken.text
        assert (broken.json()["width"], broken.json()["height"]) == (30, 20)
        links = await links_of(client, ann, broken.json()["id"])
        assert links["thumbnail_url"] is None
        assert (await client.get(links["url"])).content == corrupt_png(30, 20)

        # Over MEDIA_THUMBNAIL_MAX_PIXELS (a decompression bomb, say): kept, never decoded.
        huge = await upload(client, ann, png(200, 100))
        assert huge.status_code == 201
        assert (await links_of(client, ann, huge.json()["id"]))["thumbnail_url"] is None
        assert_error(
            await client.get(f"/api/media/{huge.json()['id']}?variant=thumbnail", headers=auth(ann)),
            404,
            "not_found",
        )
        fits = await upload(client, ann, png(100, 100))
        assert (await links_of(client, ann, fits.json()["id"]))["thumbnail_url"] is not None
        count = await node.ctx.db.pool.fetchval(
            "SELECT count(*) FROM media_thumbnails t JOIN media m ON m.id = t.media_id WHERE m.owner_id = $1",
            uuid.UUID(ann.id),
        )
        assert count == 1
        assert len(await Store("local").leftovers(node)) == 4


# --- renewing, and attachments -----------------------------------------------------------------------


async def test_media_links_frame(settings_for: Callable[..., Settings]) -> None:
    async with media_node(settings_for()) as (node, client):
        ann, bo, eve = [await new_user(node.url, n) for n in ("Ann", "Bo", "Eve")]
        shared = (await upload(client, ann, png(50, 50))).json()["id"]
        private = (await upload(client, ann, b"ann's notes\n")).json()["id"]
        own = (await upload(client, bo, wav(100), kind="voice")).json()["id"]
        unknown = str(uuid.uuid4())
        ann_s, bo_s, eve_s = [await connect(node.url, u) for u in (ann, bo, eve)]
        conv = (await ann_s.request("conversation.create", kind="direct", user_ids=[bo.id]))["conversation"]
        sent = await ann_s.request(
            "message.send", conversation_id=conv["id"], client_msg_id="m", attachments=[shared]
        )
        assert sent["type"] == "ok", sent

        reply = await bo_s.request("media.links", media_ids=[shared, private, own, unknown, shared])
        assert reply["type"] == "ok", reply
        assert [link["media_id"] for link in reply["links"]] == [shared, own]
        assert reply["not_found"] == [private, unknown]
        by_id = {link["media_id"]: link for link in reply["links"]}
        assert by_id[shared]["thumbnail_url"] is not None
        assert by_id[own]["thumbnail_url"] is None
        assert (await client.get(by_id[shared]["url"])).content == png(50, 50)

        # A stranger learns nothing: a file that exists looks like one that does not.
        foreign = await eve_s.request("media.links", media_ids=[shared, unknown])
        assert foreign["links"] == [] and foreign["not_found"] == [shared, unknown]
        mine = await ann_s.request("media.links", media_ids=[private])
        assert [link["media_id"] for link in mine["links"]] == [private]

        for bad in ([], [unknown] * 101, ["not-a-uuid"]):
            refused = await ann_s.request("media.links", media_ids=bad)
            assert refused["type"] == "error" and refused["code"] == "bad_request", refused
        for sock in (ann_s, bo_s, eve_s):
            await sock.close()


async def test_service_links_for_other_modules(settings_for: Callable[..., Settings]) -> None:
    """``MediaService.links`` / ``links_many``: what other modules (profiles' avatars) build on."""
    async with media_node(settings_for()) as (node, client):
        ann = await new_user(node.url, "Ann")
        image = uuid.UUID((await upload(client, ann, png(20, 20))).json()["id"])
        text = uuid.UUID((await upload(client, ann, b"hello\n")).json()["id"])
        service = node.services.media
        assert isinstance(service, MediaService)
        links = await service.links(image)
        assert isinstance(links, MediaLinks)
        assert links.media_id == image and links.thumbnail_url is not None
        assert links.url == (await links_of(client, ann, str(image)))["url"]
        many = await service.links_many([image, text, uuid.uuid4()])
        assert set(many) == {image, text} and many[text].thumbnail_url is None
        try:
            await service.links(uuid.uuid4())
        except MediaNotFound:
            pass
        else:
            raise AssertionError("links() of an unknown id must raise MediaNotFound")


async def test_message_attachments_carry_links(settings_for: Callable[..., Settings]) -> None:
    async with media_node(settings_for()) as (node, client):
        ann, bo = await new_user(node.url, "Ann"), await new_user(node.url, "Bo")
        photo = (await upload(client, ann, jpeg(640, 480))).json()["id"]
        voice = (await upload(client, ann, wav(300), kind="voice")).json()["id"]
        ann_s, bo_s = await connect(node.url, ann), await connect(node.url, bo)
        conv = (await ann_s.request("conversation.create", kind="direct", user_ids=[bo.id]))["conversation"]
        sent = await ann_s.request(
            "message.send", conversation_id=conv["id"], client_msg_id="p", attachments=[photo, voice]
        )

        def check(attachments: list[dict[str, Any]]) -> None:
            assert [a["id"] for a in attachments] == [photo, voice]
            image, audio = attachments
            assert image["url"].startswith(f"/api/media/{photo}/content?")
            assert image["thumbnail_url"].startswith(f"/api/media/{photo}/content?variant=thumbnail")
            assert audio["url"].startswith(f"/api/media/{voice}/content?")
            assert "thumbnail_url" not in audio
            for attachment in attachments:
                expires = datetime.fromisoformat(attachment["expires_at"])
                assert expires > datetime.now(UTC) + timedelta(minutes=50)

        check(sent["message"]["attachments"])
        event = await bo_s.expect("message.new")
        check(event["message"]["attachments"])
        image = event["message"]["attachments"][0]
        assert (await client.get(image["url"])).status_code == 200  # Bo's <img src>, no token
        thumb = await client.get(image["thumbnail_url"])
        with Image.open(io.BytesIO(thumb.content)) as shown:
            assert shown.size == (320, 240)

        history = await bo_s.request("message.history", conversation_id=conv["id"])
        check(history["messages"][-1]["attachments"])
        synced = await bo_s.request("conversation.sync", since={conv["id"]: 0})
        check(synced["messages"][-1]["attachments"])
        reacted = await bo_s.request("message.react", message_id=sent["message"]["id"], emoji="👍")
        check(reacted["message"]["attachments"])
        updated = await ann_s.expect("message.updated")
        check(updated["message"]["attachments"])
        for sock in (ann_s, bo_s):
            await sock.close()
