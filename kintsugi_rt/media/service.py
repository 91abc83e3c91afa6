"""Uploads and downloads of media: the rules, between the HTTP routes and the storage.

An upload is read from the request one network chunk at a time and passed on to storage as it comes:
the size limit of the user's tier is enforced on the way (an oversized upload is cut off at the limit),
the content type is sniffed from the first bytes before anything is stored, and the database row is
written only once every byte is stored (if that fails, the object is deleted again).

Who may read a media file: its uploader, or anyone one of ``access_checks`` allows (the messenger
registers one for the members of a conversation the file was sent to). Everyone else gets the same
404 as for an id that does not exist.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from kintsugi_rt import errors
from kintsugi_rt.billing import Tiers
from kintsugi_rt.context import AppContext
from kintsugi_rt.errors import ApiError
from kintsugi_rt.logs import get_logger
from kintsugi_rt.media.blobs import BlobStore, storage_key
from kintsugi_rt.media.frames import MediaLinksGet, MediaLinksResult
from kintsugi_rt.media.links import UrlSigner
from kintsugi_rt.media.messages import MediaInfo, MediaLinks
from kintsugi_rt.media.multipart import MultipartReader, Part, boundary_of, too_large
from kintsugi_rt.media.sniff import (
    AS_AUDIO,
    IMAGE_PROBE_BYTES,
    IMAGE_TYPES,
    INT4_MAX,
    SNIFF_BYTES,
    Spool,
    audio_duration_ms,
    image_size,
    sniff,
)
from kintsugi_rt.media.storage import (
    Executor,
    LinkTarget,
    StoredMedia,
    StoredThumbnail,
    get_media,
    insert_media,
    insert_thumbnail,
    link_targets,
)
from kintsugi_rt.media.thumbnails import Thumbnail, make_thumbnail
from kintsugi_rt.socket.registry import SocketContext

log = get_logger(__name__)

KINDS = ("file", "image", "voice")
MAX_DURATION_MS = 3_600_000
# Room for the multipart boundaries, part headers and the small form fields, on top of the file.
FORM_OVERHEAD_BYTES = 64 * 1024
MAX_FIELDS = 16
MAX_FIELD_BYTES = 256
MAX_FILENAME_CHARS = 255
MIN_URL_SECRET_LENGTH = 32
# Thumbnails made at once on one node (each decodes an image in a thread).
THUMBNAIL_CONCURRENCY = 2

_UNSAFE_FILENAME = re.compile(r"[\x00-\x1f\x7f]")

AccessCheck = Callable[[uuid.UUID, uuid.UUID], Awaitable[bool]]
"""``(user_id, media_id) -> bool``: may this user read this media file (not their own)?"""


@dataclass(slots=True)
class _Received:
    """A file part, stored, with what was learnt about it on the way."""

    id: uuid.UUID
    key: str
    content_type: str
    filename: str | None
    size: int = 0
    sha256: str = ""
    image_head: bytearray = field(default_factory=bytearray)
    duration_ms: int | None = None
    # A copy of an image's bytes, for its thumbnail (closed by ``upload``).
    spool: Spool | None = None
    decoding: asyncio.Future[Thumbnail] | None = None
    thumbnail: StoredThumbnail | None = None


class MediaNotFound(LookupError):
    """No media file has this id."""


def _consume(task: asyncio.Future[Thumbnail]) -> None:
    """Retrieve the outcome of a decode nobody may wait for any more (its upload was cancelled)."""
    if not task.cancelled():
        task.exception()


def _close_when_decoded(received: _Received) -> None:
    """Close the upload's copy now, or once a decode still reading it (its upload cancelled) is done."""
    spool, decoding = received.spool, received.decoding
    assert spool is not None
    if decoding is None or decoding.done():
        spool.close()
    else:
        decoding.add_done_callback(lambda _: spool.close())


def thumbnail_key(original_key: str) -> str:
    """Where an image's thumbnail is stored: beside the image."""
    return f"{original_key}.thumb"


def not_found() -> ApiError:
    return ApiError(404, errors.NOT_FOUND, "No such media file.")


def _invalid(field_name: str, message: str) -> ApiError:
    return ApiError(422, errors.VALIDATION_FAILED, "The upload is not valid.", fields={field_name: message})


def _form_values(form: dict[str, str]) -> tuple[str | None, int | None]:
    """``kind`` and ``duration_ms`` from the form fields, checked."""
    kind = form.get("kind")
    if kind is not None:
        kind = kind.strip()
        if kind not in KINDS:
            raise _invalid("kind", "One of file, image, voice.")
    duration: int | None = None
    raw = form.get("duration_ms")
    if raw is not None and raw.strip():
        text = raw.strip()
        if not (text.isascii() and text.isdigit()) or not 0 < int(text) <= MAX_DURATION_MS:
            raise _invalid("duration_ms", f"A whole number of milliseconds, from 1 to {MAX_DURATION_MS}.")
        duration = int(text)
    return kind, duration


def _check_header_numbers(width: int | None, height: int | None, duration_ms: int | None) -> None:
    """What a file's header claims must fit the database's integer columns: a PNG may claim a width of
    four billion pixels and a WAV billions of frames, which no real file has."""
    for name, value in (("width", width), ("height", height)):
        if value is not None and value > INT4_MAX:
            raise _invalid("file", f"The image header claims a {name} of {value} pixels; at most {INT4_MAX}.")
    if duration_ms is not None and duration_ms > INT4_MAX:
        raise _invalid(
            "file", f"The audio header claims a duration of {duration_ms} ms: not a valid audio file."
        )


def _check_kind(kind: str, content_type: str) -> None:
    if kind == "image" and content_type not in IMAGE_TYPES:
        raise _invalid("kind", f"The file is not an image (it is {content_type}).")
    if kind == "voice" and not content_type.startswith("audio/"):
        raise _invalid("kind", f"A voice message must be audio (this is {content_type}).")


def clean_filename(raw: str | None) -> str | None:
    """The client's file name without any path, control characters or excess length."""
    if raw is None:
        return None
    name = _UNSAFE_FILENAME.sub("", raw.replace("\\", "/").rsplit("/", 1)[-1]).strip()
    return name[:MAX_FILENAME_CHARS] or None


class MediaService:
    def __init__(self, ctx: AppContext, blobs: BlobStore, *, tiers: Tiers) -> None:
        self.ctx = ctx
        self.storage = blobs
        self.tiers = tiers
        # Who else may read a file; the first check that says yes wins (wiring.py grants them).
        self.access_checks: list[AccessCheck] = []
        self.signer = UrlSigner.from_settings(ctx.settings)
        self._thumbnail_slots = asyncio.Semaphore(THUMBNAIL_CONCURRENCY)

    def grant_access(self, check: AccessCheck) -> None:
        """Let the users ``check`` names read files they did not upload (e.g. a conversation's members)."""
        self.access_checks.append(check)

    async def start(self) -> None:
        settings = self.ctx.settings
        secret = settings.media_url_secret
        if settings.is_production and secret is not None and len(secret) < MIN_URL_SECRET_LENGTH:
            raise RuntimeError(f"MEDIA_URL_SECRET: at least {MIN_URL_SECRET_LENGTH} characters in production")
        await self.storage.start()
        log.info("media.storage", storage=self.storage.name)

    async def stop(self) -> None:
        await self.storage.close()

    async def max_bytes(self, user_id: uuid.UUID) -> int:
        tier = await self.tiers.tier_of(user_id)
        settings = self.ctx.settings
        return settings.media_max_bytes_basic if tier in (None, "basic") else settings.media_max_bytes_premium

    # --- upload ---

    async def upload(
        self,
        user_id: uuid.UUID,
        body: AsyncIterator[bytes],
        content_type: str | None,
        content_length: str | None,
    ) -> MediaInfo:
        boundary = boundary_of(content_type)
        limit = await self.max_bytes(user_id)
        max_body = limit + FORM_OVERHEAD_BYTES
        declared = content_length or ""
        if declared.isascii() and declared.isdigit() and int(declared) > max_body:
            raise too_large(limit)
        reader = MultipartReader(body, boundary, max_body, limit)
        form: dict[str, str] = {}
        received: _Received | None = None
        try:
            while (part := await reader.next_part()) is not None:
                if part.name == "file":
                    if received is not None:
                        raise ApiError(400, errors.BAD_REQUEST, "Send exactly one 'file' part.")
                    kind, _ = _form_values(form)  # fields sent before the file are checked before storing
                    received = await self._receive(reader, part, limit, kind)
                elif part.filename is not None:
                    raise _invalid("file", "Send the file in the part named 'file'.")
                else:
                    if len(form) >= MAX_FIELDS:
                        raise ApiError(400, errors.BAD_REQUEST, "Too many form fields.")
                    form[part.name] = await reader.read_field(MAX_FIELD_BYTES)
            if received is None:
                raise _invalid("file", "This field is required.")
            kind, duration = _form_values(form)
            info = self._describe(received, kind, duration)
            if received.spool is not None and info.content_type in IMAGE_TYPES:
                received.thumbnail = await self._thumbnail(received)
            async with self.ctx.db.pool.acquire() as db, db.transaction():
                await insert_media(db, user_id, info, received.key)
                if received.thumbnail is not None:
                    await insert_thumbnail(db, info.id, received.thumbnail)
        except BaseException:
            if received is not None:
                await asyncio.shield(self._discard(received.key))
                if received.thumbnail is not None:
                    await asyncio.shield(self._discard(received.thumbnail.storage_key))
            raise
        finally:
            if received is not None and received.spool is not None:
                _close_when_decoded(received)
        log.info(
            "media.uploaded",
            media_id=str(info.id),
            user_id=str(user_id),
            kind=info.kind,
            content_type=info.content_type,
            size=info.size,
            storage=self.storage.name,
            thumbnail=received.thumbnail is not None,
        )
        return info

    async def _receive(self, reader: MultipartReader, part: Part, limit: int, kind: str | None) -> _Received:
        data = reader.data()
        head = bytearray()
        complete = False
        while len(head) < SNIFF_BYTES:
            chunk = await anext(data, None)
            if chunk is None:
                complete = True
                break
            head += chunk
            if len(head) > limit:
                raise too_large(limit)
        if not head:
            raise _invalid("file", "The file is empty.")
        content_type = sniff(bytes(head), complete)
        if content_type is None:
            raise ApiError(
                415,
                errors.UNSUPPORTED_MEDIA_TYPE,
                "This type of file is not accepted: images, audio, video, PDF, plain text and "
                "office/zip documents are.",
            )
        if kind == "voice":
            content_type = AS_AUDIO.get(content_type, content_type)
        if kind is not None:
            _check_kind(kind, content_type)
        media_id = uuid.uuid4()
        received = _Received(
            id=media_id,
            key=storage_key(media_id.hex),
            content_type=content_type,
            filename=clean_filename(part.filename),
        )
        probe_image = content_type in IMAGE_TYPES
        spool = Spool() if content_type.startswith("audio/") or probe_image else None
        hasher = hashlib.sha256()

        async def chunks() -> AsyncIterator[bytes]:
            pending: bytes | None = bytes(head)
            while True:
                if pending is not None:
                    chunk, pending = pending, None
                else:
                    next_chunk = await anext(data, None)
                    if next_chunk is None:
                        return
                    chunk = next_chunk
                received.size += len(chunk)
                if received.size > limit:
                    raise too_large(limit)
                hasher.update(chunk)
                if probe_image and len(received.image_head) < IMAGE_PROBE_BYTES:
                    received.image_head += chunk[: IMAGE_PROBE_BYTES - len(received.image_head)]
                if spool is not None:
                    if spool.in_memory:
                        spool.write(chunk)
                    else:
                        await asyncio.to_thread(spool.write, chunk)
                yield chunk

        try:
            await self.storage.put(received.key, chunks(), content_type)
            try:
                if spool is not None and not probe_image:
                    received.duration_ms = await asyncio.to_thread(audio_duration_ms, spool.file)
            except BaseException:
                await asyncio.shield(self._discard(received.key))
                raise
        except BaseException:
            if spool is not None:
                spool.close()
            raise
        if spool is not None and probe_image:
            received.spool = spool  # for the thumbnail; ``upload`` closes it
        elif spool is not None:
            spool.close()
        received.sha256 = hasher.hexdigest()
        return received

    async def _thumbnail(self, received: _Received) -> StoredThumbnail | None:
        """Make and store the image's thumbnail; ``None`` (logged) if it cannot be made: the image is
        kept all the same."""
        assert received.spool is not None
        max_pixels = self.ctx.settings.media_thumbnail_max_pixels
        # Shielded: an upload cancelled meanwhile does not free the slot before its thread is done.
        decoding = received.decoding = asyncio.ensure_future(self._decode(received.spool, max_pixels))
        decoding.add_done_callback(_consume)
        try:
            made = await asyncio.shield(decoding)
        except Exception as exc:
            log.warning(
                "media.thumbnail_failed",
                media_id=str(received.id),
                content_type=received.content_type,
                error=repr(exc),
            )
            return None
        key = thumbnail_key(received.key)

        async def body() -> AsyncIterator[bytes]:
            yield made.data

        try:
            await self.storage.put(key, body(), made.content_type)
        except Exception as exc:
            log.warning("media.thumbnail_failed", media_id=str(received.id), error=repr(exc), storage_key=key)
            return None
        return StoredThumbnail(
            storage_key=key,
            content_type=made.content_type,
            size=len(made.data),
            sha256=hashlib.sha256(made.data).hexdigest(),
            width=made.width,
            height=made.height,
        )

    async def _decode(self, spool: Spool, max_pixels: int) -> Thumbnail:
        async with self._thumbnail_slots:
            return await asyncio.to_thread(make_thumbnail, spool.file, max_pixels)

    def _describe(self, received: _Received, kind: str | None, client_duration: int | None) -> MediaInfo:
        content_type = received.content_type
        if kind is None:
            kind = "image" if content_type in IMAGE_TYPES else "file"
        if kind == "voice":
            content_type = AS_AUDIO.get(content_type, content_type)
        _check_kind(kind, content_type)
        width = height = None
        if content_type in IMAGE_TYPES:
            size = image_size(bytes(received.image_head))
            if size is None:
                raise _invalid("file", f"The {content_type} image's header is not readable.")
            width, height = size
        if client_duration is not None and not content_type.startswith("audio/"):
            raise _invalid("duration_ms", "Only audio has a duration.")
        _check_header_numbers(width, height, received.duration_ms)
        # What the container says wins over what the client says.
        duration = received.duration_ms or client_duration
        if kind == "voice":
            if duration is None:
                raise _invalid("duration_ms", "Required for a voice message whose duration cannot be read.")
            if duration > MAX_DURATION_MS:
                raise _invalid("file", "A voice message lasts at most one hour.")
        return MediaInfo(
            id=received.id,
            kind=kind,
            content_type=content_type,
            size=received.size,
            sha256=received.sha256,
            created_at=self.ctx.clock.now(),
            filename=received.filename,
            width=width,
            height=height,
            duration_ms=duration,
        )

    async def _discard(self, key: str) -> None:
        try:
            await self.storage.delete(key)
        except Exception as exc:
            log.error("media.orphaned", storage_key=key, error=repr(exc))

    # --- reading ---

    async def find(self, user_id: uuid.UUID, raw_id: str) -> StoredMedia:
        """The media file if this user may read it; otherwise the same 404 as for an unknown id."""
        try:
            media_id = uuid.UUID(raw_id)
        except ValueError:
            raise not_found() from None
        media = await get_media(self.ctx.db.pool, media_id)
        if media is None or not await self.may_read(user_id, media.owner_id, media_id):
            raise not_found()
        return media

    async def stored(self, media_id: uuid.UUID) -> StoredMedia:
        """The media file, for a caller that has checked the right to read it (a signed URL)."""
        media = await get_media(self.ctx.db.pool, media_id)
        if media is None:
            raise not_found()
        return media

    async def may_read(self, user_id: uuid.UUID, owner_id: uuid.UUID, media_id: uuid.UUID) -> bool:
        if user_id == owner_id:
            return True
        for check in list(self.access_checks):
            try:
                if await check(user_id, media_id):
                    return True
            except Exception as exc:
                log.warning("media.access_check_failed", media_id=str(media_id), error=repr(exc))
        return False

    # --- signed URLs ---

    def sign(self, media_id: uuid.UUID, has_thumbnail: bool) -> MediaLinks:
        """Signed URLs of a file, without asking the database (the caller knows it has a thumbnail)."""
        exp = self.signer.expiry(self.ctx.clock.now())
        return MediaLinks(
            media_id=media_id,
            url=self.signer.url(media_id, "original", exp),
            thumbnail_url=self.signer.url(media_id, "thumbnail", exp) if has_thumbnail else None,
            expires_at=self.signer.expires_at(exp),
        )

    async def links(self, media_id: uuid.UUID) -> MediaLinks:
        """Signed URLs of a file, for whoever the caller has decided may read it (no access check here);
        ``MediaNotFound`` if there is no such file."""
        found = await self.links_many([media_id])
        if media_id not in found:
            raise MediaNotFound(media_id)
        return found[media_id]

    async def links_many(
        self, media_ids: Sequence[uuid.UUID], db: Executor | None = None
    ) -> dict[uuid.UUID, MediaLinks]:
        """Signed URLs of every file of ``media_ids`` that exists (no access check here: the caller
        decides who sees them), in one query; on ``db`` if given (a caller inside a transaction)."""
        if not media_ids:
            return {}
        targets = await link_targets(db or self.ctx.db.pool, list(dict.fromkeys(media_ids)))
        return {media_id: self.sign(media_id, t.has_thumbnail) for media_id, t in targets.items()}

    async def readable_links(
        self, user_id: uuid.UUID, media_ids: Sequence[uuid.UUID]
    ) -> tuple[list[MediaLinks], list[uuid.UUID]]:
        """Signed URLs of the files ``user_id`` may read, in the order asked, and every other id (no such
        file, or not theirs to read: the two are never told apart)."""
        wanted = list(dict.fromkeys(media_ids))
        targets = await link_targets(self.ctx.db.pool, wanted)
        readable: list[MediaLinks] = []
        refused: list[uuid.UUID] = []
        for media_id in wanted:
            target: LinkTarget | None = targets.get(media_id)
            if target is not None and await self.may_read(user_id, target.owner_id, media_id):
                readable.append(self.sign(media_id, target.has_thumbnail))
            else:
                refused.append(media_id)
        return readable, refused

    async def renew_links(self, conn: SocketContext, message: MediaLinksGet) -> MediaLinksResult:
        """``media.links``: fresh signed URLs of the files the caller may read."""
        links, refused = await self.readable_links(conn.user_id, message.media_ids)
        return MediaLinksResult(links=links, not_found=refused)
