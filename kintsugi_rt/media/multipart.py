"""A pull-style reader over ``python-multipart``'s streaming parser.

The request body is fed to the parser one network chunk at a time; the caller asks for the next part
and then iterates that part's data. Nothing is buffered beyond one chunk's worth of events, so a file
part can be passed straight on to storage.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from kintsugi_rt import errors
from kintsugi_rt.errors import ApiError

MAX_PART_HEADERS_BYTES = 8 * 1024


@dataclass(frozen=True, slots=True)
class Part:
    name: str
    filename: str | None
    content_type: str | None


_BEGIN, _DATA, _END = 0, 1, 2


def boundary_of(content_type: str | None) -> bytes:
    """The boundary of a ``multipart/form-data`` body; 415 for anything else."""
    kind, params = parse_options_header(content_type or "")
    boundary = params.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise ApiError(
            415, errors.UNSUPPORTED_MEDIA_TYPE, "Send the file as multipart/form-data with a 'file' part."
        )
    return boundary


def too_large(limit: int) -> ApiError:
    return ApiError(
        413,
        errors.PAYLOAD_TOO_LARGE,
        f"The file is larger than your limit of {limit} bytes.",
        details={"max_bytes": limit},
    )


class MultipartReader:
    def __init__(self, body: AsyncIterator[bytes], boundary: bytes, max_body: int, file_limit: int) -> None:
        self._body = body
        self._max_body = max_body
        self._file_limit = file_limit
        self._received = 0
        self._events: deque[tuple[int, bytes | Part | None]] = deque()
        self._headers: dict[bytes, bytes] = {}
        self._header_field = bytearray()
        self._header_value = bytearray()
        self._header_bytes = 0
        self._finished = False  # the closing boundary was seen
        self._exhausted = False  # the body has no more chunks
        self._parser = MultipartParser(
            boundary,
            callbacks={
                "on_part_begin": self._on_part_begin,
                "on_header_field": self._on_header_field,
                "on_header_value": self._on_header_value,
                "on_header_end": self._on_header_end,
                "on_headers_finished": self._on_headers_finished,
                "on_part_data": self._on_part_data,
                "on_part_end": self._on_part_end,
                "on_end": self._on_end,
            },
        )

    # --- parser callbacks (synchronous, called from ``write``) ---

    def _on_part_begin(self) -> None:
        self._headers = {}
        self._header_bytes = 0

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]
        self._count_header(end - start)

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]
        self._count_header(end - start)

    def _count_header(self, size: int) -> None:
        self._header_bytes += size
        if self._header_bytes > MAX_PART_HEADERS_BYTES:
            raise ApiError(400, errors.BAD_REQUEST, "A multipart part has too many header bytes.")

    def _on_header_end(self) -> None:
        self._headers[bytes(self._header_field).lower()] = bytes(self._header_value)
        self._header_field.clear()
        self._header_value.clear()

    def _on_headers_finished(self) -> None:
        _, params = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = params.get(b"name", b"").decode("utf-8", "replace")
        raw_filename = params.get(b"filename")
        filename = raw_filename.decode("utf-8", "replace") if raw_filename is not None else None
        declared = self._headers.get(b"content-type")
        part = Part(name, filename, declared.decode("latin-1") if declared else None)
        self._events.append((_BEGIN, part))

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        if end > start:
            self._events.append((_DATA, bytes(data[start:end])))

    def _on_part_end(self) -> None:
        self._events.append((_END, None))

    def _on_end(self) -> None:
        self._finished = True

    # --- pulling ---

    async def _pull(self) -> bool:
        """Feed one more chunk of the body to the parser; False once the body is over."""
        if self._exhausted:
            return False
        chunk = await anext(self._body, None)
        if chunk is None:
            self._exhausted = True
            self._parser.finalize()
            if not self._finished:
                raise ApiError(400, errors.BAD_REQUEST, "The multipart body ended before its last boundary.")
            return False
        self._received += len(chunk)
        if self._received > self._max_body:
            raise too_large(self._file_limit)
        try:
            self._parser.write(chunk)
        except MultipartParseError:
            raise ApiError(400, errors.BAD_REQUEST, "The multipart body is malformed.") from None
        return True

    async def _next(self) -> tuple[int, bytes | Part | None] | None:
        while not self._events:
            if not await self._pull():
                return None
        return self._events.popleft()

    async def next_part(self) -> Part | None:
        """The next part's headers (skipping any unread data of the current one); None at the end."""
        while (event := await self._next()) is not None:
            if event[0] == _BEGIN:
                assert isinstance(event[1], Part)
                return event[1]
        return None

    async def data(self) -> AsyncIterator[bytes]:
        """The current part's data, chunk by chunk, until the part ends."""
        while (event := await self._next()) is not None:
            kind, payload = event
            if kind == _END:
                return
            if kind == _DATA:
                assert isinstance(payload, bytes)
                yield payload

    async def read_field(self, max_bytes: int) -> str:
        """A small text field, whole."""
        value = bytearray()
        async for chunk in self.data():
            value += chunk
            if len(value) > max_bytes:
                raise ApiError(400, errors.BAD_REQUEST, f"A form field is longer than {max_bytes} bytes.")
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise ApiError(400, errors.BAD_REQUEST, "A form field is not UTF-8 text.") from None
