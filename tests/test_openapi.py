"""``/openapi.json``: valid OpenAPI 3.1, complete (every route of the app), committed as
docs/openapi.json, and true to what the routes answer; and the one error shape of REST and socket."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import msgspec
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate
from starlette.routing import Route, WebSocketRoute

from kintsugi_rt.app import create_app, openapi_document
from kintsugi_rt.errors import ErrorBody
from kintsugi_rt.openapi import render
from kintsugi_rt.settings import Settings
from kintsugi_rt.socket.protocol import Error
from kintsugi_rt.wiring import build_services, documentation_settings
from tests.support import serve_node
from tests.wsclient import PASSWORD, Socket, new_user

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = ROOT / "docs" / "openapi.json"


def offline_document() -> dict[str, Any]:
    return openapi_document(build_services(documentation_settings()))


def check(document: dict[str, Any], name: str, instance: Any) -> None:
    """``instance`` is valid against the document's component schema ``name``."""
    schema = {"$ref": f"#/components/schemas/{name}", "components": document["components"]}
    errors = sorted(Draft202012Validator(schema).iter_errors(instance), key=str)
    assert not errors, (name, instance, [e.message for e in errors])


def test_the_document_is_valid_openapi_and_committed() -> None:
    document = offline_document()
    validate(document)  # the OpenAPI 3.1 specification, by openapi-spec-validator
    assert COMMITTED.read_text() == render(document), (
        "regenerate with: kintsugi-rt openapi > docs/openapi.json"
    )


def test_the_cli_prints_the_committed_document() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "kintsugi_rt", "openapi"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout == COMMITTED.read_text()


def test_every_route_of_the_app_is_in_the_document() -> None:
    """A route added without its description (a plain starlette ``Route``) fails here."""
    app = create_app(documentation_settings())  # builds the node; nothing is opened before start-up
    paths = offline_document()["paths"]
    seen = 0
    for route in app.routes:
        if isinstance(route, WebSocketRoute):
            continue  # the socket: docs/protocol.md
        assert isinstance(route, Route), route
        for method in sorted(route.methods or ()):
            if method == "HEAD":
                continue
            assert method.lower() in paths.get(route.path_format, {}), (
                f"{method} {route.path} is undocumented"
            )
            seen += 1
    documented = sum(len(operations) for operations in paths.values())
    assert seen == documented
    assert {"/api/auth/register", "/api/billing/plans", "/metrics", "/openapi.json"} <= set(paths)


def test_operations_name_their_errors_and_security() -> None:
    document = offline_document()
    paths = document["paths"]
    me = paths["/api/auth/me"]["get"]
    assert me["security"] == [{"bearer": []}]
    assert me["responses"]["401"]["x-error-codes"] == [
        "unauthorized",
        "invalid_token",
        "token_expired",
        "session_revoked",
    ]
    register = paths["/api/auth/register"]["post"]
    assert "security" not in register
    assert register["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/RegisterRequest"
    }
    assert register["responses"]["409"]["x-error-codes"] == ["email_taken"]
    assert register["responses"]["422"]["x-error-codes"] == ["validation_failed"]
    assert register["responses"]["503"]["x-error-codes"] == ["unavailable"]
    checkout = paths["/api/billing/checkout"]["post"]
    assert checkout["responses"]["503"]["x-error-codes"] == ["billing_disabled", "unavailable"]
    metrics = paths["/metrics"]["get"]
    assert metrics["security"] == [{}, {"metrics": []}]
    assert "text/plain" in next(iter(metrics["responses"]["200"]["content"]))
    plans = paths["/api/billing/plans"]["get"]
    assert "security" not in plans and "503" not in plans["responses"]
    schemes = document["components"]["securitySchemes"]
    assert schemes["bearer"] == {
        **schemes["bearer"],
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
    }


def test_socket_error_frames_and_rest_errors_have_the_same_members() -> None:
    rest = {f.name: f.type for f in msgspec.structs.fields(ErrorBody)}
    socket = {f.name: f.type for f in msgspec.structs.fields(Error) if f.name != "id"}
    assert set(rest) == set(socket)


async def test_the_served_document_is_the_committed_one_and_tells_the_truth(
    settings_for: Callable[..., Settings],
) -> None:
    async with serve_node(settings_for()) as node, httpx.AsyncClient(base_url=node.url, timeout=10) as http:
        served = await http.get("/openapi.json")
        assert served.status_code == 200 and served.headers["content-type"] == "application/json"
        document = served.json()
        assert document == json.loads(COMMITTED.read_text())

        email = f"doc-{node.url.rsplit(':', 1)[1]}@example.com"
        registered = await http.post(
            "/api/auth/register", json={"email": email, "password": PASSWORD, "display_name": "Doc"}
        )
        assert registered.status_code == 201
        check(document, "TokenPair", registered.json())
        bearer = {"Authorization": f"Bearer {registered.json()['access_token']}"}
        check(document, "User", (await http.get("/api/auth/me", headers=bearer)).json())
        check(document, "Plans", (await http.get("/api/billing/plans")).json())
        check(document, "Health", (await http.get("/healthz")).json())
        check(document, "Readiness", (await http.get("/readyz")).json())
        refused = await http.post("/api/auth/register", json={"email": email, "password": 5})
        assert refused.status_code == 422
        check(document, "ErrorEnvelope", refused.json())
        disabled = await http.get("/api/billing/subscription", headers=bearer)
        assert disabled.status_code == 503
        check(document, "ErrorEnvelope", disabled.json())
        check(document, "SessionsRevoked", (await http.post("/api/auth/logout-all", headers=bearer)).json())


async def test_a_field_at_fault_is_named_the_same_way_on_rest_and_socket(
    settings_for: Callable[..., Settings],
) -> None:
    """One error shape: ``code``, ``message``, ``fields`` (path -> reason); the socket keeps its
    ``details.field`` beside ``fields`` for clients that read it."""
    async with serve_node(settings_for()) as node, httpx.AsyncClient(base_url=node.url, timeout=10) as http:
        rest = (await http.post("/api/auth/refresh", json={"refresh_token": 7})).json()["error"]
        assert rest["code"] == "validation_failed" and set(rest["fields"]) == {"refresh_token"}
        user = await new_user(node.url)
        sock = await Socket.open(node.ws_url, user.token)
        await sock.expect("hello")
        frame = await sock.request("presence.watch", user_ids="nope")
        assert frame["type"] == "error" and frame["code"] == "bad_request", frame
        assert frame["details"] == {"field": "user_ids"}
        assert frame["fields"] == {"user_ids": frame["message"]}
        assert set(frame) - {"type", "id"} <= set(rest) | {"details", "retry_after_ms"}
        await sock.close()
