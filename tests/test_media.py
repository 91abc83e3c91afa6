"""The media module over real HTTP: uploads sniffed, sized and limited per tier, read back only by
those allowed, on a local directory and on an S3-compatible server (moto) alike."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import secrets
import struct
import uuid
import wave
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
from aiobotocore.session import get_session
from moto.server import ThreadedMotoServer

from kintsugi_rt.context import AppContext
from kintsugi_rt.media import MediaService
from kintsugi_rt.settings import Settings
from tests.support import Node, free_port, serve_node
from tests.wsclient import User, new_user

S3_REGION = "us-east-1"
S3_KEY = "test-access-key"
S3_SECRET = "test-secret-key"
MiB = 1024 * 1024


# --- files made here -------------------------------------------------------------------------


def png(width: int, height: int) -> bytes:
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    rows = b"".join(b"\x00" + b"\xff\x80\x00" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def wav(milliseconds: int, rate: int = 8000) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(b"\x00\x01" * (rate * milliseconds // 1000))
    return buffer.getvalue()


def _ogg_crc(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else crc << 1
            crc &= 0xFFFFFFFF
    return crc


def _ogg_page(packet: bytes, granule: int, sequence: int, flags: int) -> bytes:
    assert len(packet) < 255
    header = struct.pack("<4sBBqIIIB", b"OggS", 0, flags, granule, 0x4B1D, sequence, 0, 1)
    page = header + bytes([len(packet)]) + packet
    crc = _ogg_crc(page)
    return page[:22] + struct.pack("<I", crc) + page[26:]


def ogg_opus(milliseconds: int) -> bytes:
    """A minimal Ogg Opus stream: header pages and one audio page whose position gives the length."""
    pre_skip = 312
    head = b"OpusHead" + struct.pack("<BBHIhB", 1, 1, pre_skip, 48000, 0, 0)
    tags = b"OpusTags" + struct.pack("<I", 4) + b"test" + struct.pack("<I", 0)
    end = pre_skip + 48 * milliseconds
    return _ogg_page(head, 0, 0, 0x02) + _ogg_page(tags, 0, 1, 0) + _ogg_page(b"\xf8\xff\xfe", end, 2, 0x04)


# --- storage under test ----------------------------------------------------------------------


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's S3-compatible server on the loopback, for the whole run."""
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@contextlib.asynccontextmanager
async def s3_client(endpoint: str) -> AsyncIterator[Any]:
    async with get_session().create_client(
        "s3",
        region_name=S3_REGION,
        endpoint_url=endpoint,
        aws_access_key_id=S3_KEY,
        aws_secret_access_key=S3_SECRET,
    ) as client:
        yield client


class Store:
    """One storage backend: the settings that select it, and what it holds."""

    def __init__(self, kind: str, endpoint: str = "", bucket: str = "") -> None:
        self.kind = kind
        self.endpoint = endpoint
        self.bucket = bucket

    def env(self) -> dict[str, str]:
        if self.kind == "local":
            return {}
        return {
            "S3_BUCKET": self.bucket,
            "S3_REGION": S3_REGION,
            "S3_ACCESS_KEY": S3_KEY,
            "S3_SECRET_KEY": S3_SECRET,
            "S3_ENDPOINT_URL": self.endpoint,
        }

    async def leftovers(self, node: Node) -> list[str]:
        """Every object, temporary file and unfinished multipart upload in the storage."""
        if self.kind == "local":
            root = node.ctx.settings.data_dir / "media"
            return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
        async with s3_client(self.endpoint) as s3:
            listed = await s3.list_objects_v2(Bucket=self.bucket)
            uploads = await s3.list_multipart_uploads(Bucket=self.bucket)
        objects = [o["Key"] for o in listed.get("Contents", [])]
        return sorted(objects + [f"upload:{u['Key']}" for u in uploads.get("Uploads", [])])


@pytest.fixture(params=["local", "s3"])
async def store(request: pytest.FixtureRequest) -> Store:
    if request.param == "local":
        return Store("local")
    endpoint: str = request.getfixturevalue("s3_endpoint")
    bucket = f"media-{secrets.token_hex(6)}"
    async with s3_client(endpoint) as s3:
        await s3.create_bucket(Bucket=bucket)
    return Store("s3", endpoint, bucket)


@contextlib.asynccontextmanager
async def media_node(settings: Settings) -> AsyncIterator[tuple[Node, httpx.AsyncClient]]:
    async with serve_node(settings) as node, httpx.AsyncClient(base_url=node.url, timeout=30) as client:
        yield node, client


def auth(user: User) -> dict[str, str]:
    return {"Authorization": f"Bearer {user.token}"}


async def upload(
    client: httpx.AsyncClient,
    user: User,
    content: bytes,
    *,
    filename: str = "file.bin",
    content_type: str = "application/octet-stream",
    **fields: str,
) -> httpx.Response:
    return await client.post(
        "/api/media",
        headers=auth(user),
        data=fields,
        files={"file": (filename, content, content_type)},
    )


async def media_rows(ctx: AppContext, user: User) -> int:
    count: int = await ctx.db.pool.fetchval(
        "SELECT count(*) FROM media WHERE owner_id = $1", uuid.UUID(user.id)
    )
    return count


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code
    return error


# --- tests -----------------------------------------------------------------------------------


async def test_image_round_trip(settings_for: Callable[..., Settings], store: Store) -> None:
    image = png(7, 3)
    async with media_node(settings_for(**store.env())) as (node, client):
        ann = await new_user(node.url, "Ann")
        # The client's content type is wrong on purpose: the stored one is sniffed from the bytes.
        response = await upload(client, ann, image, filename="../../cat photo.png", content_type="text/html")
        assert response.status_code == 201, response.text
        info = response.json()
        assert set(info) == {
            "id",
            "kind",
            "content_type",
            "size",
            "sha256",
            "created_at",
            "filename",
            "width",
            "height",
        }
        assert info["content_type"] == "image/png"
        assert info["kind"] == "image"
        assert (info["width"], info["height"]) == (7, 3)
        assert info["size"] == len(image)
        assert info["filename"] == "cat photo.png"
        assert info["sha256"] == hashlib.sha256(image).hexdigest()
        assert response.headers["location"] == f"/api/media/{info['id']}"

        got = await client.get(f"/api/media/{info['id']}", headers=auth(ann))
        assert got.status_code == 200
        assert got.content == image
        assert got.headers["content-type"] == "image/png"
        assert got.headers["content-length"] == str(len(image))
        assert got.headers["cache-control"].startswith("private")
        assert got.headers["x-content-type-options"] == "nosniff"
        assert got.headers["content-disposition"].startswith("inline")
        assert "cat%20photo.png" in got.headers["content-disposition"]

        meta = await client.get(f"/api/media/{info['id']}/meta", headers=auth(ann))
        assert meta.status_code == 200
        assert meta.json() == info
        assert len(await store.leftovers(node)) == 2  # the image and its thumbnail


async def test_voice_messages(settings_for: Callable[..., Settings], store: Store) -> None:
    async with media_node(settings_for(**store.env())) as (node, client):
        ann = await new_user(node.url, "Ann")
        # WAV: the duration is read from the file and wins over the client's figure.
        response = await upload(client, ann, wav(1500), kind="voice", duration_ms="999")
        assert response.status_code == 201, response.text
        voice = response.json()
        assert voice["kind"] == "voice"
        assert voice["content_type"] == "audio/wav"
        assert voice["duration_ms"] == 1500
        assert "width" not in voice

        opus = ogg_opus(2250)
        response = await upload(client, ann, opus, filename="note.opus", kind="voice")
        assert response.status_code == 201, response.text
        assert response.json()["content_type"] == "audio/ogg"
        assert response.json()["duration_ms"] == 2250
        got = await client.get(f"/api/media/{response.json()['id']}", headers=auth(ann))
        assert got.content == opus
        assert got.headers["content-disposition"].startswith("inline")

        # A bad duration, or a voice message that is not audio, is refused before anything is stored.
        for fields, field in (
            ({"kind": "voice", "duration_ms": "0"}, "duration_ms"),
            ({"kind": "voice", "duration_ms": "3600001"}, "duration_ms"),
            ({"kind": "voice", "duration_ms": "12s"}, "duration_ms"),
            ({"kind": "voice", "duration_ms": "²"}, "duration_ms"),
            ({"kind": "voice"}, "kind"),
            ({"kind": "sticker"}, "kind"),
        ):
            bad = await upload(client, ann, png(2, 2), **fields)
            error = assert_error(bad, 422, "validation_failed")
            assert set(error["fields"]) == {field}, (fields, error)
        assert await media_rows(node.ctx, ann) == 2
        assert len(await store.leftovers(node)) == 2


async def test_sniffing_refuses_unknown_and_executables(
    settings_for: Callable[..., Settings], store: Store
) -> None:
    async with media_node(settings_for(**store.env())) as (node, client):
        ann = await new_user(node.url, "Ann")
        elf = b"\x7fELF\x02\x01\x01\x00" + secrets.token_bytes(4000)
        for blob, claimed in (
            (elf, "image/png"),
            (b"\x00\x01\x02\x03" + secrets.token_bytes(500), "text/plain"),
        ):
            refused = await upload(client, ann, blob, filename="x.png", content_type=claimed)
            assert_error(refused, 415, "unsupported_media_type")
        empty = await upload(client, ann, b"")
        assert_error(empty, 422, "validation_failed")
        assert await store.leftovers(node) == []

        text = "Grüße, plain text\n".encode() * 10
        response = await upload(client, ann, text, filename="notes.txt", content_type="image/png")
        assert response.status_code == 201, response.text
        assert response.json()["content_type"] == "text/plain"
        assert response.json()["kind"] == "file"
        got = await client.get(f"/api/media/{response.json()['id']}", headers=auth(ann))
        assert got.content == text
        assert got.headers["content-type"] == "text/plain; charset=utf-8"
        assert got.headers["content-disposition"].startswith("attachment")

        pdf = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n"
        response = await upload(client, ann, pdf, filename="a.pdf", kind="image")
        assert_error(response, 422, "validation_failed")  # kind=image, but it is a PDF
        response = await upload(client, ann, pdf, filename="a.pdf")
        assert response.json()["content_type"] == "application/pdf"
        assert len(await store.leftovers(node)) == 2


async def test_size_limit_per_tier(settings_for: Callable[..., Settings], store: Store) -> None:
    settings = settings_for(MEDIA_MAX_BYTES_BASIC="20000", MEDIA_MAX_BYTES_PREMIUM="60000", **store.env())
    async with media_node(settings) as (node, client):
        basic = await new_user(node.url, "Basic")
        paid = await new_user(node.url, "Paid")
        await node.ctx.db.pool.execute(
            "UPDATE users SET tier = 'premium_pro' WHERE id = $1", uuid.UUID(paid.id)
        )
        big = png(4, 4) + secrets.token_bytes(40000)  # sniffs as PNG, 40 kB over a basic limit of 20 kB

        refused = await upload(client, basic, big, filename="big.png")
        error = assert_error(refused, 413, "payload_too_large")
        assert error["details"] == {"max_bytes": 20000}
        assert await media_rows(node.ctx, basic) == 0
        assert await store.leftovers(node) == []

        exactly = await upload(client, basic, png(4, 4) + bytes(20000 - len(png(4, 4))))
        assert exactly.status_code == 201, exactly.text
        assert exactly.json()["size"] == 20000

        accepted = await upload(client, paid, big, filename="big.png")
        assert accepted.status_code == 201, accepted.text
        assert accepted.json()["size"] == len(big)
        assert len(await store.leftovers(node)) == 4  # two images, two thumbnails


async def test_oversized_stream_is_cut_off_early(settings_for: Callable[..., Settings], store: Store) -> None:
    """A chunked upload with no Content-Length is answered 413 at the limit, long before it ends."""
    async with media_node(settings_for(MEDIA_MAX_BYTES_BASIC="100000", **store.env())) as (node, _):
        ann = await new_user(node.url, "Ann")
        host, port = node.url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))

        def chunk(data: bytes) -> bytes:
            return f"{len(data):x}\r\n".encode() + data + b"\r\n"

        writer.write(
            (
                "POST /api/media HTTP/1.1\r\nHost: test\r\n"
                f"Authorization: Bearer {ann.token}\r\n"
                "Content-Type: multipart/form-data; boundary=XyZ\r\nTransfer-Encoding: chunked\r\n\r\n"
            ).encode()
            + chunk(
                b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="endless.png"\r\n\r\n'
                + png(2, 2)
            )
        )
        sent = 0
        status_line = b""
        # Offer up to 64 MiB; the answer must come once the limit is passed, and the rest is never sent.
        while sent < 64 * MiB:
            writer.write(chunk(bytes(64 * 1024)))
            sent += 64 * 1024
            with contextlib.suppress(TimeoutError):
                status_line = await asyncio.wait_for(reader.readline(), 0.01)
                break
        assert status_line.startswith(b"HTTP/1.1 413"), status_line
        assert sent < MiB
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
        await asyncio.sleep(0.2)  # the server finishes cleaning up after answering

        # A declared Content-Length over the limit is refused before any of the body is read.
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            (
                "POST /api/media HTTP/1.1\r\nHost: test\r\n"
                f"Authorization: Bearer {ann.token}\r\n"
                "Content-Type: multipart/form-data; boundary=XyZ\r\nContent-Length: 10000000000\r\n\r\n"
            ).encode()
        )
        status_line = await asyncio.wait_for(reader.readline(), 5)
        assert status_line.startswith(b"HTTP/1.1 413"), status_line
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
        assert await media_rows(node.ctx, ann) == 0
        assert await store.leftovers(node) == []


async def test_s3_multipart_upload_and_abort(settings_for: Callable[..., Settings], s3_endpoint: str) -> None:
    """Files above the part size go up in parts; one cut off mid-way leaves no unfinished upload."""
    bucket = f"media-{secrets.token_hex(6)}"
    async with s3_client(s3_endpoint) as s3:
        await s3.create_bucket(Bucket=bucket)
    store = Store("s3", s3_endpoint, bucket)
    settings = settings_for(
        MEDIA_MAX_BYTES_BASIC=str(10 * MiB), MEDIA_MAX_BYTES_PREMIUM=str(20 * MiB), **store.env()
    )
    async with media_node(settings) as (node, client):
        basic = await new_user(node.url, "Basic")
        paid = await new_user(node.url, "Paid")
        await node.ctx.db.pool.execute(
            "UPDATE users SET tier = 'unlimited' WHERE id = $1", uuid.UUID(paid.id)
        )
        content = png(2, 2) + secrets.token_bytes(12 * MiB)

        refused = await upload(client, basic, content)  # the first 8 MiB part is up when the limit hits
        assert_error(refused, 413, "payload_too_large")
        assert await store.leftovers(node) == []

        accepted = await upload(client, paid, content)
        assert accepted.status_code == 201, accepted.text
        got = await client.get(f"/api/media/{accepted.json()['id']}", headers=auth(paid))
        assert got.content == content
        assert got.headers["content-disposition"].startswith("inline")
        assert len(await store.leftovers(node)) == 2  # the image and its thumbnail


async def test_access_rules(settings_for: Callable[..., Settings], store: Store) -> None:
    async with media_node(settings_for(**store.env())) as (node, client):
        ann = await new_user(node.url, "Ann")
        bob = await new_user(node.url, "Bob")
        eve = await new_user(node.url, "Eve")
        response = await upload(client, ann, png(1, 1), filename="a.png")
        media_id = response.json()["id"]

        # Unauthenticated: 401 everywhere.
        for method, path in (
            ("POST", "/api/media"),
            ("GET", f"/api/media/{media_id}"),
            ("GET", f"/api/media/{media_id}/meta"),
        ):
            assert_error(await client.request(method, path), 401, "unauthorized")

        # Someone else's file looks exactly like one that does not exist.
        not_found = []
        for path in (f"/api/media/{media_id}", f"/api/media/{uuid.uuid4()}", "/api/media/not-a-uuid"):
            for suffix in ("", "/meta"):
                answer = await client.get(path + suffix, headers=auth(bob))
                assert_error(answer, 404, "not_found")
                not_found.append(answer.content)
        assert len(set(not_found)) == 1

        # An access hook (as the messenger registers) opens it to the users it names, and only them.
        service = node.services.media
        assert isinstance(service, MediaService)
        calls: list[tuple[uuid.UUID, uuid.UUID]] = []

        async def shares_a_chat(user_id: uuid.UUID, checked: uuid.UUID) -> bool:
            calls.append((user_id, checked))
            return user_id == uuid.UUID(bob.id)

        async def broken(user_id: uuid.UUID, checked: uuid.UUID) -> bool:
            raise RuntimeError("a failing check denies, it does not fail the request")

        service.grant_access(broken)
        service.grant_access(shares_a_chat)
        got = await client.get(f"/api/media/{media_id}", headers=auth(bob))
        assert got.status_code == 200
        assert got.content == png(1, 1)
        assert (await client.get(f"/api/media/{media_id}/meta", headers=auth(bob))).json()["id"] == media_id
        assert_error(await client.get(f"/api/media/{media_id}", headers=auth(eve)), 404, "not_found")
        assert (uuid.UUID(bob.id), uuid.UUID(media_id)) in calls
        # The owner never needs a hook.
        assert (uuid.UUID(ann.id), uuid.UUID(media_id)) not in calls


async def test_form_errors(settings_for: Callable[..., Settings]) -> None:
    async with media_node(settings_for()) as (node, client):
        ann = await new_user(node.url, "Ann")
        as_json = await client.post("/api/media", headers=auth(ann), json={"file": "x"})
        assert_error(as_json, 415, "unsupported_media_type")
        misnamed = await client.post("/api/media", headers=auth(ann), files={"other": ("a.png", png(1, 1))})
        assert set(assert_error(misnamed, 422, "validation_failed")["fields"]) == {"file"}
        no_file = await client.post(
            "/api/media",
            headers={**auth(ann), "Content-Type": "multipart/form-data; boundary=B"},
            content=b'--B\r\nContent-Disposition: form-data; name="kind"\r\n\r\nimage\r\n--B--\r\n',
        )
        assert assert_error(no_file, 422, "validation_failed")["fields"] == {
            "file": "This field is required."
        }
        twice = await client.post(
            "/api/media",
            headers=auth(ann),
            files=[("file", ("a.png", png(1, 1))), ("file", ("b.png", png(1, 1)))],
        )
        assert_error(twice, 400, "bad_request")
        truncated = await client.post(
            "/api/media",
            headers={**auth(ann), "Content-Type": "multipart/form-data; boundary=B"},
            content=b'--B\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\nhello',
        )
        assert_error(truncated, 400, "bad_request")
        assert await media_rows(node.ctx, ann) == 0
        assert await Store("local").leftovers(node) == []


async def test_failed_insert_deletes_the_stored_object(
    settings_for: Callable[..., Settings], store: Store
) -> None:
    async with media_node(settings_for(**store.env())) as (node, client):
        ann = await new_user(node.url, "Ann")
        function = f"refuse_media_{secrets.token_hex(4)}"
        async with node.ctx.db.pool.acquire() as conn:
            await conn.execute(
                f"""
                CREATE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                    IF NEW.owner_id = '{ann.id}' THEN RAISE EXCEPTION 'refused by the test'; END IF;
                    RETURN NEW;
                END $$;
                CREATE TRIGGER {function} BEFORE INSERT ON media FOR EACH ROW EXECUTE FUNCTION {function}();
                """
            )
        try:
            response = await upload(client, ann, png(3, 3))
            assert response.status_code == 500
        finally:
            async with node.ctx.db.pool.acquire() as conn:
                await conn.execute(f"DROP TRIGGER {function} ON media; DROP FUNCTION {function}();")
        assert await store.leftovers(node) == []
