"""The machine-readable protocol: docs/schema.json and docs/asyncapi.yaml.

Both are generated from the registry's types and checked for staleness here; the AsyncAPI document
is validated against AsyncAPI's own JSON Schema (from the npm package ``@asyncapi/specs``, a
devDependency of clients/typescript, installed by this test when missing), and every example frame
and reply against its schema.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import msgspec
import pytest
import yaml
from referencing import Registry
from referencing.jsonschema import DRAFT7, DRAFT202012

from kintsugi_rt.asyncapi import asyncapi_document, asyncapi_yaml
from kintsugi_rt.protocol_doc import (
    CLIENT_FRAME,
    SERVER_FRAME,
    build_registry,
    examples,
    json_schema,
    reply_example,
    requests,
    schema_json,
    server_frames,
)
from kintsugi_rt.socket.protocol import ClientMessage
from kintsugi_rt.socket.registry import SocketContext, SocketFeatures, SocketHandler, SocketRegistry

ROOT = Path(__file__).resolve().parents[1]
TS_CLIENT = ROOT / "clients" / "typescript"
ASYNCAPI_SPEC = TS_CLIENT / "node_modules" / "@asyncapi" / "specs" / "schemas" / "3.0.0.json"

REGISTRY = build_registry()
SCHEMA = json_schema(REGISTRY)
SCHEMA_ID = "urn:kintsugi-rt:schema"


@pytest.fixture(scope="session")
def asyncapi_spec() -> dict[str, Any]:
    """AsyncAPI 3.0.0's JSON Schema; ``npm ci`` in clients/typescript first if it is not installed."""
    if not ASYNCAPI_SPEC.exists():
        npm = shutil.which("npm")
        assert npm is not None, "npm (Node 20+) is needed to install @asyncapi/specs in clients/typescript"
        command = "ci" if (TS_CLIENT / "package-lock.json").exists() else "install"
        subprocess.run([npm, command, "--no-audit", "--no-fund"], cwd=TS_CLIENT, check=True, timeout=600)
    assert ASYNCAPI_SPEC.exists(), f"{ASYNCAPI_SPEC} is missing after npm install"
    spec: dict[str, Any] = json.loads(ASYNCAPI_SPEC.read_text())
    return spec


def _frame_validator(name: str) -> jsonschema.protocols.Validator:
    """A validator for one definition of docs/schema.json (references resolved within it)."""
    registry: Registry[Any] = Registry().with_resource(SCHEMA_ID, DRAFT202012.create_resource(SCHEMA))
    return jsonschema.Draft202012Validator(
        {"$ref": f"{SCHEMA_ID}#/$defs/{name}"},
        registry=registry,
        format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER,
    )


def _refs(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "$ref" and isinstance(item, str):
                yield item
            else:
                yield from _refs(item)
    elif isinstance(value, list):
        for item in value:
            yield from _refs(item)


def _resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


# --- staleness ---------------------------------------------------------------------------------------


def test_schema_json_is_generated_from_the_types() -> None:
    assert (ROOT / "docs" / "schema.json").read_text() == schema_json(REGISTRY), (
        "regenerate with: kintsugi-rt schema > docs/schema.json"
    )


def test_asyncapi_yaml_is_generated_from_the_types() -> None:
    assert (ROOT / "docs" / "asyncapi.yaml").read_text() == asyncapi_yaml(REGISTRY), (
        "regenerate with: kintsugi-rt asyncapi > docs/asyncapi.yaml"
    )


def test_asyncapi_command_prints_the_document() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "kintsugi_rt", "asyncapi"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert yaml.safe_load(result.stdout) == asyncapi_document(REGISTRY)


def test_generation_is_deterministic() -> None:
    again = build_registry()
    assert schema_json(again) == schema_json(REGISTRY)
    assert asyncapi_yaml(again) == asyncapi_yaml(REGISTRY)


# --- docs/schema.json --------------------------------------------------------------------------------


def test_schema_is_a_valid_draft_2020_12_schema() -> None:
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    for ref in _refs(SCHEMA):
        _resolve(SCHEMA, ref)  # every reference points at a definition
    assert list(SCHEMA["$defs"]) == sorted(SCHEMA["$defs"])


def test_every_request_has_its_reply_schema() -> None:
    """Each client frame maps to its replies; every handler's ``ok`` reply has a definition of its own."""
    listed = SCHEMA["x-requests"]
    assert set(REGISTRY.handlers) <= set(listed)
    assert {"auth", "ping", "resume"} <= set(listed)
    for name, entry in listed.items():
        assert entry["frame"] in SCHEMA["$defs"], name
        assert entry["replies"], name
        for reply in entry["replies"]:
            assert reply in SCHEMA["$defs"], (name, reply)
    for name, handler in REGISTRY.handlers.items():
        reply = SCHEMA["$defs"][f"{handler.message.__name__}Reply"]
        assert listed[name]["replies"] == [f"{handler.message.__name__}Reply"]
        assert reply["properties"]["type"] == {"enum": ["ok"]}
        assert reply["required"][:2] == ["type", "id"]
        result = REGISTRY.replies[name]
        fields = [] if result is None else list(result.__struct_encode_fields__)
        assert list(reply["properties"])[2:] == fields, name
        assert listed[name]["result"] == (None if result is None else result.__name__)
    assert SCHEMA["x-requests"]["ping"]["replies"] == ["Pong"]
    assert SCHEMA["x-requests"]["resume"]["replies"] == ["Resumed", "ResyncRequired"]


def test_durable_events_carry_pos_in_their_schema() -> None:
    for frame in server_frames(REGISTRY):
        definition = SCHEMA["$defs"][frame.message.__name__]
        assert SCHEMA["x-events"][frame.name] == {
            "frame": frame.message.__name__,
            "durable": frame.durable,
        }
        if frame.durable:
            assert list(definition["properties"])[:2] == ["type", "pos"], frame.name
            assert definition["required"][:2] == ["type", "pos"], frame.name
    for event in REGISTRY.events:
        if not event.durable:
            assert "pos" not in SCHEMA["$defs"][event.message.__name__]["properties"], event.message


def test_the_error_frame_lists_every_code() -> None:
    code = SCHEMA["$defs"]["Error"]["properties"]["code"]
    assert code["enum"] == list(SCHEMA["x-error-codes"])
    assert set(REGISTRY.error_codes) <= set(code["enum"])
    assert {"bad_request", "rate_limited", "unavailable", "invalid_token"} <= set(code["enum"])
    assert code["x-enumDescriptions"] == SCHEMA["x-error-codes"]
    assert _frame_validator("Error").is_valid({"type": "error", "code": "bad_request", "message": "x"})
    assert not _frame_validator("Error").is_valid({"type": "error", "code": "no_such_code", "message": "x"})
    assert "4401" in SCHEMA["x-close-codes"]
    assert set(SCHEMA["x-close-reasons"]) <= set(SCHEMA["x-close-codes"])


def test_every_example_frame_matches_its_schema() -> None:
    """The examples of docs/protocol.md: client frames, durable events with ``pos``, and replies."""
    client = _frame_validator(CLIENT_FRAME)
    server = _frame_validator(SERVER_FRAME)
    client_names = {entry["frame"] for entry in SCHEMA["x-requests"].values()}
    checked = 0
    for name, payloads in examples(REGISTRY).items():
        validator = _frame_validator(name)
        for payload in payloads:
            errors = [e.message for e in validator.iter_errors(payload)]
            assert not errors, (name, payload, errors)
            assert (client if name in client_names else server).is_valid(payload), (name, payload)
            checked += 1
    assert checked >= len(REGISTRY.handlers) + len(REGISTRY.events)


def test_every_result_example_matches_its_reply() -> None:
    with_results = [r for r in requests(REGISTRY) if r.result_example is not None]
    assert len(with_results) >= 5
    for request in with_results:
        reply = reply_example(request)
        assert reply is not None and request.reply_name is not None, request.name
        errors = [e.message for e in _frame_validator(request.reply_name).iter_errors(reply)]
        assert not errors, (request.name, errors)
        assert request.result is not None, f"{request.name} has a result example but no result type"
        # ... and it is what the handler's result type encodes to.
        msgspec.json.decode(msgspec.json.encode(request.result_example), type=request.result)


# --- the registry refuses a frame whose reply is not documented ---------------------------------------


class _Probe(ClientMessage, tag="test.probe"):
    pass


class _Result(msgspec.Struct):
    count: int


class _Clashing(msgspec.Struct):
    id: str


class _Probes:
    async def documented(self, conn: SocketContext, message: _Probe) -> _Result:
        return _Result(count=1)

    async def bare(self, conn: SocketContext, message: _Probe) -> None:
        return None

    async def untyped(self, conn: SocketContext, message: _Probe):  # type: ignore[no-untyped-def]
        return None

    async def as_dict(self, conn: SocketContext, message: _Probe) -> dict[str, Any]:
        return {}

    async def clashing(self, conn: SocketContext, message: _Probe) -> _Clashing:
        return _Clashing(id="x")


def _register(handle: Any) -> SocketRegistry:
    return SocketRegistry([], [SocketFeatures(handlers=(SocketHandler(_Probe, handle, _Probe(id="t1")),))])


def test_the_reply_type_is_the_handlers_return_annotation() -> None:
    probes = _Probes()
    assert _register(probes.documented).replies == {"test.probe": _Result}
    assert _register(probes.bare).replies == {"test.probe": None}


@pytest.mark.parametrize(
    ("handler", "problem"),
    [
        ("untyped", "needs a return annotation"),
        ("as_dict", "annotate it with one msgspec Struct class"),
        ("clashing", r"fields \['id'\], which the ok frame carries itself"),
    ],
)
def test_a_handler_without_a_documented_reply_cannot_be_registered(handler: str, problem: str) -> None:
    with pytest.raises(ValueError, match=f"test.probe: .*{problem}"):
        _register(getattr(_Probes(), handler))


# --- docs/asyncapi.yaml ------------------------------------------------------------------------------


def test_asyncapi_document_is_valid_asyncapi_3(asyncapi_spec: dict[str, Any]) -> None:
    document = yaml.safe_load((ROOT / "docs" / "asyncapi.yaml").read_text())
    validator = jsonschema.Draft7Validator(asyncapi_spec)
    errors = [f"{list(e.absolute_path)}: {e.message[:300]}" for e in validator.iter_errors(document)]
    assert not errors, errors[:5]
    # It would catch a mistake: an operation with an unknown action.
    broken = {
        **document,
        "operations": {"send.ping": {"action": "post", "channel": {"$ref": "#/channels/ws"}}},
    }
    assert not validator.is_valid(broken)


def test_asyncapi_document_is_whole() -> None:
    """Every reference resolves; each client frame is a ``send`` with its reply, each server frame a
    ``receive``; each message's examples match its payload (read as AsyncAPI's draft-07 schemas)."""
    document = asyncapi_document(REGISTRY)
    assert document["asyncapi"] == "3.0.0"
    for ref in _refs(document):
        _resolve(document, ref)
    channel = document["channels"]["ws"]
    assert channel["address"] == "/ws"
    binding = channel["bindings"]["ws"]
    assert "token" in binding["query"]["properties"]
    assert "kintsugi.msgpack" in binding["headers"]["properties"]["Sec-WebSocket-Protocol"]["enum"]
    assert set(channel["x-close-codes"]) == set(SCHEMA["x-close-codes"])
    assert "4401" in document["info"]["description"]

    operations = document["operations"]
    for name, entry in SCHEMA["x-requests"].items():
        operation = operations[f"send.{name}"]
        assert operation["action"] == "send"
        assert operation["messages"] == [{"$ref": f"#/channels/ws/messages/{entry['frame']}"}]
        replies = [ref["$ref"].rsplit("/", 1)[1] for ref in operation["reply"]["messages"]]
        assert replies == [*entry["replies"], "Error"]
    for name, entry in SCHEMA["x-events"].items():
        operation = operations[f"receive.{name}"]
        assert operation["action"] == "receive"
        assert operation["messages"] == [{"$ref": f"#/channels/ws/messages/{entry['frame']}"}]
        assert document["components"]["messages"][entry["frame"]]["x-durable"] == entry["durable"]

    registry: Registry[Any] = Registry().with_resource(
        "urn:kintsugi-rt:asyncapi", DRAFT7.create_resource(document)
    )
    for name, message in document["components"]["messages"].items():
        validator = jsonschema.Draft7Validator(
            {"$ref": f"urn:kintsugi-rt:asyncapi{message['payload']['$ref']}"}, registry=registry
        )
        for sample in message.get("examples", []):
            errors = [e.message for e in validator.iter_errors(sample["payload"])]
            assert not errors, (name, errors)
    # The error message describes every code.
    assert "`invalid_token`" in document["components"]["messages"]["Error"]["description"]


def test_the_ok_reply_schema_matches_what_a_result_encodes_to() -> None:
    """The reply schema describes the wire frame: ``type`` "ok", ``id``, the result's fields (as the
    gateway builds it: ``msgspec.to_builtins`` of the result beside them)."""
    request = next(r for r in requests(REGISTRY) if r.name == "chat.send")
    assert request.result is not None and request.result_example is not None
    result = msgspec.convert(request.result_example, request.result, strict=False)
    frame = {"type": "ok", "id": "c5", **msgspec.to_builtins(result)}
    assert _frame_validator("ChatSendReply").is_valid(frame)
    assert not _frame_validator("ChatSendReply").is_valid({"type": "ok", "id": "c5"})
    assert not _frame_validator("ChatSendReply").is_valid({**frame, "type": "error"})
    assert uuid.UUID(frame["message_id"])
