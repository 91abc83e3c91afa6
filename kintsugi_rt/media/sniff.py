"""What an upload really is, from its bytes: the content type (never the client's word for it), an
image's size from its header, an audio file's duration from its container."""

from __future__ import annotations

import codecs
import contextlib
import io
import math
import tempfile
from typing import IO

import filetype  # type: ignore[import-untyped]
import imagesize  # type: ignore[import-untyped]
import mutagen

# filetype reads at most this much of the head.
SNIFF_BYTES = 8192
# Image headers (with EXIF/ICC segments before a JPEG's frame header) fit in this.
IMAGE_PROBE_BYTES = 1024 * 1024
# A copy of an audio file (for the duration probe) or an image (for its thumbnail) stays in memory up to
# this, then spills to a temporary file.
SPOOL_MEMORY = 1024 * 1024

TEXT_PLAIN = "text/plain"
# width, height and duration_ms are PostgreSQL integer columns; a header claiming more is refused.
INT4_MAX = 2**31 - 1

# filetype's extension -> the content type we store and serve. Everything else is refused.
ALLOWED: dict[str, str] = {
    "jpg": "image/jpeg",
    "png": "image/png",
    "apng": "image/png",
    "gif": "image/gif",
    "webp": "image/webp",
    "ogg": "audio/ogg",
    "mp3": "audio/mpeg",
    "m4a": "audio/mp4",
    "aac": "audio/aac",
    "wav": "audio/wav",
    "flac": "audio/flac",
    "mp4": "video/mp4",
    "webm": "video/webm",
    "mov": "video/quicktime",
    "pdf": "application/pdf",
    "zip": "application/zip",
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    "odt": "application/vnd.oasis.opendocument.text",
    "ods": "application/vnd.oasis.opendocument.spreadsheet",
    "odp": "application/vnd.oasis.opendocument.presentation",
}
# Browsers record voice as WebM or MP4 whose header does not say "audio only"; a voice upload is audio.
AS_AUDIO = {"video/webm": "audio/webm", "video/mp4": "audio/mp4"}
IMAGE_TYPES = {"image/jpeg", "image/png", "image/gif", "image/webp"}

_TEXT_CONTROL_OK = {"\t", "\n", "\r", "\f"}


def sniff(head: bytes, complete: bool) -> str | None:
    """The content type of a file starting with ``head`` (all of it when ``complete``); None: refused."""
    if not head:
        return None
    found = filetype.guess(head[:SNIFF_BYTES])
    if found is not None:
        return ALLOWED.get(found.extension)
    return TEXT_PLAIN if _looks_like_text(head, complete) else None


def _looks_like_text(head: bytes, complete: bool) -> bool:
    """UTF-8 without control characters (a multi-byte character cut at the window's edge is fine)."""
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    try:
        text = decoder.decode(head, final=complete)
    except UnicodeDecodeError:
        return False
    return not any((ch < " " and ch not in _TEXT_CONTROL_OK) or ch == "\x7f" for ch in text)


def image_size(head: bytes) -> tuple[int, int] | None:
    """Width and height as displayed (EXIF rotation applied), from the header; None if unreadable."""
    try:
        width, height = imagesize.get(io.BytesIO(head))
    except Exception:
        return None
    if width <= 0 or height <= 0:
        return None
    return int(width), int(height)


def audio_duration_ms(file: IO[bytes]) -> int | None:
    """The duration the container declares (WAV, Ogg, MP3, MP4/M4A, AAC, FLAC); None if unknown."""
    file.seek(0)
    try:
        found = mutagen.File(file)
    except Exception:
        return None
    length = getattr(getattr(found, "info", None), "length", None)
    if not isinstance(length, int | float) or not math.isfinite(length) or length <= 0:
        return None
    return round(length * 1000)


class Spool:
    """A copy of an upload for the audio duration probe or the image thumbnail: memory up to a point, then
    a temporary file."""

    def __init__(self) -> None:
        self.file: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY)  # noqa: SIM115

    @property
    def in_memory(self) -> bool:
        return self.file.tell() < SPOOL_MEMORY

    def write(self, chunk: bytes) -> None:
        self.file.write(chunk)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.file.close()
