"""Frame encodings: JSON text frames by default, MessagePack binary frames on request.

Events are encoded once as JSON bytes when published. A durable event's ``pos`` differs per
recipient, so it is spliced into the encoded object instead of re-encoding the whole event.
"""

from __future__ import annotations

import struct
from enum import Enum
from typing import Any

import msgspec

_json_encoder = msgspec.json.Encoder()
_msgpack_encoder = msgspec.msgpack.Encoder()
_POS_KEY_MSGPACK = _msgpack_encoder.encode("pos")


class Format(Enum):
    JSON = "json"
    MSGPACK = "msgpack"


def encode_json(message: Any) -> bytes:
    return _json_encoder.encode(message)


def json_to_msgpack(body: bytes) -> bytes:
    return _msgpack_encoder.encode(msgspec.json.decode(body))


def with_position(body: bytes, fmt: Format, pos: int) -> bytes:
    """Insert ``"pos": pos`` as the first key of an encoded object, without decoding it."""
    if fmt is Format.JSON:
        if body == b"{}":
            return b'{"pos":%d}' % pos
        return b'{"pos":%d,' % pos + body[1:]
    count, header_size = _msgpack_map_header(body)
    return (
        _msgpack_map_prefix(count + 1) + _POS_KEY_MSGPACK + _msgpack_encoder.encode(pos) + body[header_size:]
    )


def _msgpack_map_header(body: bytes) -> tuple[int, int]:
    first = body[0]
    if 0x80 <= first <= 0x8F:
        return first & 0x0F, 1
    if first == 0xDE:
        return struct.unpack(">H", body[1:3])[0], 3
    if first == 0xDF:
        return struct.unpack(">I", body[1:5])[0], 5
    raise ValueError("not a MessagePack map")


def _msgpack_map_prefix(count: int) -> bytes:
    if count <= 15:
        return bytes([0x80 | count])
    if count <= 0xFFFF:
        return b"\xde" + struct.pack(">H", count)
    return b"\xdf" + struct.pack(">I", count)
