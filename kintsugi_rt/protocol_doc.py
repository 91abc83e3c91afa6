"""The protocol, described from the msgspec types of the registry it is given.

``kintsugi-rt schema`` prints one JSON Schema (draft 2020-12) of every frame, every request's reply
and every server event (``docs/schema.json``); ``kintsugi-rt protocol-doc`` prints
``docs/protocol.md``; ``kintsugi_rt.asyncapi`` builds ``docs/asyncapi.yaml`` from the same schema.
Tests check the committed files match, so they cannot drift from the code.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass
from typing import Any

import msgspec

from kintsugi_rt.socket import protocol
from kintsugi_rt.socket.codec import encode_json
from kintsugi_rt.socket.examples import CORE_CLIENT_EXAMPLES, CORE_SERVER_EXAMPLES
from kintsugi_rt.socket.protocol import ClientMessage, ServerMessage
from kintsugi_rt.socket.registry import SocketRegistry, message_type

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
# The union definitions beside the frames' own (every client frame; every server frame and reply).
CLIENT_FRAME = "ClientFrame"
SERVER_FRAME = "ServerFrame"
# The position given to durable events in examples (each recipient's stream has its own).
EXAMPLE_POS = 42


def build_registry() -> SocketRegistry:
    """The registry a node builds (every module's frames and examples), without starting anything."""
    from kintsugi_rt.wiring import build_services, documentation_settings

    return build_services(documentation_settings()).registry


# --- the protocol as a list of requests and server frames ------------------------------------------


@dataclass(frozen=True, slots=True)
class Request:
    """A client frame, its example, and what answers it when it carries ``id``."""

    message: type[ClientMessage]
    example: ClientMessage
    # The fields of its ``ok`` reply (None: a bare ``ok``), and an example of them.
    result: type[msgspec.Struct] | None = None
    result_example: dict[str, Any] | None = None
    # Frames that answer it instead of ``ok`` (``ping``, ``resume``).
    answers: tuple[type[ServerMessage], ...] = ()

    @property
    def name(self) -> str:
        """The frame's ``type`` on the wire."""
        return message_type(self.message)

    @property
    def reply_name(self) -> str | None:
        """The name of its ``ok`` reply's schema, ``<Frame>Reply``; None if ``ok`` never answers it."""
        return None if self.answers else f"{self.message.__name__}Reply"


@dataclass(frozen=True, slots=True)
class ServerFrame:
    """A frame the server sends of its own accord or as a core reply; ``durable`` ones carry ``pos``."""

    message: type[ServerMessage]
    example: ServerMessage
    durable: bool = False

    @property
    def name(self) -> str:
        """The frame's ``type`` on the wire."""
        return message_type(self.message)


# How the gateway answers its own frames: ``auth`` with ``ok``, the others with frames of their own.
_CORE_RESULTS: dict[type[ClientMessage], type[msgspec.Struct]] = {protocol.Auth: protocol.Renewed}
_CORE_ANSWERS: dict[type[ClientMessage], tuple[type[ServerMessage], ...]] = {
    protocol.Ping: (protocol.Pong,),
    protocol.Resume: (protocol.Resumed, protocol.ResyncRequired),
}

# Codes of the REST API that also reach the socket: a token refused on connect or by ``auth``.
_AUTH_ERROR_CODES = {
    "invalid_token": "The token is malformed, forged or not an access token (REST code): on connect "
    "the server closes with 4401 next; as the reply to ``auth`` the connection stays open.",
}


def requests(registry: SocketRegistry) -> list[Request]:
    """Every client frame: the gateway's own, then each module's in registration order."""
    core = [
        Request(
            type(example),
            example,
            result=_CORE_RESULTS.get(type(example)),
            result_example=result,
            answers=_CORE_ANSWERS.get(type(example), ()),
        )
        for example, result in CORE_CLIENT_EXAMPLES
    ]
    features = [
        Request(handler.message, handler.example, registry.replies[name], handler.result_example)
        for name, handler in registry.handlers.items()
    ]
    return [*core, *features]


def server_frames(registry: SocketRegistry) -> list[ServerFrame]:
    """Every frame the server sends besides ``ok``: the gateway's own, then each module's events."""
    return [
        *(ServerFrame(type(m), m) for m in CORE_SERVER_EXAMPLES),
        *(ServerFrame(e.message, e.example, e.durable) for e in registry.events),
    ]


def error_codes(registry: SocketRegistry) -> dict[str, str]:
    """Every ``error`` code the socket may send, with its meaning."""
    return {**protocol.ERROR_CODES, **_AUTH_ERROR_CODES, **registry.error_codes}


def frame_data(message: msgspec.Struct, durable: bool = False) -> dict[str, Any]:
    """A frame as it is on the wire (JSON), ``pos`` first on durable events."""
    data: dict[str, Any] = msgspec.json.decode(encode_json(message))
    if durable:
        data = {"pos": EXAMPLE_POS, **data}
    return data


def reply_example(request: Request) -> dict[str, Any] | None:
    """The example request's ``ok`` reply, when the request has an example result."""
    if request.answers or request.result_example is None or request.example.id is None:
        return None
    return {"type": "ok", "id": request.example.id, **request.result_example}


def examples(registry: SocketRegistry) -> dict[str, list[dict[str, Any]]]:
    """Example wire frames by schema name: each client frame, reply (when given) and server frame."""
    out: dict[str, list[dict[str, Any]]] = {}
    for request in requests(registry):
        out.setdefault(request.message.__name__, []).append(frame_data(request.example))
        reply = reply_example(request)
        if reply is not None and request.reply_name is not None:
            out.setdefault(request.reply_name, []).append(reply)
    for frame in server_frames(registry):
        out.setdefault(frame.message.__name__, []).append(frame_data(frame.example, frame.durable))
    return out


# --- JSON Schema -------------------------------------------------------------------------------------


def json_schema(registry: SocketRegistry) -> dict[str, Any]:
    """One JSON Schema (draft 2020-12) of the whole protocol.

    ``$defs`` holds every client frame (by class name, e.g. ``ChatSend``), the ``ok`` reply of each
    request (``<Frame>Reply``: ``type`` "ok", ``id`` and the result's fields), every server frame
    (durable ones with ``pos``), the types they contain (including each result type), and the unions
    ``ClientFrame`` and ``ServerFrame``. ``x-requests`` maps each client frame's ``type`` to its
    schema and its replies; ``x-events`` each server frame's ``type`` to its schema and durability.
    """
    reqs = requests(registry)
    frames = server_frames(registry)
    results = list(dict.fromkeys(r.result for r in reqs if r.result is not None))
    types: list[Any] = [*(r.message for r in reqs), *(f.message for f in frames), *results]
    refs, components = msgspec.json.schema_components(types, ref_template="#/$defs/{name}")
    name_of = {cls: ref["$ref"].rsplit("/", 1)[1] for cls, ref in zip(types, refs, strict=True)}
    defs: dict[str, Any] = dict(components)

    for frame in frames:
        if frame.durable:
            defs[name_of[frame.message]] = _with_position(defs[name_of[frame.message]])
    error_name = name_of[protocol.Error]
    defs[error_name] = _with_error_codes(defs[error_name], error_codes(registry))

    replies: list[str] = []
    for request in reqs:
        if request.reply_name is None:
            continue
        if request.reply_name in defs:
            raise ValueError(f"{request.reply_name}: a type of that name exists; rename it")
        result = None if request.result is None else defs[name_of[request.result]]
        defs[request.reply_name] = _ok_schema(request, result)
        replies.append(request.reply_name)

    for union in (CLIENT_FRAME, SERVER_FRAME):
        if union in defs:
            raise ValueError(f"{union}: a type of that name exists; rename it")
    defs[CLIENT_FRAME] = {
        "title": CLIENT_FRAME,
        "description": "Any frame a client sends; ``type`` tells which.",
        "anyOf": [_ref(name_of[r.message]) for r in reqs],
    }
    defs[SERVER_FRAME] = {
        "title": SERVER_FRAME,
        "description": 'Any frame the server sends. Every reply has ``type`` "ok": match its ``id`` '
        "to the request (``x-requests`` names each request's reply).",
        "anyOf": [*(_ref(name_of[f.message]) for f in frames), *(_ref(name) for name in replies)],
    }
    return {
        "$schema": SCHEMA_DIALECT,
        "title": "Kintsugi RT socket protocol",
        "description": "Frames on GET /ws: JSON text frames, or MessagePack binary frames (subprotocol "
        "kintsugi.msgpack). Every request carrying `id` gets exactly one terminal reply with that "
        "`id`: the schema named in `x-requests` (its `ok` reply, or `pong`, `resumed` / "
        "`resync_required` for the gateway's own frames), or `Error`. `x-events` lists every frame the "
        "server sends besides `ok` (durable ones carry `pos`). See docs/protocol.md.",
        "anyOf": [_ref(CLIENT_FRAME), _ref(SERVER_FRAME)],
        "x-requests": {
            r.name: {
                "frame": name_of[r.message],
                "replies": [r.reply_name] if r.reply_name else [name_of[a] for a in r.answers],
                "result": None if r.result is None else name_of[r.result],
            }
            for r in reqs
        },
        "x-events": {f.name: {"frame": name_of[f.message], "durable": f.durable} for f in frames},
        "x-error-codes": error_codes(registry),
        "x-close-codes": {str(code): text for code, text in protocol.CLOSE_CODES.items()},
        "x-close-reasons": close_reasons(),
        "$defs": dict(sorted(defs.items())),
    }


def close_reasons() -> dict[str, str]:
    """The reason text sent beside each close code we send (codes as strings, as in JSON)."""
    return {
        str(code): protocol.close_reason(code) for code in protocol.CLOSE_CODES if protocol.close_reason(code)
    }


def schema_json(registry: SocketRegistry) -> str:
    """``docs/schema.json``: the JSON Schema, two-space indented, keys in a fixed order."""
    return json.dumps(json_schema(registry), indent=2, ensure_ascii=False) + "\n"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/$defs/{name}"}


def _with_position(schema: dict[str, Any]) -> dict[str, Any]:
    """A durable event's schema: ``pos`` (its position in the user's stream) right after ``type``."""
    position = {
        **msgspec.json.schema(protocol.Position),
        "description": "The event's position in the user's stream; give the last one processed to "
        "`resume` (see docs/delivery.md).",
    }
    properties = dict(schema["properties"])
    tag = {"type": properties.pop("type")}
    required = [name for name in schema.get("required", []) if name != "type"]
    return {
        **schema,
        "properties": {**tag, "pos": position, **properties},
        "required": ["type", "pos", *required],
    }


def _with_error_codes(schema: dict[str, Any], codes: dict[str, str]) -> dict[str, Any]:
    properties = dict(schema["properties"])
    properties["code"] = {
        "type": "string",
        "enum": list(codes),
        "description": "What went wrong; a stable name (`x-enumDescriptions` says what each means).",
        "x-enumDescriptions": codes,
    }
    return {**schema, "properties": properties}


def _ok_schema(request: Request, result: dict[str, Any] | None) -> dict[str, Any]:
    """The ``ok`` frame answering ``request``: ``type``, ``id`` and the result's fields beside them."""
    properties: dict[str, Any] = {
        "type": {"enum": ["ok"]},
        "id": {"type": "string", "maxLength": 64, "description": "The request's `id`."},
    }
    required = ["type", "id"]
    description = f"The `ok` reply to `{request.name}`."
    if result is not None and request.result is not None:
        properties.update(result.get("properties", {}))
        # Fields with defaults are left out only by a Struct with omit_defaults.
        if request.result.__struct_config__.omit_defaults:
            required += result.get("required", [])
        else:
            required += list(request.result.__struct_encode_fields__)
        if result.get("description"):
            description += " " + result["description"]
    else:
        description += " It carries no other fields."
    return {
        "title": request.reply_name,
        "description": description,
        "type": "object",
        "properties": properties,
        "required": required,
    }


# --- docs/protocol.md --------------------------------------------------------------------------------


def _frame(message: msgspec.Struct, durable: bool = False) -> str:
    return msgspec.json.encode(frame_data(message, durable)).decode()


def class_doc(cls: type) -> str:
    """The class's own docstring (not an inherited one), on one line."""
    return " ".join(inspect.cleandoc(cls.__dict__.get("__doc__") or "").split())


def _type_text(schema: dict[str, Any]) -> str:
    """A field's JSON Schema, in a few words: ``string (uuid)``, ``Message[]``, ``"a" or "b"``."""
    if "$ref" in schema:
        return f"`{schema['$ref'].rsplit('/', 1)[1]}`"
    if "anyOf" in schema:
        return " or ".join(_type_text(option) for option in schema["anyOf"])
    if "enum" in schema:
        return " or ".join(f"`{json.dumps(value)}`" for value in schema["enum"])
    kind = schema.get("type", "any")
    if kind == "array":
        return f"{_type_text(schema.get('items', {}))}[]"
    if kind == "object" and "additionalProperties" in schema:
        return f"map of {_type_text(schema['additionalProperties'])}"
    if "format" in schema:
        return f"{kind} ({schema['format']})"
    return str(kind)


def _reply_lines(request: Request, reply_schema: dict[str, Any] | None) -> list[str]:
    """What answers a request in docs/protocol.md: the example reply, else the reply's fields."""
    if request.answers:
        names = " or ".join(f"`{message_type(cls)}`" for cls in request.answers)
        return [f"Reply: {names}.", ""]
    example = reply_example(request)
    if example is not None:
        return ["Reply:", "", "```json", msgspec.json.encode(example).decode(), "```", ""]
    assert reply_schema is not None
    fields = {k: v for k, v in reply_schema["properties"].items() if k not in ("type", "id")}
    if not fields:
        return ["Reply: `ok` with no other fields.", ""]
    required = set(reply_schema["required"])
    lines = ["Reply: `ok` with", ""]
    for name, schema in fields.items():
        optional = "" if name in required else " (optional)"
        lines.append(f"- `{name}`: {_type_text(schema)}{optional}")
    return [*lines, ""]


_INTRO = """# Socket protocol

<!-- Generated by `kintsugi-rt protocol-doc` from the msgspec types; do not edit by hand. -->

One WebSocket per client at `GET /ws`. Every frame is an object whose `type` names it. Text frames
carry JSON; ask for the `kintsugi.msgpack` subprotocol to use MessagePack binary frames both ways. A
client frame may carry `id` (a string of at most 64 characters): it then gets exactly one terminal
reply, `ok` (the result's fields beside `type` and `id`) or `error` (`resume` answers with `resumed`
or `resync_required` instead). Frames the server pushes on its own carry no `id`. Unknown fields are
ignored. Durable events carry `pos`, their position in the user's stream; see `docs/delivery.md`.

Every request frame with an `id` gets exactly one reply carrying that `id`, whatever happens to it:
refused by the rate limit (`rate_limited`), malformed (`bad_request`), failed because the database or
Redis is down (`unavailable`, nothing changed), or handled. Retryable errors carry `retry_after_ms`.
A request whose change was committed is always answered `ok`, even when delivering its events to
other sockets has to wait for Redis to come back.

Every string must be free of NUL characters, every integer within its field's bounds (at most
PostgreSQL's bigint), every date between years 0001 and 9999: otherwise `bad_request` names the field.

The same types, machine-readable: `docs/schema.json` (one JSON Schema of every frame and every
request's reply, `kintsugi-rt schema`) and `docs/asyncapi.yaml` (AsyncAPI 3.0, `kintsugi-rt asyncapi`).
The REST routes are in `GET /openapi.json` (`docs/openapi.json`). `clients/typescript` is a client library
built on them (reconnect and resume, typed requests and events, an outbox).

## Connecting

- `wscat -c "ws://localhost:8080/ws?token=<access token>"`, or an `Authorization: Bearer` header,
  or a first frame `auth` within 10 s (`WS_AUTH_TIMEOUT`).
- The server answers `hello` with the connection id, the stream's `epoch` and `pos`, and the
  token's expiry. Renew before `expires_at` by sending `auth` with a fresh token.
- To catch up after a reconnect, send `resume` with the `epoch` and the last `pos` you processed as
  the first frame. Durable events are held for `resume_grace_ms` or until any other frame arrives
  (`ping`, `auth` and malformed frames included), so the replay comes first and in order.
- Protocol pings every 20 s (`WS_PING_INTERVAL`) drop a silent peer within 40 s; `ping` frames are
  for clients that want an application-level check.
- A user may hold `WS_MAX_SOCKETS_PER_USER` (32) sockets on a node; one more is refused with
  `too_many_connections` and close 4409 (the open ones are never kicked out).
- A connection that cannot go on is always closed, never left silent: 1013 (with `unavailable`)
  when the database is down while connecting or replaying, 1011 for a failure of ours, 4008 for a
  client too far behind. A client that stops reading may not even get the close frame: the server
  drops the TCP connection (1006) once the close cannot be written within 2 s. In every case:
  reconnect with exponential backoff and jitter, then `resume`.
"""

_ERRORS_NOTE = (
    "Auth failures on connect use the REST codes (`invalid_token`, `token_expired`, `session_revoked`)\n"
    "before closing with 4401.\n"
    "\n"
    "An `error` frame has the members of a REST error body (docs/rest.md): `code`, `message`, and when\n"
    "they apply `fields` (field path -> what is wrong with it), `details` and `retry_after_ms`. A\n"
    "`bad_request` naming a field carries both `details.field` and `fields`."
)


def _close_reason_cell(code: int) -> str:
    reason = protocol.close_reason(code)
    if reason:
        return f"`{reason}`"
    return "(none)" if code == protocol.CLOSE_ABNORMAL else "(the WebSocket library's)"


def protocol_markdown(registry: SocketRegistry) -> str:
    schema_defs = json_schema(registry)["$defs"]
    out: list[str] = [_INTRO, "## Client frames", ""]
    for request in requests(registry):
        cls = request.message
        out += [
            f"### `{message_type(cls)}`",
            "",
            class_doc(cls),
            "",
            "```json",
            _frame(request.example),
            "```",
            "",
        ]
        reply_schema = schema_defs[request.reply_name] if request.reply_name else None
        out += _reply_lines(request, reply_schema)
    out += ["## Server frames", ""]
    for frame in server_frames(registry):
        kind = "durable" if frame.durable else "not durable"
        out += [
            f"### `{frame.name}` ({kind})",
            "",
            class_doc(frame.message),
            "",
            "```json",
            _frame(frame.example, frame.durable),
            "```",
            "",
        ]
    out += [
        "### `ok`",
        "",
        class_doc(protocol.Ok),
        "",
        "```json",
        '{"type":"ok","id":"w1","users":[]}',
        "```",
        "",
        "## Error codes",
        "",
        "| code | meaning |",
        "|---|---|",
        *(f"| `{code}` | {text} |" for code, text in error_codes(registry).items()),
        "",
        _ERRORS_NOTE,
        "",
        "## Close codes",
        "",
        "Every close frame we send carries a short reason text beside its code, the same for every",
        "close with that code; the `error` frame sent just before it says more.",
        "",
        "| code | reason | meaning |",
        "|---|---|---|",
        *(f"| {code} | {_close_reason_cell(code)} | {text} |" for code, text in protocol.CLOSE_CODES.items()),
        "",
    ]
    return "\n".join(out)
