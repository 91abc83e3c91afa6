"""The agent builder through real sockets: the tier guard on every frame, create/get/list/update (a new
version each time)/delete, field checks (JSON Schema, duplicate tool names, model, handle), secrets that
never leave the server (frames, logs, the database) and rotate, and agent.test_tool against a local
fake receiver."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from structlog.testing import capture_logs

from kintsugi_rt.agents.secrets import SecretBox, SecretsUnavailable, decode_key, key_id, new_key
from kintsugi_rt.agents.service import rekey
from kintsugi_rt.cli import main
from kintsugi_rt.settings import Settings, SettingsError, load_settings
from tests.fake_webhooks import FakeWebhooks
from tests.support import Node, env_vars, serve_node
from tests.wsclient import Socket, User, new_user

SettingsFor = Callable[..., Settings]
SECRET = "n8n-secret-value-1234"  # FakeWebhooks' n8n secret
FRAMES = ("agent.create", "agent.update", "agent.get", "agent.list", "agent.delete", "agent.test_tool")


class RecordingSocket(Socket):
    """A socket that keeps the raw text of every frame it reads."""

    seen: list[str]

    async def read(self, timeout: float) -> dict[str, Any]:
        frame = await super().read(timeout)
        if not hasattr(self, "seen"):
            self.seen = []
        self.seen.append(repr(frame))
        return frame


async def connect(node: Node, user: User) -> RecordingSocket:
    sock = await RecordingSocket.open(node.ws_url, user.token)
    assert isinstance(sock, RecordingSocket)
    await sock.expect("hello")
    await sock.request("ping")
    return sock


async def set_tier(node: Node, user: User, tier: str) -> None:
    pool = node.services.ctx.db.pool
    await pool.execute("UPDATE users SET tier = $2 WHERE id = $1", uuid.UUID(user.id), tier)


async def ok(sock: Socket, type_: str, **fields: Any) -> dict[str, Any]:
    reply = await sock.request(type_, **fields)
    assert reply["type"] == "ok", reply
    return reply


async def error(sock: Socket, type_: str, code: str, **fields: Any) -> dict[str, Any]:
    reply = await sock.request(type_, **fields)
    assert reply["type"] == "error" and reply["code"] == code, reply
    return reply


def tool(url: str, name: str = "echo", secret: str | None = SECRET, **schema: Any) -> dict[str, Any]:
    endpoint: dict[str, Any] = {"kind": "n8n", "url": url, "header_name": "X-N8N-Key"}
    if secret is not None:
        endpoint["secret"] = secret
    return {
        "name": name,
        "description": "Echo the arguments back.",
        "parameters": schema
        or {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
        "endpoint": endpoint,
    }


def agent_fields(url: str, **more: Any) -> dict[str, Any]:
    return {
        "name": "Echo bot",
        "handle": f"echo_{secrets.token_hex(4)}",
        "model": "offline-demo",
        "instructions": "Repeat things.",
        "tools": [tool(url)],
        **more,
    }


async def test_every_frame_needs_premium_starter(settings_for: SettingsFor) -> None:
    async with serve_node(settings_for()) as node:
        basic = await new_user(node.url, "Basic")
        sock = await connect(node, basic)
        some = str(uuid.uuid4())
        args: dict[str, dict[str, Any]] = {
            "agent.create": agent_fields("https://example.com/hook"),
            "agent.update": {"agent_id": some, "name": "x"},
            "agent.get": {"agent_id": some},
            "agent.list": {},
            "agent.delete": {"agent_id": some},
            "agent.test_tool": {"agent_id": some, "tool": "echo", "arguments": {}},
        }
        for frame in FRAMES:
            refused = await error(sock, frame, "tier_required", **args[frame])
            assert refused["details"]["tier"] == "premium_starter", refused
        await sock.close()


async def test_create_get_list_update_delete(settings_for: SettingsFor, tmp_path: Path) -> None:
    fake = FakeWebhooks()
    url = await fake.start()
    settings = settings_for(AGENT_WEBHOOK_ALLOW="127.0.0.1")
    try:
        with capture_logs() as logs:
            async with serve_node(settings) as node:
                ann, bob = await new_user(node.url, "Ann"), await new_user(node.url, "Bob")
                await set_tier(node, ann, "premium_starter")
                await set_tier(node, bob, "premium_pro")
                a, b = await connect(node, ann), await connect(node, bob)
                fields = agent_fields(f"{url}/n8n", conversation_starters=["Say hi"], temperature=0.5)
                created = (await ok(a, "agent.create", **fields))["agent"]
                assert created["version"] == 1 and created["handle"] == fields["handle"]
                assert created["step_limit"] == 6 and created["temperature"] == 0.5
                endpoint = created["tools"][0]["endpoint"]
                assert endpoint == {
                    "kind": "n8n",
                    "url": f"{url}/n8n",
                    "header_name": "X-N8N-Key",
                    "has_secret": True,
                }
                agent_id = created["id"]

                assert (await ok(a, "agent.get", agent_id=agent_id))["agent"] == created
                assert [x["id"] for x in (await ok(a, "agent.list"))["agents"]] == [agent_id]
                # Someone else's agent does not exist for you.
                await error(b, "agent.get", "not_found", agent_id=agent_id)
                assert (await ok(b, "agent.list"))["agents"] == []
                # The handle is unique among agents whatever its case.
                taken = await error(
                    b, "agent.create", "handle_taken", **{**fields, "handle": fields["handle"].upper()}
                )
                assert taken["details"] == {"field": "handle"}

                # An update is a new version; the tool without a secret keeps its secret.
                updated = (
                    await ok(
                        a,
                        "agent.update",
                        agent_id=agent_id,
                        name="Echo 2",
                        tools=[tool(f"{url}/n8n", secret=None)],
                    )
                )["agent"]
                assert updated["version"] == 2 and updated["version_id"] != created["version_id"]
                assert updated["name"] == "Echo 2" and updated["tools"][0]["endpoint"]["has_secret"]
                old = (await ok(a, "agent.get", agent_id=agent_id, version=1))["agent"]
                assert old["name"] == "Echo bot" and old["version_id"] == created["version_id"]

                # The kept secret still works: the tool answers through the fake n8n receiver.
                tested = await ok(
                    a, "agent.test_tool", agent_id=agent_id, tool="echo", arguments={"text": "hi"}
                )
                assert tested["ok"] is True and tested["status"] == 200, tested
                assert "hi" in tested["body"]
                assert fake.requests[-1].headers["x-n8n-key"] == SECRET
                # Arguments that do not fit the schema are refused before any call.
                calls = len(fake.requests)
                bad = await error(
                    a, "agent.test_tool", "bad_request", agent_id=agent_id, tool="echo", arguments={}
                )
                assert bad["details"]["field"].startswith("arguments"), bad
                await error(a, "agent.test_tool", "not_found", agent_id=agent_id, tool="nope", arguments={})
                assert len(fake.requests) == calls

                # Encrypted at rest: no column holds the plaintext.
                dump = await node.services.ctx.db.pool.fetchval(
                    "SELECT string_agg(config::text, ' ') FROM agent_versions WHERE agent_id = $1",
                    uuid.UUID(agent_id),
                )
                running = await node.services.agents.version_config(uuid.UUID(created["version_id"]))
                assert SECRET not in dump and "v1." in dump

                await ok(a, "agent.delete", agent_id=agent_id)
                await error(a, "agent.get", "not_found", agent_id=agent_id)
                assert (await ok(a, "agent.list"))["agents"] == []
                await error(a, "agent.delete", "not_found", agent_id=agent_id)
                # A running chat still resolves its version after the delete, and the handle is free.
                still = await node.services.agents.version_config(uuid.UUID(created["version_id"]))
                assert running is not None and still is not None and still.version == 1
                await ok(b, "agent.create", **fields)

                for sock in (a, b):
                    assert not any(SECRET in text for text in sock.seen)
                    await sock.close()
        assert any(e.get("event") == "agents.tool_tested" for e in logs), "logs were not captured"
        assert SECRET not in repr(logs), "a secret reached the log"
    finally:
        await fake.stop()


async def test_field_checks(settings_for: SettingsFor) -> None:
    async with serve_node(settings_for()) as node:
        ann = await new_user(node.url, "Ann")
        await set_tier(node, ann, "premium_starter")
        a = await connect(node, ann)
        url = "https://example.com/hook"

        def field_of(reply: dict[str, Any]) -> str:
            field: str = reply["details"]["field"]
            return field

        bad_schema = tool(url, type="object", properties={"x": {"type": "no-such-type"}})
        reply = await error(a, "agent.create", "bad_request", **agent_fields(url, tools=[bad_schema]))
        assert field_of(reply) == "tools[0].parameters"
        remote = tool(url, type="object", properties={"x": {"$ref": "https://example.com/s.json"}})
        reply = await error(a, "agent.create", "bad_request", **agent_fields(url, tools=[remote]))
        assert field_of(reply) == "tools[0].parameters"
        not_object = tool(url, type="string")
        reply = await error(a, "agent.create", "bad_request", **agent_fields(url, tools=[not_object]))
        assert field_of(reply) == "tools[0].parameters"
        huge = tool(url, type="object", description="x" * 17000)
        reply = await error(a, "agent.create", "bad_request", **agent_fields(url, tools=[huge]))
        assert field_of(reply) == "tools[0].parameters"
        twice = [tool(url, name="same"), tool(url, name="same")]
        reply = await error(a, "agent.create", "bad_request", **agent_fields(url, tools=twice))
        assert field_of(reply) == "tools[1].name"
        reply = await error(
            a, "agent.create", "bad_request", **agent_fields(url, tools=[tool(url, name="no spaces")])
        )
        assert "tools" in field_of(reply)
        reply = await error(a, "agent.create", "bad_request", **agent_fields(url, model="gpt-nonexistent"))
        assert field_of(reply) == "model"
        reply = await error(a, "agent.create", "bad_request", **agent_fields(url, handle="x!"))
        assert field_of(reply) == "handle"
        reply = await error(
            a, "agent.create", "bad_request", **agent_fields(url, tools=[tool(url, secret=None)])
        )
        assert field_of(reply) == "tools[0].endpoint.secret"
        reply = await error(a, "agent.create", "bad_request", **agent_fields("ftp://example.com/x"))
        assert field_of(reply) == "tools[0].endpoint.url"
        reply = await error(a, "agent.create", "bad_request", **agent_fields(url, step_limit=21))
        assert "step_limit" in field_of(reply)
        reply = await error(a, "agent.create", "bad_request", **agent_fields(url, temperature=2.5))
        assert "temperature" in field_of(reply)
        reply = await error(
            a, "agent.create", "bad_request", **agent_fields(url, conversation_starters=["x"] * 7)
        )
        assert "conversation_starters" in field_of(reply)
        reply = await error(a, "agent.create", "bad_request", **agent_fields(url, tools=[tool(url)] * 17))
        assert "tools" in field_of(reply)
        await a.close()


def test_secrets_rotate_and_never_show() -> None:
    first, second = new_key(), new_key()
    old_box = SecretBox(decode_key(first))
    token = old_box.encrypt("top-secret")
    assert "top-secret" not in token and token.startswith("v1.")
    rotated = SecretBox(decode_key(second), [decode_key(first)])
    assert rotated.decrypt(token) == "top-secret" and not rotated.is_current(token)
    assert rotated.is_current(rotated.encrypt("x"))
    with pytest.raises(SecretsUnavailable):
        SecretBox(decode_key(second)).decrypt(token)  # the old key dropped: no longer opens
    with pytest.raises(SecretsUnavailable):
        SecretBox(None).encrypt("x")


def test_key_settings(tmp_path: Path) -> None:
    key = new_key()
    settings = load_settings({"KINTSUGI_DATA_DIR": str(tmp_path), "AGENT_SECRETS_KEY": key})
    assert settings.agent_secrets_key == key and settings.agent_secrets_keys_old == ()
    with pytest.raises(SettingsError, match="AGENT_SECRETS_KEY"):
        load_settings({"KINTSUGI_DATA_DIR": str(tmp_path), "AGENT_SECRETS_KEY": "c2hvcnQ="})
    with pytest.raises(SettingsError, match="AGENT_SECRETS_KEYS_OLD"):
        load_settings({"KINTSUGI_DATA_DIR": str(tmp_path), "AGENT_SECRETS_KEYS_OLD": f"{key},nope"})


async def test_rekey_moves_secrets_to_the_new_key(settings_for: SettingsFor) -> None:
    first, second = new_key(), new_key()
    async with serve_node(settings_for(AGENT_SECRETS_KEY=first)) as node:
        ann = await new_user(node.url, "Ann")
        await set_tier(node, ann, "premium_starter")
        a = await connect(node, ann)
        created = (await ok(a, "agent.create", **agent_fields("https://example.com/hook")))["agent"]
        await a.close()
        rotated = SecretBox(decode_key(second), [decode_key(first)])
        assert (await rekey(node.services.ctx.db.pool, rotated)).rewritten >= 1
        row = await node.services.agents.version_config(uuid.UUID(created["version_id"]))
        assert row is not None
        token = row.config["tools"][0]["endpoint"]["secret"]
        assert rotated.is_current(token) and rotated.decrypt(token) == SECRET
        assert SecretBox(decode_key(second)).decrypt(token) == SECRET  # the old key is no longer needed


def test_rekey_command(settings_for: SettingsFor, database_url: str, tmp_path: Path) -> None:
    """``kintsugi-rt agents rekey`` after a rotation: the secret moves to the new key."""
    first, second = new_key(), new_key()

    async def create() -> str:
        async with serve_node(settings_for(AGENT_SECRETS_KEY=first)) as node:
            ann = await new_user(node.url, "Ann")
            await set_tier(node, ann, "premium_starter")
            a = await connect(node, ann)
            created = (await ok(a, "agent.create", **agent_fields("https://example.com/hook")))["agent"]
            await a.close()
            version_id: str = created["version_id"]
            return version_id

    async def stored(version_id: str) -> str:
        conn = await asyncpg.connect(database_url)
        try:
            text: str = await conn.fetchval(
                "SELECT config::text FROM agent_versions WHERE id = $1", uuid.UUID(version_id)
            )
        finally:
            await conn.close()
        return text

    version_id = asyncio.run(create())
    env = {
        "DATABASE_URL": database_url,
        "KINTSUGI_DATA_DIR": str(tmp_path / "cli"),
        "AGENT_SECRETS_KEY": second,
        "AGENT_SECRETS_KEYS_OLD": first,
    }
    with env_vars(env):
        # 0, or 1 when the shared test database holds other tests' secrets under keys not given here
        assert main(["agents", "rekey"]) in (0, 1)
    config = asyncio.run(stored(version_id))
    assert f"v1.{key_id(decode_key(second))}." in config and SECRET not in config
