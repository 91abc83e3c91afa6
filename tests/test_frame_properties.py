"""No input reaches ``internal_error``: a property over every client frame type in the registry.

Frames are generated from each type's own schema (msgspec's type info), with the values that broke
handlers before (NUL characters, integers beyond PostgreSQL's ranges, dates at the ends of the
calendar, 10k-character and right-to-left strings, wrong types) mixed with ordinary ones and with the
ids of real resources (the user's chat, conversation and message, another user), so frames get past
validation and deep into the handlers. Whatever a frame holds, the reply is never ``internal_error``,
the request gets exactly one terminal reply, the server logs no error, and the socket stays usable.

New modules are covered the moment they register a frame type.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from msgspec import inspect as mi
from structlog.testing import capture_logs

from kintsugi_rt.protocol_doc import build_registry
from kintsugi_rt.socket.registry import message_type
from tests.support import make_settings
from tests.test_socket_fuzz import NO_RATE_LIMIT, Prober, Target, _Crashes, start_target
from tests.wsclient import new_user

REGISTRY = build_registry()
FRAME_TYPES = {message_type(cls): cls for cls in REGISTRY.client_types}
# Frames that end or change the connection itself: tested in test_socket_fuzz.py.
SKIP = {"auth", "resume"}

PROPERTY = settings(
    max_examples=int(os.environ.get("PROPERTY_EXAMPLES", "50")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

EXTREME_STRINGS = [
    "",
    "\x00",
    "a\x00b",
    "x" * 10_000,
    "\u202egnp.exe",  # right-to-left override
    "مرحبا بالعالم",
    "שלום עולם",
    "👨‍👩‍👧👍🏽🇺🇦",
    "' OR 1=1 --",
    "<img src=x onerror=alert(1)>",
    "%s%n%x",
    "\\u0000",
    "\ufeff\u200d\u200b",
    "9223372036854775808",
    "NaN",
]
EXTREME_INTS = [0, 1, -1, 2**31 - 1, 2**31, -(2**31) - 1, 2**53 + 1, 2**63 - 1, 2**63, -(2**63), 2**64 - 1]
EXTREME_DATES = [
    "9999-12-31T23:59:59-23:59",
    "0001-01-01T00:00:00+23:59",
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59.999999Z",
    "1970-01-01T00:00:00Z",
    "2026-12-01T12:00:00+14:00",
]
WRONG_TYPES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),  # JSON has neither
    st.text(max_size=5),
)


@dataclass
class World:
    """Real resources of the probing user, so generated ids sometimes point at something."""

    ids: list[str]


def strings(t: mi.StrType) -> st.SearchStrategy[str]:
    bounded = st.text(
        min_size=t.min_length or 0, max_size=min(t.max_length if t.max_length is not None else 40, 40)
    )
    return st.one_of(st.sampled_from(EXTREME_STRINGS), bounded)


def ints(t: mi.IntType) -> st.SearchStrategy[int]:
    edges = [v for v in (t.ge, t.le, t.gt, t.lt) if v is not None]
    near = [v + d for v in edges for d in (-1, 0, 1)]
    return st.sampled_from(EXTREME_INTS + near) | st.integers(-1000, 1000)


def value_for(t: mi.Type, world: World, depth: int = 0) -> st.SearchStrategy[Any]:
    """Values for a field of type ``t``: mostly of its type, at its edges; sometimes of another."""
    if depth > 3:
        return st.none()
    typed: st.SearchStrategy[Any]
    if isinstance(t, mi.StrType):
        typed = strings(t)
    elif isinstance(t, mi.IntType):
        typed = ints(t)
    elif isinstance(t, mi.FloatType):
        typed = st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from([0.0, -1.0, 1e308, 2.0])
    elif isinstance(t, mi.BoolType):
        typed = st.booleans()
    elif isinstance(t, mi.UUIDType):
        typed = st.sampled_from(world.ids) | st.uuids().map(str) | st.just(str(uuid.UUID(int=0)))
    elif isinstance(t, mi.DateTimeType):
        typed = st.sampled_from(EXTREME_DATES)
    elif isinstance(t, mi.LiteralType):
        typed = st.sampled_from(list(t.values)) | st.text(max_size=8)
    elif isinstance(t, mi.NoneType):
        typed = st.none()
    elif isinstance(t, mi.UnionType):
        typed = st.one_of(*(value_for(member, world, depth) for member in t.types))
    elif isinstance(t, mi.ListType | mi.SetType | mi.FrozenSetType | mi.VarTupleType):
        size = t.max_length if t.max_length is not None else 20
        item = value_for(t.item_type, world, depth + 1)
        # Short lists, and one just over the limit (one item repeated: cheap to make and to show).
        typed = st.lists(item, max_size=min(size, 20)) | item.map(lambda one: [one] * (size + 1))
    elif isinstance(t, mi.DictType):
        typed = st.dictionaries(
            value_for(t.key_type, world, depth + 1), value_for(t.value_type, world, depth + 1), max_size=5
        )
    elif isinstance(t, mi.StructType):
        typed = struct_fields(t, world, depth + 1)
    else:
        typed = WRONG_TYPES
    return st.one_of(typed, typed, typed, WRONG_TYPES)  # mostly the right type


def struct_fields(t: mi.StructType, world: World, depth: int = 0) -> st.SearchStrategy[dict[str, Any]]:
    optional = {f.encode_name: value_for(f.type, world, depth) for f in t.fields if not f.required}
    required = {f.encode_name: value_for(f.type, world, depth) for f in t.fields if f.required}
    return st.fixed_dictionaries(required, optional=optional)


def frames(kind: str, world: World) -> st.SearchStrategy[dict[str, Any]]:
    info = mi.type_info(FRAME_TYPES[kind])
    assert isinstance(info, mi.StructType)
    fields = {f.encode_name: f for f in info.fields if f.encode_name != "id"}
    body = struct_fields(mi.StructType(info.cls, tuple(fields.values()), info.tag_field, info.tag,
                                       info.array_like, info.forbid_unknown_fields), world)  # fmt: skip
    return body.map(lambda fields_: {"type": kind, "id": "probe-frame", **fields_})


@dataclass
class Probe:
    world: World
    sockets: dict[str, Prober]
    crashes: _Crashes


@pytest.fixture(scope="module")
async def probe(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Probe]:
    """One server for the whole module, one user with real resources, one socket per encoding."""
    settings = make_settings(
        NO_RATE_LIMIT, DATABASE_URL=database_url, KINTSUGI_DATA_DIR=str(tmp_path_factory.mktemp("data"))
    )
    handler = _Crashes()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        with capture_logs() as events:
            handler.structured = events
            async for target in start_target(settings, handler):
                world = await make_world(target)
                sockets = {"json": Prober(target), "msgpack": Prober(target, msgpack=True)}
                for prober in sockets.values():
                    await prober.open()
                yield Probe(world, sockets, handler)
                for prober in sockets.values():
                    await prober.close()
    finally:
        root.removeHandler(handler)


async def make_world(target: Target) -> World:
    other = await new_user(target.url, "Other")
    prober = Prober(target)
    ws = await prober.open()
    ids = [other.id]

    async def ask(frame: dict[str, Any]) -> dict[str, Any]:
        await ws.send(json.dumps({**frame, "id": "setup"}))
        while True:
            reply: dict[str, Any] = json.loads(await ws.recv())
            if reply.get("id") == "setup":
                assert reply["type"] == "ok", reply
                return reply

    conversation = await ask({"type": "conversation.create", "kind": "direct", "user_ids": [other.id]})
    ids.append(conversation["conversation"]["id"])
    sent = await ask(
        {"type": "message.send", "conversation_id": ids[-1], "client_msg_id": "setup-1", "text": "hello"}
    )
    ids.append(sent["message"]["id"])
    chat = await ask({"type": "chat.create"})
    ids.append(chat["chat"]["id"])
    await prober.close()
    return World(ids)


def assert_survives(replies: list[dict[str, Any]], frame: dict[str, Any]) -> None:
    terminal = [r for r in replies if r.get("id") == "probe-frame"]
    assert len(terminal) == 1, f"{len(terminal)} replies to {str(frame)[:400]}: {replies!r}"[:2000]
    for reply in replies:
        assert reply.get("code") not in ("internal_error", "unavailable"), (str(frame)[:400], reply)


@pytest.mark.parametrize("encoding", ["json", "msgpack"])
@pytest.mark.parametrize("kind", sorted(set(FRAME_TYPES) - SKIP))
@PROPERTY
@given(data=st.data())
async def test_no_frame_reaches_internal_error(
    probe: Probe, kind: str, encoding: str, data: st.DataObject
) -> None:
    frame = data.draw(frames(kind, probe.world), label="frame")
    # Each example answers for its own frame only (an earlier failure was reported already).
    probe.crashes.records.clear()
    probe.crashes.structured.clear()
    prober = probe.sockets[encoding]
    encoded = msgspec.msgpack.encode(frame) if prober.msgpack else json.dumps(frame, ensure_ascii=False)
    # exchange() also fails when the socket closes or the server logs an error or a traceback.
    assert_survives(await prober.exchange(encoded), frame)
