"""Where uploaded bytes live: one small interface, a local directory or an S3-compatible bucket.

``put`` consumes an async iterator of chunks; if the iterator raises (the upload was too large, the
client went away), nothing is left behind: the local temporary file is removed, the S3 multipart upload
aborted. The object appears under its key only once every byte is written.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import ClientError

from kintsugi_rt.logs import get_logger
from kintsugi_rt.settings import Settings

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

log = get_logger(__name__)

READ_CHUNK = 64 * 1024
# Local writes are batched so a trickle of small network chunks is not a thread hop each.
LOCAL_WRITE_BATCH = 256 * 1024
# S3 parts (the minimum is 5 MiB except the last); an upload below this is one PutObject.
S3_PART_SIZE = 8 * 1024 * 1024
# A temporary file this old is a leftover of a crashed node, not an upload in flight.
STALE_TEMP_SECONDS = 6 * 3600


class ObjectNotFound(Exception):
    """The key names no stored object."""


class BlobStore(Protocol):
    name: str

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def put(self, key: str, chunks: AsyncIterator[bytes], content_type: str) -> None:
        """Store every chunk under ``key``; on any error from ``chunks`` leave nothing and re-raise."""
        ...

    async def get(self, key: str, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        """The object's bytes from ``offset`` (``length`` of them, or to the end), chunk by chunk;
        ``ObjectNotFound`` before the first chunk if missing. The range must lie within the object."""
        ...

    async def delete(self, key: str) -> None:
        """Remove the object; a missing one is not an error."""
        ...


def storage_key(hex_id: str) -> str:
    """Sharded by the id's first bytes so no directory grows past a few thousand entries."""
    return f"{hex_id[:2]}/{hex_id[2:4]}/{hex_id}"


class LocalStorage:
    """Files under ``root``; written to ``root/tmp/`` first, fsynced, then renamed into place."""

    name = "local"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.tmp = root / "tmp"

    async def start(self) -> None:
        await asyncio.to_thread(self._prepare)

    def _prepare(self) -> None:
        self.tmp.mkdir(parents=True, exist_ok=True)
        cutoff = time.time() - STALE_TEMP_SECONDS
        for leftover in self.tmp.iterdir():
            with contextlib.suppress(OSError):
                if leftover.stat().st_mtime < cutoff:
                    leftover.unlink()
                    log.info("media.temp_removed", file=leftover.name)

    async def close(self) -> None:
        return None

    def path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root.resolve() not in path.parents:
            raise ObjectNotFound(key)
        return path

    async def put(self, key: str, chunks: AsyncIterator[bytes], content_type: str) -> None:
        final = self.path(key)
        staging = self.tmp / f"{final.name}.{secrets.token_hex(6)}"
        handle = await asyncio.to_thread(_open_exclusive, staging)
        try:
            batch = bytearray()
            async for chunk in chunks:
                batch += chunk
                if len(batch) >= LOCAL_WRITE_BATCH:
                    await asyncio.to_thread(handle.write, bytes(batch))
                    batch.clear()
            if batch:
                await asyncio.to_thread(handle.write, bytes(batch))
            await asyncio.to_thread(_finish, handle, staging, final)
        except BaseException:
            handle.close()
            with contextlib.suppress(OSError):
                staging.unlink()
            raise

    async def get(self, key: str, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        try:
            handle = await asyncio.to_thread(self.path(key).open, "rb")
        except FileNotFoundError:
            raise ObjectNotFound(key) from None
        if offset:
            try:
                await asyncio.to_thread(handle.seek, offset)
            except BaseException:
                handle.close()
                raise
        return _read_file(handle, length)

    async def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError, ObjectNotFound):
            await asyncio.to_thread(self.path(key).unlink)


def _open_exclusive(path: Path) -> BinaryIO:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    return os.fdopen(fd, "wb")


def _finish(handle: BinaryIO, staging: Path, final: Path) -> None:
    handle.flush()
    os.fsync(handle.fileno())
    handle.close()
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staging, final)


async def _read_file(handle: BinaryIO, length: int | None) -> AsyncIterator[bytes]:
    """``length`` bytes (or all that is left) from where ``handle`` stands."""
    left = length
    try:
        while left is None or left > 0:
            want = READ_CHUNK if left is None else min(READ_CHUNK, left)
            chunk = await asyncio.to_thread(handle.read, want)
            if not chunk:
                return
            if left is not None:
                left -= len(chunk)
            yield chunk
    finally:
        handle.close()


class S3Storage:
    """An S3 bucket (AWS, or any S3-compatible server through ``S3_ENDPOINT_URL``)."""

    name = "s3"

    def __init__(self, settings: Settings) -> None:
        assert settings.s3_bucket is not None
        self.bucket = settings.s3_bucket
        self.settings = settings
        self._stack = AsyncExitStack()
        self._client: S3Client | None = None

    async def start(self) -> None:
        s = self.settings
        session = get_session()
        self._client = await self._stack.enter_async_context(
            session.create_client(
                "s3",
                region_name=s.s3_region,
                endpoint_url=s.s3_endpoint_url,
                aws_access_key_id=s.s3_access_key,
                aws_secret_access_key=s.s3_secret_key,
                config=AioConfig(
                    retries={"max_attempts": 3, "mode": "standard"},
                    max_pool_connections=32,
                    # Path-style addressing works with every S3-compatible server; AWS still accepts it.
                    s3={"addressing_style": "path" if s.s3_endpoint_url else "auto"},
                ),
            )
        )

    async def close(self) -> None:
        await self._stack.aclose()
        self._client = None

    @property
    def client(self) -> S3Client:
        assert self._client is not None, "S3Storage.start() was not awaited"
        return self._client

    async def put(self, key: str, chunks: AsyncIterator[bytes], content_type: str) -> None:
        buffer = bytearray()
        upload_id: str | None = None
        parts: list[dict[str, object]] = []
        try:
            async for chunk in chunks:
                buffer += chunk
                if len(buffer) >= S3_PART_SIZE:
                    if upload_id is None:
                        created = await self.client.create_multipart_upload(
                            Bucket=self.bucket, Key=key, ContentType=content_type
                        )
                        upload_id = created["UploadId"]
                    part = bytes(buffer[:S3_PART_SIZE])
                    del buffer[:S3_PART_SIZE]
                    number = len(parts) + 1
                    done = await self.client.upload_part(
                        Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=part
                    )
                    parts.append({"ETag": done["ETag"], "PartNumber": number})
            if upload_id is None:
                await self.client.put_object(
                    Bucket=self.bucket, Key=key, Body=bytes(buffer), ContentType=content_type
                )
                return
            if buffer:
                number = len(parts) + 1
                done = await self.client.upload_part(
                    Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=bytes(buffer)
                )
                parts.append({"ETag": done["ETag"], "PartNumber": number})
            await self.client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},  # type: ignore[typeddict-item]
            )
        except BaseException:
            if upload_id is not None:
                await asyncio.shield(self._abort(key, upload_id))
            raise

    async def _abort(self, key: str, upload_id: str) -> None:
        try:
            await self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except Exception as exc:  # the bucket's lifecycle rule is the backstop
            log.warning("media.s3_abort_failed", key=key, error=repr(exc))

    async def get(self, key: str, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        try:
            if offset or length is not None:
                end = "" if length is None else str(offset + length - 1)
                found = await self.client.get_object(
                    Bucket=self.bucket, Key=key, Range=f"bytes={offset}-{end}"
                )
            else:
                found = await self.client.get_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"NoSuchKey", "404"}:
                raise ObjectNotFound(key) from None
            raise
        return _read_s3(found["Body"])

    async def delete(self, key: str) -> None:
        await self.client.delete_object(Bucket=self.bucket, Key=key)


async def _read_s3(body: object) -> AsyncIterator[bytes]:
    from aiobotocore.response import StreamingBody

    assert isinstance(body, StreamingBody)
    try:
        async for chunk in body.iter_chunks(READ_CHUNK):
            yield chunk
    finally:
        body.close()


def open_blob_store(settings: Settings) -> BlobStore:
    """S3 when ``S3_BUCKET`` is set (its companions checked here), else the local directory."""
    if settings.s3_bucket:
        if not settings.s3_region:
            raise RuntimeError("S3_REGION: required when S3_BUCKET is set")
        if bool(settings.s3_access_key) != bool(settings.s3_secret_key):
            raise RuntimeError("S3_ACCESS_KEY and S3_SECRET_KEY: set both, or neither for the default chain")
        return S3Storage(settings)
    return LocalStorage(settings.media_dir or settings.data_dir / "media")
