"""The agent builder: agents a paying user configures (instructions, model, tools bound to webhooks).

- Every frame needs ``premium_starter`` or above (``tier_required`` with ``details.tier``).
- ``agent.create`` / ``agent.update`` check each field (``bad_request`` naming it): the handle's rules
  and uniqueness among live agents, the model against the caller's tier, each tool's name (unique in
  the agent), its ``parameters`` as a JSON Schema (2020-12, top-level type "object", at most 16 KB)
  and its endpoint URL (https; http too outside production).
- Each change stores a new immutable version; the agent points at the current one. A chat keeps the
  version id it started with (``version_config``), even after the agent is deleted (soft delete).
- Endpoint secrets are encrypted (secrets.py) before they reach the database, never sent back
  (``has_secret``) and never logged.
- ``agent.test_tool`` checks the arguments against the tool's schema and calls it once.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import jsonschema
import msgspec
import referencing.exceptions

from kintsugi_rt.agents import storage
from kintsugi_rt.agents.bindings import ToolEndpoint
from kintsugi_rt.agents.frames import (
    Agent,
    AgentCreate,
    AgentDelete,
    AgentGet,
    AgentList,
    AgentPage,
    AgentRef,
    AgentTestTool,
    AgentUpdate,
    EndpointView,
    ToolInput,
    ToolTestResult,
    ToolView,
)
from kintsugi_rt.agents.secrets import SecretBox, SecretsUnavailable, box_from_settings
from kintsugi_rt.agents.webhooks import WebhookCaller
from kintsugi_rt.billing import Tiers
from kintsugi_rt.context import AppContext
from kintsugi_rt.logs import get_logger
from kintsugi_rt.socket.protocol import BAD_REQUEST, NOT_FOUND, UNAVAILABLE
from kintsugi_rt.socket.registry import SocketContext, SocketError

log = get_logger(__name__)

NEEDED_TIER = "premium_starter"
HANDLE_TAKEN = "handle_taken"
# tier_required (billing) and handle_taken (people) are described by the modules that define them.
ERROR_CODES: dict[str, str] = {}
HANDLE_PATTERN = re.compile(r"[a-z][a-z0-9_]{2,31}")
HANDLE_RULES = "3 to 32 of a-z, 0-9 and _, starting with a letter"
RESERVED_HANDLES = frozenset({"all", "everyone", "here", "admin", "support", "system", "kintsugi"})
MAX_SCHEMA_BYTES = 16 * 1024
DEFAULT_HEADER = "Authorization"


def handle_key(raw: str) -> str | None:
    """The stored form of a handle as typed (spaces and one leading '@' off, lower-cased), or None."""
    text = raw.strip()
    text = text.removeprefix("@")
    if not text.isascii():
        return None
    text = text.lower()
    return text if HANDLE_PATTERN.fullmatch(text) else None


def _bad(field: str, message: str) -> SocketError:
    return SocketError(BAD_REQUEST, message, {"field": field})


def _no_agent() -> SocketError:
    return SocketError(NOT_FOUND, "No such agent.", {"field": "agent_id"})


def check_parameters(field: str, schema: dict[str, Any]) -> None:
    """A tool's ``parameters``: a valid JSON Schema (2020-12) of an object, at most 16 KB."""
    if len(msgspec.json.encode(schema)) > MAX_SCHEMA_BYTES:
        raise _bad(field, f"The schema is larger than {MAX_SCHEMA_BYTES} bytes.")
    if schema.get("type") != "object":
        raise _bad(field, 'The schema\'s top-level "type" must be "object".')
    if _remote_ref(schema):
        raise _bad(field, "Only local references ($ref to #...) are allowed in the schema.")
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise _bad(field, f"Not a valid JSON Schema: {exc.message[:200]}") from None
    except RecursionError:
        raise _bad(field, "Not a valid JSON Schema: nested too deeply.") from None


def _remote_ref(node: Any, depth: int = 0) -> bool:
    """Whether the schema has a ``$ref`` / ``$dynamicRef`` that is not local (never fetched)."""
    if depth > 64:
        return True
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("$ref", "$dynamicRef") and not (isinstance(value, str) and value.startswith("#")):
                return True
            if _remote_ref(value, depth + 1):
                return True
    elif isinstance(node, list):
        return any(_remote_ref(item, depth + 1) for item in node)
    return False


class AgentService:
    def __init__(
        self,
        ctx: AppContext,
        *,
        tiers: Tiers,
        models_for: Callable[[str], list[str]],
        webhooks: WebhookCaller,
        box: SecretBox | None = None,
    ) -> None:
        self.ctx = ctx
        self.settings = ctx.settings
        self.tiers = tiers
        self.models_for = models_for
        self.webhooks = webhooks
        self._box = box

    @property
    def box(self) -> SecretBox:
        """The secret box (its development key file is made on first use, not in ``__init__``)."""
        if self._box is None:
            self._box = box_from_settings(self.settings)
        return self._box

    async def start(self) -> None:
        if self.settings.is_production and self.settings.agent_secrets_key is None:
            log.warning(
                "agents.no_secrets_key",
                fix="set AGENT_SECRETS_KEY (openssl rand -base64 32); agents with tool secrets are off",
            )
        self.box  # noqa: B018 - make (outside production) or check the key at start

    async def stop(self) -> None:
        await self.webhooks.aclose()

    # --- checking input ------------------------------------------------------------------------------

    def _check_url(self, field: str, url: str) -> None:
        parts = urlsplit(url)
        allowed = ("https",) if self.settings.is_production else ("https", "http")
        if parts.scheme not in allowed or not parts.hostname:
            need = "an https URL" if self.settings.is_production else "an http(s) URL"
            raise _bad(field, f"The endpoint must be {need}.")
        if parts.username or parts.password:
            raise _bad(field, "Put credentials in the secret, not in the URL.")

    def _tools(self, tools: list[ToolInput], previous: dict[str, Any] | None) -> list[dict[str, Any]]:
        """The stored form of the tools (secrets encrypted); a tool without a new secret keeps that of
        the previous version's tool of the same name."""
        old = {t["name"]: t for t in (previous or {}).get("tools", [])}
        seen: set[str] = set()
        stored = []
        for i, tool in enumerate(tools):
            key = tool.name.lower()
            if key in seen:
                raise _bad(f"tools[{i}].name", f"Two tools are named {tool.name!r}.")
            seen.add(key)
            check_parameters(f"tools[{i}].parameters", tool.parameters)
            endpoint = tool.endpoint
            self._check_url(f"tools[{i}].endpoint.url", endpoint.url)
            if endpoint.header_name is not None and endpoint.kind != "n8n":
                raise _bad(f"tools[{i}].endpoint.header_name", "Only n8n endpoints take a header name.")
            if endpoint.secret is not None:
                try:
                    secret: str | None = self.box.encrypt(endpoint.secret)
                except SecretsUnavailable:
                    raise SocketError(
                        UNAVAILABLE, "Agent secrets are off: AGENT_SECRETS_KEY is not set."
                    ) from None
            else:
                secret = old.get(tool.name, {}).get("endpoint", {}).get("secret")
                if secret is None:
                    raise _bad(f"tools[{i}].endpoint.secret", "The endpoint needs its secret.")
            stored.append(
                {
                    "name": tool.name,
                    "description": tool.description,
                    "parameters": tool.parameters,
                    "endpoint": {
                        "kind": endpoint.kind,
                        "url": endpoint.url,
                        "header_name": (endpoint.header_name or DEFAULT_HEADER)
                        if endpoint.kind == "n8n"
                        else None,
                        "secret": secret,
                    },
                }
            )
        return stored

    async def _check_model(self, tier: str, model: str) -> None:
        if model not in self.models_for(tier):
            raise _bad("model", f"Your tier ({tier}) cannot use the model {model!r}.")

    async def _check_avatar(self, me: uuid.UUID, media_id: uuid.UUID | None) -> None:
        if media_id is None:
            return
        found = await storage.media_owner_kind(self.ctx.db.pool, media_id)
        if found is None or found[0] != me:
            raise SocketError(NOT_FOUND, "No such media.", {"field": "avatar_media_id"})
        if found[1] != "image":
            raise _bad("avatar_media_id", "An avatar is an image (upload it with kind=image).")

    @staticmethod
    def _handle(raw: str) -> str:
        handle = handle_key(raw)
        if handle is None:
            raise _bad("handle", f"A handle has {HANDLE_RULES}.")
        if handle in RESERVED_HANDLES:
            raise SocketError(HANDLE_TAKEN, "That handle is reserved.", {"field": "handle"})
        return handle

    # --- views ---------------------------------------------------------------------------------------

    @staticmethod
    def _view(row: storage.AgentRow) -> Agent:
        c = row.config
        return Agent(
            id=row.id,
            version=row.version,
            version_id=row.version_id,
            handle=row.handle,
            name=c["name"],
            avatar_media_id=None if c.get("avatar_media_id") is None else uuid.UUID(c["avatar_media_id"]),
            instructions=c["instructions"],
            model=c["model"],
            temperature=c["temperature"],
            conversation_starters=c["conversation_starters"],
            step_limit=c["step_limit"],
            tools=[
                ToolView(
                    name=t["name"],
                    description=t["description"],
                    parameters=t["parameters"],
                    endpoint=EndpointView(
                        kind=t["endpoint"]["kind"],
                        url=t["endpoint"]["url"],
                        header_name=t["endpoint"]["header_name"],
                        has_secret=t["endpoint"]["secret"] is not None,
                    ),
                )
                for t in c["tools"]
            ],
            created_at=row.created_at,
            updated_at=row.updated_at,
        )

    # --- frames --------------------------------------------------------------------------------------

    async def create(self, conn: SocketContext, message: AgentCreate) -> AgentRef:
        me = conn.user_id
        tier = await self.tiers.require(me, NEEDED_TIER)
        handle = self._handle(message.handle)
        await self._check_model(tier, message.model)
        await self._check_avatar(me, message.avatar_media_id)
        config = {
            "name": message.name,
            "avatar_media_id": None if message.avatar_media_id is None else str(message.avatar_media_id),
            "instructions": message.instructions,
            "model": message.model,
            "temperature": message.temperature,
            "conversation_starters": message.conversation_starters,
            "step_limit": message.step_limit,
            "tools": self._tools(message.tools, None),
        }
        async with self.ctx.db.pool.acquire() as db, db.transaction():
            try:
                row = await storage.create(db, me, handle, config)
            except asyncpg.UniqueViolationError as exc:
                if exc.constraint_name != storage.HANDLE_INDEX:
                    raise
                raise SocketError(HANDLE_TAKEN, "That handle is taken.", {"field": "handle"}) from None
        log.info("agents.created", user_id=str(me), agent_id=str(row.id), tools=len(message.tools))
        return AgentRef(agent=self._view(row))

    async def update(self, conn: SocketContext, message: AgentUpdate) -> AgentRef:
        me = conn.user_id
        tier = await self.tiers.require(me, NEEDED_TIER)
        handle = None if isinstance(message.handle, msgspec.UnsetType) else self._handle(message.handle)
        if isinstance(message.model, str):
            await self._check_model(tier, message.model)
        if isinstance(message.avatar_media_id, uuid.UUID):
            await self._check_avatar(me, message.avatar_media_id)
        async with self.ctx.db.pool.acquire() as db, db.transaction():
            agent = await storage.current(db, me, message.agent_id, lock=True)
            if agent is None:
                raise _no_agent()
            config = dict(agent.config)
            for field in (
                "name",
                "instructions",
                "model",
                "temperature",
                "conversation_starters",
                "step_limit",
            ):
                value = getattr(message, field)
                if not isinstance(value, msgspec.UnsetType):
                    config[field] = value
            if not isinstance(message.avatar_media_id, msgspec.UnsetType):
                avatar = message.avatar_media_id
                config["avatar_media_id"] = None if avatar is None else str(avatar)
            if not isinstance(message.tools, msgspec.UnsetType):
                config["tools"] = self._tools(message.tools, agent.config)
            try:
                await storage.add_version(db, agent, handle or agent.handle, config)
            except asyncpg.UniqueViolationError as exc:
                if exc.constraint_name != storage.HANDLE_INDEX:
                    raise
                raise SocketError(HANDLE_TAKEN, "That handle is taken.", {"field": "handle"}) from None
            row = await storage.current(db, me, message.agent_id)
            assert row is not None
        log.info("agents.updated", user_id=str(me), agent_id=str(row.id), version=row.version)
        return AgentRef(agent=self._view(row))

    async def get(self, conn: SocketContext, message: AgentGet) -> AgentRef:
        me = conn.user_id
        await self.tiers.require(me, NEEDED_TIER)
        pool = self.ctx.db.pool
        if message.version is None:
            row = await storage.current(pool, me, message.agent_id)
        else:
            row = await storage.at_version(pool, me, message.agent_id, message.version)
        if row is None:
            raise _no_agent()
        return AgentRef(agent=self._view(row))

    async def list_agents(self, conn: SocketContext, message: AgentList) -> AgentPage:
        me = conn.user_id
        await self.tiers.require(me, NEEDED_TIER)
        return AgentPage(agents=[self._view(r) for r in await storage.owned(self.ctx.db.pool, me)])

    async def delete(self, conn: SocketContext, message: AgentDelete) -> None:
        me = conn.user_id
        await self.tiers.require(me, NEEDED_TIER)
        if not await storage.soft_delete(self.ctx.db.pool, me, message.agent_id):
            raise _no_agent()
        log.info("agents.deleted", user_id=str(me), agent_id=str(message.agent_id))

    async def test_tool(self, conn: SocketContext, message: AgentTestTool) -> ToolTestResult:
        me = conn.user_id
        await self.tiers.require(me, NEEDED_TIER)
        row = await storage.current(self.ctx.db.pool, me, message.agent_id)
        if row is None:
            raise _no_agent()
        tool = next((t for t in row.config["tools"] if t["name"] == message.tool), None)
        if tool is None:
            raise SocketError(NOT_FOUND, "The agent has no such tool.", {"field": "tool"})
        try:
            jsonschema.Draft202012Validator(tool["parameters"]).validate(message.arguments)
        except referencing.exceptions.Unresolvable:
            raise _bad(
                "tool", "The tool's parameters schema has a reference that does not resolve."
            ) from None
        except jsonschema.ValidationError as exc:
            where = "".join(f"[{p!r}]" if isinstance(p, int) else f".{p}" for p in exc.absolute_path)
            raise _bad(
                f"arguments{where}", f"The arguments do not fit the schema: {exc.message[:200]}"
            ) from None
        endpoint = self.endpoint(tool)
        result = await self.webhooks.call(endpoint, message.tool, message.arguments)
        log.info(
            "agents.tool_tested",
            user_id=str(me),
            agent_id=str(row.id),
            tool=message.tool,
            ok=result.ok,
            status=result.status,
            error=result.error,
        )
        return ToolTestResult(
            ok=result.ok,
            status=result.status,
            duration_ms=result.duration_ms,
            body=result.body,
            error=result.error,
            retried=result.retried,
        )

    # --- for the agent loop ----------------------------------------------------------------------------

    def endpoint(self, tool: dict[str, Any]) -> ToolEndpoint:
        """A stored tool's endpoint with its secret decrypted (in memory only)."""
        stored = tool["endpoint"]
        try:
            secret = self.box.decrypt(stored["secret"])
        except SecretsUnavailable:
            raise SocketError(
                UNAVAILABLE, "The tool's secret cannot be decrypted with the configured keys."
            ) from None
        return ToolEndpoint(
            kind=stored["kind"], url=stored["url"], header_name=stored["header_name"], secret=secret
        )

    async def version_config(self, version_id: uuid.UUID) -> storage.AgentRow | None:
        """The agent at a version a chat keeps (even of a deleted agent); secrets still encrypted
        (``endpoint`` opens one)."""
        return await storage.by_version_id(self.ctx.db.pool, version_id)


@dataclass(frozen=True, slots=True)
class RekeyReport:
    rewritten: int  # versions whose secrets moved to the current key
    unreadable: int  # versions with a secret no configured key opens (left as they are)


async def rekey(pool: asyncpg.Pool, box: SecretBox, *, batch: int = 200) -> RekeyReport:
    """Re-encrypt every stored secret not under the current key (``kintsugi-rt agents rekey``). A
    version with a secret no configured key opens is left alone, counted and logged (by id only)."""
    rewritten = unreadable = 0
    after: uuid.UUID | None = None
    while True:
        page = await storage.version_configs(pool, after, batch)
        if not page:
            return RekeyReport(rewritten, unreadable)
        for version_id, text in page:
            after = version_id
            config: dict[str, Any] = msgspec.json.decode(text)
            dirty = False
            try:
                for tool in config.get("tools", []):
                    token = tool["endpoint"].get("secret")
                    if token is not None and not box.is_current(token):
                        tool["endpoint"]["secret"] = box.encrypt(box.decrypt(token))
                        dirty = True
            except SecretsUnavailable:
                unreadable += 1
                log.warning("agents.rekey_unreadable", version_id=str(version_id))
                continue
            if dirty:
                await storage.replace_config(pool, version_id, config)
                rewritten += 1
