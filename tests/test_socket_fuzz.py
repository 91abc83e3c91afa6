"""Garbage thrown at the real ``/ws`` endpoint: the server answers ``bad_request`` and carries on.

Every property test starts ONE server and opens ONE socket outside the Hypothesis loop; each example
sends a garbage frame followed by a ``ping`` and checks the replies in between (and that the server
logged no error). If a socket dies, the failure says which frame killed it and the next example
reconnects, so shrinking stays meaningful.

The tests at the end pin bugs this file found (deep nesting, invalid UTF-8 in MessagePack strings,
a steady flood never closed) so they stay fixed.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import logging
import os
import re
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, MutableMapping
from dataclasses import dataclass
from typing import Any

import msgspec
import pytest
import websockets
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from kintsugi_rt.protocol_doc import build_registry
from kintsugi_rt.settings import Settings
from kintsugi_rt.socket.protocol import SUBPROTOCOL_MSGPACK
from tests.support import serve
from tests.wsclient import new_user

SettingsFor = Callable[..., Settings]
Frame = str | bytes

NO_RATE_LIMIT = {
    "WS_RATE_LIMIT": "100000/1s",
    "AUTH_RATE_LIMIT_IP": "100000/1m",
    "USER_LOOKUP_RATE_LIMIT": "100000/1m",
    "USER_SEARCH_RATE_LIMIT": "100000/1m",
}
REPLY_TIMEOUT = 5.0
# Text that only an exception (not a validation message) would put into a frame.
TRACEBACK_MARKERS = ("Traceback", 'File "', '.py"', "Error(")
ERROR_KEYS = {"type", "code", "message", "id", "fields", "details"}  # docs/rest.md: the error shape
# What renewing with a token that is not this user's live one may answer (never bad_request: it is a str).
AUTH_ERRORS = {"invalid_token", "token_expired", "session_revoked", "forbidden"}

# FUZZ_EXAMPLES=2000 for a deeper run; 50 keeps the file at a few seconds.
FUZZ = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "50")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# The server's own decoder over every registered client frame: tells a (rare) valid frame from garbage.
_REGISTRY = build_registry()
_msgpack = msgspec.msgpack.Encoder()


def is_valid_frame(frame: Frame) -> bool:
    try:
        if isinstance(frame, str):
            _REGISTRY.json_decoder.decode(frame)
        else:
            _REGISTRY.msgpack_decoder.decode(frame)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError, UnicodeDecodeError):
        return False
    return True


class _Unknown:
    """The expected ``id`` of an error reply cannot be told from the frame (e.g. non-str map keys)."""


UNKNOWN = _Unknown()


def readable_id(frame: Frame) -> str | _Unknown | None:
    """The ``id`` the server should echo: a string of at most 64 characters in a decodable object."""
    try:
        value = msgspec.json.decode(frame) if isinstance(frame, str) else msgspec.msgpack.decode(frame)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError, UnicodeDecodeError):
        # Invalid JSON hides every id; MessagePack the generic decoder refuses (a bad timestamp or
        # UTF-8 under an unknown key) may still yield one to a decoder that skips unknown fields.
        return None if isinstance(frame, str) else UNKNOWN
    if not isinstance(value, dict):
        return None
    if not all(isinstance(key, str) for key in value):
        return UNKNOWN
    found = value.get("id")
    return found if isinstance(found, str) and len(found) <= 64 else None


def strings_in(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, bytes):
        yield value.decode("utf-8", "replace")
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from strings_in(key)
            yield from strings_in(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from strings_in(item)


def echo_source(frame: Frame) -> str:
    """Everything a validation message may legitimately quote back from ``frame``."""
    raw = frame if isinstance(frame, str) else frame.decode("utf-8", "replace")
    try:
        value = msgspec.json.decode(frame) if isinstance(frame, str) else msgspec.msgpack.decode(frame)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError, UnicodeDecodeError):
        return raw
    return "\n".join([raw, *strings_in(value)])


def assert_no_traceback(reply: dict[str, Any], frame: Frame) -> None:
    text = "\n".join(strings_in(reply))
    quoted = echo_source(frame)
    leaked = [marker for marker in TRACEBACK_MARKERS if marker in text and marker not in quoted]
    assert not leaked, f"reply leaks {leaked}: {reply!r}"


def assert_bad_request(replies: list[dict[str, Any]], frame: Frame) -> dict[str, Any]:
    """Exactly one reply, a well-formed ``bad_request`` error carrying the id if it was readable."""
    assert len(replies) == 1, f"expected one error reply to {frame[:300]!r}, got {replies!r}"
    reply = replies[0]
    assert reply.get("type") == "error", reply
    assert reply.get("code") == "bad_request", reply
    assert isinstance(reply.get("message"), str), reply
    assert reply["message"], reply
    assert set(reply) <= ERROR_KEYS, reply
    details = reply.get("details")
    if details is not None:
        assert isinstance(details, dict), reply
        assert isinstance(details.get("field"), str), reply
    expected_id = readable_id(frame)
    if not isinstance(expected_id, _Unknown):
        assert reply.get("id") == expected_id, f"id of {frame[:300]!r}: {reply!r}"
    assert_no_traceback(reply, frame)
    return reply


# --- the server, one user, one socket -------------------------------------------------------------


class _Crashes(logging.Handler):
    """Server-side log records at ERROR or with a traceback: a handler or the ASGI app blew up.

    uvicorn logs through the standard library; our code through structlog (captured separately).
    """

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[str] = []
        self.structured: list[MutableMapping[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR or record.exc_info:
            self.records.append(f"{record.name}: {record.getMessage()[:500]}")

    def found(self, allowed: str | None = None) -> list[str]:
        """What was logged, but for records containing ``allowed``."""
        events = [
            repr(event)[:500]
            for event in self.structured
            if event.get("log_level") in ("error", "critical") or event.get("exc_info")
        ]
        return [line for line in [*self.records, *events] if allowed is None or allowed not in line]


@dataclass
class Target:
    url: str
    port: int
    token: str
    crashes: _Crashes
    settings: Settings

    def ws_url(self, token: str | None = None) -> str:
        return f"ws://127.0.0.1:{self.port}/ws?token={token or self.token}"


@pytest.fixture
def crashes() -> Iterator[_Crashes]:
    handler = _Crashes()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        with capture_logs() as events:
            handler.structured = events
            yield handler
    finally:
        root.removeHandler(handler)


async def start_target(settings: Settings, crashes: _Crashes) -> AsyncIterator[Target]:
    async with serve(settings) as url:
        token = (await new_user(url, "Fuzz")).token
        port = int(url.rsplit(":", 1)[1])
        yield Target(url, port, token, crashes, settings)


@pytest.fixture
async def target(settings_for: SettingsFor, crashes: _Crashes) -> AsyncIterator[Target]:
    """A server without a practical frame rate limit, and a registered user."""
    async for running in start_target(settings_for(**NO_RATE_LIMIT), crashes):
        yield running


@pytest.fixture
async def limited_target(settings_for: SettingsFor, crashes: _Crashes) -> AsyncIterator[Target]:
    """A server with the default frame rate limit (200 frames per 10 s)."""
    async for running in start_target(
        settings_for(AUTH_RATE_LIMIT_IP=NO_RATE_LIMIT["AUTH_RATE_LIMIT_IP"]), crashes
    ):
        yield running


@dataclass
class Prober:
    """One socket (reopened only if a frame killed it) that sends a frame, then a ping, and
    returns every frame the server sent in between."""

    target: Target
    msgpack: bool = False
    ws: ClientConnection | None = None
    hello: dict[str, Any] | None = None
    sent: int = 0

    def encode(self, message: dict[str, Any]) -> Frame:
        return _msgpack.encode(message) if self.msgpack else json.dumps(message)

    def decode(self, data: Frame) -> dict[str, Any]:
        if self.msgpack:
            assert isinstance(data, bytes), f"text frame in MessagePack mode: {data!r}"
            value = msgspec.msgpack.decode(data)
        else:
            assert isinstance(data, str), f"binary frame in JSON mode: {data!r}"
            value = msgspec.json.decode(data)
        assert isinstance(value, dict), value
        return value

    async def open(self) -> ClientConnection:
        if self.ws is not None:
            return self.ws
        subprotocols = [SUBPROTOCOL_MSGPACK] if self.msgpack else None
        ws = await websockets.connect(
            self.target.ws_url(),
            subprotocols=subprotocols,  # type: ignore[arg-type]
            max_size=None,
            open_timeout=REPLY_TIMEOUT,
        )
        hello = self.decode(await asyncio.wait_for(ws.recv(), REPLY_TIMEOUT))
        assert hello["type"] == "hello", hello
        self.ws, self.hello = ws, hello
        return ws

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
            self.ws = None

    async def exchange(self, frame: Frame) -> list[dict[str, Any]]:
        ws = await self.open()
        self.sent += 1
        probe = f"probe-{self.sent}"
        try:
            await ws.send(frame)
            await ws.send(self.encode({"type": "ping", "id": probe}))
            replies: list[dict[str, Any]] = []
            async with asyncio.timeout(REPLY_TIMEOUT):
                while True:
                    reply = self.decode(await ws.recv())
                    if reply.get("type") == "pong" and reply.get("id") == probe:
                        break
                    replies.append(reply)
        except ConnectionClosed as exc:
            self.ws = None
            closing = exc.rcvd or "no close frame"
            pytest.fail(f"the server closed the socket ({closing}) after the frame {frame[:300]!r}")
        except TimeoutError:
            await self.close()
            pytest.fail(f"no pong within {REPLY_TIMEOUT}s after the frame {frame[:300]!r}")
        assert not self.target.crashes.found(), self.target.crashes.found()
        return replies

    async def garbage(self, frame: Frame) -> dict[str, Any]:
        """Send a frame that is not a valid client frame: expect one ``bad_request``, socket open."""
        assume(not is_valid_frame(frame))
        return assert_bad_request(await self.exchange(frame), frame)


@pytest.fixture
async def json_socket(target: Target) -> AsyncIterator[Prober]:
    prober = Prober(target)
    await prober.open()
    yield prober
    await prober.close()


@pytest.fixture
async def msgpack_socket(target: Target) -> AsyncIterator[Prober]:
    prober = Prober(target, msgpack=True)
    await prober.open()
    yield prober
    await prober.close()


@pytest.fixture(params=["json", "msgpack"])
async def any_socket(request: pytest.FixtureRequest, target: Target) -> AsyncIterator[Prober]:
    prober = Prober(target, msgpack=request.param == "msgpack")
    await prober.open()
    yield prober
    await prober.close()


# --- strategies -------------------------------------------------------------------------------

# No surrogates: the client cannot send them in a text frame (and JSON escapes of them are garbage).
TEXT = st.characters(codec="utf-8")
FRAME_TYPES = ["ping", "auth", "resume", "presence.watch", "presence.unwatch", "hello", "pong", "error"]
FIELD_NAMES = ["type", "id", "epoch", "pos", "token", "user_ids"]

keys = st.sampled_from(FIELD_NAMES) | st.text(TEXT, max_size=10)
# What both encodings can carry: 64-bit integers (MessagePack) and finite floats (JSON).
ints = st.integers(min_value=-(2**63), max_value=2**64 - 1)
floats = st.floats(allow_nan=False, allow_infinity=False)
scalars = (
    st.none() | st.booleans() | ints | floats | st.sampled_from(FRAME_TYPES) | st.text(TEXT, max_size=30)
)
json_values: st.SearchStrategy[Any] = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(keys, inner, max_size=5),
    max_leaves=25,
)
msgpack_values: st.SearchStrategy[Any] = st.recursive(
    scalars | st.binary(max_size=30),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(keys | st.integers(-5, 5), inner, max_size=5),
    max_leaves=25,
)


def nest(leaf: Any, shape: list[bool]) -> Any:
    """Wrap ``leaf`` in one list (False) or one-key object (True) per entry of ``shape``."""
    for in_object in shape:
        leaf = {"k": leaf} if in_object else [leaf]
    return leaf


def deep(values: st.SearchStrategy[Any], max_depth: int = 50) -> st.SearchStrategy[Any]:
    return st.builds(nest, values, st.lists(st.booleans(), min_size=1, max_size=max_depth))


def huge_text(max_bytes: int = 100_000) -> st.SearchStrategy[str]:
    """A long string (1 KB to ``max_bytes`` once JSON-escaped) without Hypothesis drawing every char."""

    def repeat(unit: str, size: int) -> str:
        escaped = len(json.dumps(unit, ensure_ascii=False).encode()) - 2
        return unit * max(1, size // escaped)

    return st.builds(repeat, st.text(TEXT, min_size=1, max_size=3), st.integers(1_000, max_bytes))


def with_huge(values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """One huge string somewhere a decoder meets it: bare, as a known field, or under an unknown key."""
    return st.one_of(
        huge_text(),
        st.builds(
            lambda key, text, rest: {**rest, key: text}, keys, huge_text(), st.dictionaries(keys, values)
        ),
        st.builds(lambda text, rest: [*rest, text], huge_text(), st.lists(values, max_size=3)),
    )


def any_json(values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(values, deep(values), with_huge(values))


# Valid fields for each frame type, then one field made wrong: (frame, the field to blame).
Case = tuple[dict[str, Any], str]

uuids = st.uuids().map(str)
good_ids = st.none() | st.text(TEXT, max_size=64)
not_a_string = ints | floats | st.booleans() | st.lists(scalars, max_size=3)
not_an_object_list = st.none() | ints | st.text(TEXT, max_size=10) | st.dictionaries(keys, scalars)
bad_pos = (
    st.integers(min_value=-(2**63), max_value=-1)
    | st.integers(min_value=2**63, max_value=2**64 - 1)  # beyond PostgreSQL's bigint
    | floats
    | st.booleans()
    | st.none()
    | st.text(TEXT, max_size=10)
    | st.lists(ints, max_size=2)
)
bad_uuid = (
    ints
    | st.none()
    | st.booleans()
    | st.text(TEXT, max_size=40).filter(lambda s: not _parses_as_uuid(s))
    | st.lists(uuids, max_size=2)
)


def _parses_as_uuid(text: str) -> bool:
    try:
        msgspec.json.decode(json.dumps(text), type=uuid.UUID)
    except msgspec.ValidationError:
        return False
    return True


def _bad_user_ids() -> st.SearchStrategy[Any]:
    def spoil(good: list[str], bad: Any, at: int) -> list[Any]:
        return [*good[:at], bad, *good[at:]]

    return st.one_of(
        not_an_object_list.filter(lambda v: not isinstance(v, list)),
        st.just([]),
        st.lists(uuids, min_size=501, max_size=510),
        st.builds(spoil, st.lists(uuids, max_size=5), bad_uuid, st.integers(0, 5)),
    )


MISSING = object()


def _case(kind: str, good: dict[str, Any], blame: str, bad: Any, frame_id: Any) -> Case:
    frame: dict[str, Any] = {"type": kind}
    if frame_id is not MISSING:
        frame["id"] = frame_id
    frame.update(good)
    if bad is MISSING:
        frame.pop(blame, None)
    else:
        frame[blame] = bad
    return frame, blame


def wrong_field_cases() -> st.SearchStrategy[Case]:
    ids = st.just(MISSING) | good_ids
    return st.one_of(
        # ping: the id itself is wrong (not a string, or longer than 64 characters)
        st.builds(
            _case,
            st.just("ping"),
            st.just({}),
            st.just("id"),
            not_a_string | st.text(TEXT, min_size=65),
            st.just(MISSING),
        ),
        st.builds(
            _case,
            st.just("auth"),
            st.just({}),
            st.just("token"),
            not_a_string | st.none() | st.just(MISSING),
            ids,
        ),
        st.builds(
            _case,
            st.just("resume"),
            st.fixed_dictionaries({"pos": st.integers(0, 2**63 - 1)}),
            st.just("epoch"),
            not_a_string | st.none() | st.just(MISSING),
            ids,
        ),
        st.builds(
            _case,
            st.just("resume"),
            st.fixed_dictionaries({"epoch": st.text(TEXT, max_size=20)}),
            st.just("pos"),
            bad_pos | st.just(MISSING),
            ids,
        ),
        st.builds(
            _case,
            st.sampled_from(["presence.watch", "presence.unwatch"]),
            st.just({}),
            st.just("user_ids"),
            _bad_user_ids() | st.just(MISSING),
            ids,
        ),
    )


@st.composite
def registered_frames(draw: st.DrawFn) -> tuple[dict[str, Any], set[str]]:
    """Any registered client frame type (new modules included) with random values in some of its
    fields and the others left out; returns the frame and the field names it may be blamed on."""
    cls = draw(st.sampled_from(_REGISTRY.client_types))
    names = [info.encode_name for info in msgspec.structs.fields(cls)]
    frame: dict[str, Any] = {"type": cls.__struct_config__.tag}
    for name in draw(st.lists(st.sampled_from(names), unique=True)):
        frame[name] = draw(json_values | uuids)
    return frame, set(names)


def mutate(frame: bytes, edits: list[tuple[int, int]], cut: int | None) -> bytes:
    """Overwrite some bytes and maybe truncate: near-valid frames reach deeper into the decoder."""
    data = bytearray(frame)
    for at, value in edits:
        data[at % len(data)] = value
    return bytes(data[:cut] if cut is not None else data)


VALID_FRAMES: list[dict[str, Any]] = [
    {"type": "ping", "id": "p"},
    {"type": "auth", "token": "tok", "id": "a"},
    {"type": "resume", "epoch": "e", "pos": 7, "id": "r"},
    {"type": "presence.watch", "id": "w", "user_ids": ["6f1c2b1e-8d1a-4c55-9a51-2f7c0e1b9a10"]},
]
edits = st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), min_size=1, max_size=4)
cuts = st.none() | st.integers(0, 80)
mutated_msgpack = st.builds(mutate, st.sampled_from([_msgpack.encode(f) for f in VALID_FRAMES]), edits, cuts)


def _mutated_text(frame: bytes, edit_list: list[tuple[int, int]], cut: int | None) -> str:
    return mutate(frame, [(at, value % 128) for at, value in edit_list], cut).decode("ascii")


mutated_json = st.builds(
    _mutated_text, st.sampled_from([json.dumps(f).encode() for f in VALID_FRAMES]), edits, cuts
)


# Access tokens: JWT-shaped garbage, some of it signed with the server's real secret.


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass(frozen=True)
class TokenRecipe:
    header: bytes
    payload: bytes
    signed: bool  # with the server's secret; otherwise ``signature`` as is
    signature: bytes

    def token(self, secret: str) -> str:
        head = f"{b64url(self.header)}.{b64url(self.payload)}"
        mac = hmac.new(secret.encode(), head.encode(), hashlib.sha256).digest()
        return f"{head}.{b64url(mac if self.signed else self.signature)}"


def as_json(value: Any) -> bytes:
    return json.dumps(value).encode()


timestamps = st.integers(-(2**40), 2**40) | st.integers() | floats | st.text(TEXT, max_size=8) | st.none()
claim_values = uuids | scalars | st.lists(scalars, max_size=2)
claims = st.fixed_dictionaries(
    {},
    optional={
        "sub": uuids | claim_values,
        "sid": uuids | claim_values,
        "typ": st.sampled_from(["access", "refresh"]) | claim_values,
        "jti": st.text(TEXT, max_size=16) | claim_values,
        "iat": timestamps,
        "exp": timestamps,
        "nbf": timestamps,
        "aud": claim_values,
        "iss": claim_values,
    },
)
token_headers = st.one_of(
    st.just(as_json({"alg": "HS256", "typ": "JWT"})),
    st.fixed_dictionaries(
        {"alg": st.sampled_from(["HS256", "none", "None", "RS256", "HS512", ""]) | scalars},
        optional={"typ": scalars, "kid": claim_values, "crit": claim_values, "b64": scalars},
    ).map(as_json),
    st.binary(max_size=40),
)
token_payloads = claims.map(as_json) | json_values.map(as_json) | st.binary(max_size=60)
token_recipes = st.builds(TokenRecipe, token_headers, token_payloads, st.booleans(), st.binary(max_size=40))


# --- properties -------------------------------------------------------------------------------


@FUZZ
@given(frame=st.binary(max_size=2_000))
async def test_random_bytes_as_binary_frames(any_socket: Prober, frame: bytes) -> None:
    """Binary frames are MessagePack whatever the socket's format; replies come in its format."""
    await any_socket.garbage(frame)


@FUZZ
@given(frame=st.text(TEXT, max_size=2_000) | mutated_json)
async def test_random_text_as_text_frames(any_socket: Prober, frame: str) -> None:
    """Text frames are JSON whatever the socket's format."""
    await any_socket.garbage(frame)


@FUZZ
@given(value=any_json(json_values))
async def test_random_json_values(json_socket: Prober, value: Any) -> None:
    frame = json.dumps(value, ensure_ascii=False)
    reply = await json_socket.garbage(frame)
    if not isinstance(value, dict):
        assert reply.get("details") == {"field": "$"}, reply


@FUZZ
@given(case=wrong_field_cases(), extra=st.dictionaries(st.text(TEXT, max_size=8), json_values, max_size=3))
async def test_valid_type_with_wrong_field(any_socket: Prober, case: Case, extra: dict[str, Any]) -> None:
    """The reply names the offending field; unknown extra fields change nothing."""
    frame, blame = case
    assume(not set(extra) & set(FIELD_NAMES))
    full = {**frame, **extra}
    data = _msgpack.encode(full) if any_socket.msgpack else json.dumps(full, ensure_ascii=False)
    reply = await any_socket.garbage(data)
    details = reply.get("details")
    assert isinstance(details, dict), reply
    assert details["field"] == blame or details["field"].startswith(blame + "["), (full, reply)


@FUZZ
@given(case=registered_frames())
async def test_every_registered_type_with_random_fields(
    any_socket: Prober, case: tuple[dict[str, Any], set[str]]
) -> None:
    """Whatever modules register, a frame of their type that fails validation blames one of its fields."""
    frame, names = case
    data = _msgpack.encode(frame) if any_socket.msgpack else json.dumps(frame, ensure_ascii=False)
    reply = await any_socket.garbage(data)
    details = reply.get("details")
    assert isinstance(details, dict), reply
    assert re.split(r"[.\[]", details["field"])[0] in names, (frame, reply)


@FUZZ
@given(
    frame=st.binary(max_size=2_000)
    | mutated_msgpack
    | any_json(msgpack_values).map(_msgpack.encode)
    | deep(msgpack_values).map(_msgpack.encode)
)
async def test_msgpack_garbage_in_msgpack_mode(msgpack_socket: Prober, frame: bytes) -> None:
    await msgpack_socket.garbage(frame)


@FUZZ
@given(frames=st.lists(st.binary(max_size=200) | st.text(TEXT, max_size=200), min_size=1, max_size=10))
async def test_bursts_of_garbage_keep_order(json_socket: Prober, frames: list[Frame]) -> None:
    """Several garbage frames back to back: one error each, in order, then the pong."""
    for frame in frames:
        assume(not is_valid_frame(frame))
    ws = await json_socket.open()
    for index, frame in enumerate(frames):
        await ws.send(frame)
        # A frame with a readable id after each one pins the order of the replies.
        await ws.send(json.dumps({"type": "nope", "id": f"marker-{index}"}))
    replies = await json_socket.exchange(json.dumps({"type": "nope", "id": "last"}))
    assert len(replies) == 2 * len(frames) + 1, replies
    for index, frame in enumerate(frames):
        assert_bad_request([replies[2 * index]], frame)
        assert replies[2 * index + 1]["id"] == f"marker-{index}", replies
    assert replies[-1]["id"] == "last"


@FUZZ
@given(token=st.text(TEXT, max_size=300) | token_recipes)
async def test_auth_frames_with_garbage_tokens(any_socket: Prober, token: str | TokenRecipe) -> None:
    """A string token is well-formed: the server checks it and answers 401-style, socket open (a NUL
    character, refused in every string, is a bad_request naming the field)."""
    secret = any_socket.target.settings.jwt_secret
    text = token.token(secret) if isinstance(token, TokenRecipe) else token
    frame = any_socket.encode({"type": "auth", "id": "renew", "token": text})
    replies = await any_socket.exchange(frame)
    assert len(replies) == 1, replies
    reply = replies[0]
    if "\x00" in text:
        assert reply["type"] == "error" and reply["code"] == "bad_request", reply
        assert reply["details"] == {"field": "token"}, reply
    else:
        assert reply["type"] == "error" and reply["code"] in AUTH_ERRORS, reply
    assert reply.get("id") == "renew", reply
    assert set(reply) <= ERROR_KEYS, reply
    assert_no_traceback(reply, frame)


ValidCase = tuple[str, dict[str, Any]]


def valid_frames() -> st.SearchStrategy[ValidCase]:
    """(kind, fields) of frames that pass validation but carry odd values; ``epoch=None`` means
    "the socket's real epoch"."""
    user_lists = st.lists(st.uuids().map(str), min_size=1, max_size=500)
    return st.one_of(
        st.tuples(st.just("ping"), st.just({})),
        st.tuples(
            st.just("resume"),
            st.fixed_dictionaries(
                {"epoch": st.none() | st.text(TEXT, max_size=40), "pos": st.integers(0, 2**63 - 1)}
            ),
        ),
        st.tuples(
            st.sampled_from(["presence.watch", "presence.unwatch"]),
            st.fixed_dictionaries({"user_ids": user_lists | user_lists.map(lambda ids: ids[:1] * len(ids))}),
        ),
    )


EXPECTED_REPLY = {
    "ping": {"pong"},
    "resume": {"resumed", "resync_required"},
    "presence.watch": {"ok"},
    "presence.unwatch": {"ok"},
}


@FUZZ
@given(case=valid_frames(), frame_id=st.text(TEXT, max_size=64))
async def test_valid_frames_with_odd_values(any_socket: Prober, case: ValidCase, frame_id: str) -> None:
    """Valid frames with extreme values get exactly one terminal reply carrying their id (a NUL in
    the id is refused like in any string, except by ``resume``, which stores nothing)."""
    kind, fields = case
    if kind == "resume" and fields["epoch"] is None:
        assert any_socket.hello is not None
        fields = {**fields, "epoch": any_socket.hello["epoch"]}
    frame = any_socket.encode({"type": kind, "id": frame_id, **fields})
    assert is_valid_frame(frame)
    replies = await any_socket.exchange(frame)
    assert len(replies) == 1, replies
    if "\x00" in frame_id and kind != "resume":
        assert replies[0]["code"] == "bad_request" and replies[0]["details"] == {"field": "id"}, replies
        assert replies[0].get("id") == frame_id, replies
        return
    assert replies[0]["type"] in EXPECTED_REPLY[kind], replies
    assert replies[0].get("id") == frame_id, replies
    if kind == "presence.watch":
        # Random ids belong to nobody this user shares a conversation with.
        assert {u["status"] for u in replies[0]["users"]} == {"unknown"}, replies


def forged_token(secret: str, **bad: Any) -> str:
    """A token signed with the real secret whose claims no issued token would carry."""
    claims = {
        "sub": str(uuid.uuid4()),
        "sid": str(uuid.uuid4()),
        "typ": "access",
        "jti": "j",
        "iat": 1,
        "exp": 2**40,
        **bad,
    }
    return TokenRecipe(as_json({"alg": "HS256", "typ": "JWT"}), as_json(claims), True, b"").token(secret)


FORGED = {"exp_out_of_range": {"exp": 10**20}, "sid_not_a_string": {"sid": 5}}


@pytest.mark.parametrize("where", ["auth_frame", "upgrade"])
@pytest.mark.parametrize("claims", list(FORGED.values()), ids=list(FORGED))
async def test_signed_token_with_impossible_claims_is_refused(
    target: Target, claims: dict[str, Any], where: str
) -> None:
    """Found while fuzzing tokens: these crashed the socket and the upgrade (OverflowError,
    AttributeError escaping authenticate) until verify checked every claim like input."""
    token = forged_token(target.settings.jwt_secret, **claims)
    if where == "auth_frame":
        prober = Prober(target)
        await prober.open()
        frame = json.dumps({"type": "auth", "id": "renew", "token": token})
        try:
            replies = await prober.exchange(frame)
        finally:
            await prober.close()
        assert len(replies) == 1 and replies[0]["code"] == "invalid_token", replies
    else:
        async with websockets.connect(target.ws_url(token), open_timeout=REPLY_TIMEOUT) as ws:
            reply = json.loads(await asyncio.wait_for(ws.recv(), REPLY_TIMEOUT))
            assert reply["code"] == "invalid_token", reply
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), REPLY_TIMEOUT)
            assert ws.close_code == 4401
    assert not target.crashes.found(), target.crashes.found()


# --- frame size and flooding ------------------------------------------------------------------


@pytest.mark.parametrize("binary", [False, True], ids=["text", "binary"])
async def test_oversized_frame_closes_1009_and_server_survives(target: Target, binary: bool) -> None:
    async with websockets.connect(target.ws_url(), max_size=None) as ws:
        hello = json.loads(await asyncio.wait_for(ws.recv(), REPLY_TIMEOUT))
        assert hello["type"] == "hello"
        payload = json.dumps({"type": "ping", "id": "big", "pad": "x" * 300_000})
        await ws.send(payload.encode() if binary else payload)
        with pytest.raises(ConnectionClosed) as closed:
            async with asyncio.timeout(REPLY_TIMEOUT):
                while True:
                    reply = await ws.recv()
                    assert "pong" not in str(reply)[:100], reply
        assert closed.value.rcvd is not None, closed.value
        assert closed.value.rcvd.code == 1009

    # The server keeps serving: a new socket works, and a frame just under the limit is fine.
    prober = Prober(target)
    await prober.open()
    replies = await prober.exchange(json.dumps({"type": "ping", "id": "near", "pad": "x" * 250_000}))
    assert replies == [{"type": "pong", "id": "near"}]
    await prober.close()
    assert not target.crashes.found(), target.crashes.found()
    # The crash detector does see the server's structured log (so its silence means something).
    assert any(event.get("event") == "ws.connected" for event in target.crashes.structured)


async def test_invalid_utf8_text_frame_closes_1007(target: Target) -> None:
    """A text frame that is not UTF-8 breaks the WebSocket protocol itself: 1007, not bad_request."""
    async with websockets.connect(target.ws_url(), max_size=None) as ws:
        await asyncio.wait_for(ws.recv(), REPLY_TIMEOUT)
        await ws.send(b'{"type":"ping","id":"\xff"}', text=True)
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), REPLY_TIMEOUT)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1007, closed.value
    # uvicorn itself logs this client error with a traceback (logger.exception); nothing else may.
    unexpected = target.crashes.found(allowed="Invalid UTF-8 sequence received from client")
    assert not unexpected, unexpected
    target.crashes.records.clear()

    prober = Prober(target)
    assert await prober.exchange(json.dumps({"type": "ping", "id": "after"})) == [
        {"type": "pong", "id": "after"}
    ]
    await prober.close()


async def test_flood_gets_rate_limited_then_closed_4429(limited_target: Target) -> None:
    async with websockets.connect(limited_target.ws_url(), max_size=None) as ws:
        hello = json.loads(await asyncio.wait_for(ws.recv(), REPLY_TIMEOUT))
        assert hello["type"] == "hello"
        received: list[dict[str, Any]] = []

        async def read() -> None:
            with contextlib.suppress(ConnectionClosed):
                async for data in ws:
                    received.append(json.loads(data))

        reader = asyncio.create_task(read())
        ping = json.dumps({"type": "ping"})
        with pytest.raises(ConnectionClosed):
            async with asyncio.timeout(10):
                # Keep flooding until the server gives up on us.
                for _ in range(50):
                    for _ in range(500):
                        await ws.send(ping)
                    await asyncio.sleep(0)
                pytest.fail("the server never closed the flooding socket")
        await asyncio.wait_for(reader, REPLY_TIMEOUT)
        assert ws.close_code == 4429, (ws.close_code, ws.close_reason)

    # The burst allowance of WS_RATE_LIMIT=200/10s first (refills may add a pong or two later).
    assert [r["type"] for r in received[:200]] == ["pong"] * 200, received[:200]
    limited = [r for r in received if r.get("code") == "rate_limited"]
    assert len(limited) > 200, len(limited)  # close comes only after more than 200 strikes
    assert all(r["type"] in ("pong", "error") for r in received), received
    assert all(r.get("code") == "rate_limited" for r in received if r["type"] == "error")
    assert_no_traceback(limited[-1], ping)
    assert not limited_target.crashes.found(), limited_target.crashes.found()


# --- bugs found here, now fixed ------------------------------------------------------------


@pytest.mark.parametrize("msgpack", [False, True], ids=["json", "msgpack"])
async def test_deeply_nested_frame_keeps_socket_open(target: Target, msgpack: bool) -> None:
    prober = Prober(target, msgpack=msgpack)
    await prober.open()
    # {"type": "ping", "id": "deep", "pad": [[[...]]]} 2,000 deep: 4 KB, far below the frame limit.
    # Built by hand: the encoders themselves refuse such depth.
    depth = 2_000
    frame: Frame
    if msgpack:
        frame = b"\x83\xa4type\xa4ping\xa2id\xa4deep\xa3pad" + b"\x91" * depth + b"\x90"
    else:
        frame = '{"type":"ping","id":"deep","pad":' + "[" * depth + "]" * depth + "}"
    try:
        replies = await prober.exchange(frame)
    finally:
        await prober.close()
    # Accepting the ping (unknown fields are ignored) or refusing it as bad_request are both fine.
    assert len(replies) == 1, replies
    pong = replies[0] == {"type": "pong", "id": "deep"}
    assert pong or (replies[0].get("code") == "bad_request" and replies[0].get("id") in ("deep", None))
    assert not target.crashes.found(), target.crashes.found()


@pytest.mark.parametrize("msgpack", [False, True], ids=["json", "msgpack"])
async def test_invalid_utf8_in_msgpack_string_keeps_socket_open(target: Target, msgpack: bool) -> None:
    prober = Prober(target, msgpack=msgpack)
    await prober.open()
    # {"type": "ping", "id": <a 1-byte str whose byte is not UTF-8>}
    frame = b"\x82\xa4type\xa4ping\xa2id\xa1\x80"
    try:
        replies = await prober.exchange(frame)
    finally:
        await prober.close()
    assert_bad_request(replies, frame)
    assert not target.crashes.found(), target.crashes.found()


async def test_steady_flood_is_closed_4429(limited_target: Target) -> None:
    """20x the allowed rate (400 frames/s against 20/s) for three seconds: that is persisting."""
    async with websockets.connect(limited_target.ws_url(), max_size=None) as ws:
        await asyncio.wait_for(ws.recv(), REPLY_TIMEOUT)
        limited = 0

        async def read() -> None:
            nonlocal limited
            with contextlib.suppress(ConnectionClosed):
                async for data in ws:
                    limited += json.loads(data).get("code") == "rate_limited"

        reader = asyncio.create_task(read())
        ping = json.dumps({"type": "ping"})
        with contextlib.suppress(ConnectionClosed):
            for _ in range(200):  # the burst allowance
                await ws.send(ping)
            loop = asyncio.get_running_loop()
            start = loop.time()
            sent = 0
            while loop.time() - start < 3:
                for _ in range(4):
                    await ws.send(ping)
                    sent += 1
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)
        closed = ws.close_code
        await ws.close()
        await asyncio.wait_for(reader, REPLY_TIMEOUT)
    assert limited > 0, limited  # the flood really was over the limit
    assert closed == 4429, (closed, sent, limited)
