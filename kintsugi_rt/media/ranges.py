"""Conditional and partial downloads: ``If-None-Match`` (304) and one ``Range`` (206 / 416).

Only single byte ranges are served partially: ``bytes=a-b``, ``bytes=a-`` and ``bytes=-n``. A request for
several ranges gets the whole file (200), which HTTP allows, and what browsers' media elements never
ask for anyway. A ``Range`` header that is not a byte range, or is malformed, is ignored (200 too).
"""

from __future__ import annotations

from dataclasses import dataclass

from kintsugi_rt.errors import ApiError

RANGE_NOT_SATISFIABLE = "range_not_satisfiable"

# More digits than any file size has: refuse before int() does work on them.
_MAX_DIGITS = 19


@dataclass(frozen=True, slots=True)
class ByteRange:
    """Bytes ``start`` to ``end`` of a file, both included."""

    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    def content_range(self, size: int) -> str:
        return f"bytes {self.start}-{self.end}/{size}"


def unsatisfiable(size: int) -> ApiError:
    return ApiError(
        416,
        RANGE_NOT_SATISFIABLE,
        f"The range starts past the end of the file ({size} bytes).",
        headers={"Content-Range": f"bytes */{size}", "Accept-Ranges": "bytes"},
        details={"size": size},
    )


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """Whether ``If-None-Match`` names ``etag`` (weak comparison, as RFC 9110 asks) or is ``*``."""
    if not if_none_match:
        return False
    bare = etag.removeprefix("W/")
    for candidate in if_none_match.split(","):
        tag = candidate.strip()
        if tag == "*" or tag.removeprefix("W/") == bare:
            return True
    return False


def requested_range(
    header: str | None, size: int, *, if_range: str | None = None, etag: str = ""
) -> ByteRange | None:
    """The one range to serve, ``None`` for the whole file; ``range_not_satisfiable`` (416) for a range
    that starts past the end. ``If-Range`` that is not this file's (strong) ETag means the whole file."""
    if header is None or size <= 0:
        return None
    if if_range is not None and (if_range.strip() != etag or etag.startswith("W/")):
        return None
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    first, last = first.strip(), last.strip()
    if not dash or not _digits(first, allow_empty=True) or not _digits(last, allow_empty=True):
        return None
    if not first:  # the last n bytes
        if not last:
            return None
        suffix = int(last)
        if suffix == 0:
            raise unsatisfiable(size)
        return ByteRange(max(0, size - suffix), size - 1)
    start = int(first)
    if last and int(last) < start:
        return None  # not a valid range: ignored
    if start >= size:
        raise unsatisfiable(size)
    end = int(last) if last else size - 1
    return ByteRange(start, min(end, size - 1))


def _digits(text: str, *, allow_empty: bool) -> bool:
    if not text:
        return allow_empty
    return text.isascii() and text.isdigit() and len(text) <= _MAX_DIGITS
