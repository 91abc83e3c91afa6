"""``kintsugi-rt serve | migrate | users | agents | env-example | vapid-keys | schema | protocol-doc |
asyncapi | openapi``."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from kintsugi_rt.logs import configure_logging, get_logger
from kintsugi_rt.settings import TIERS, Settings, SettingsError, env_example, load_settings


def _serve(settings: Settings) -> int:
    import uvicorn

    from kintsugi_rt.app import create_app
    from kintsugi_rt.socket.transport import WebSocketProtocol

    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        ws=WebSocketProtocol,
        log_config=None,
        access_log=False,
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
        timeout_graceful_shutdown=int(settings.shutdown_timeout.total_seconds()),
        lifespan="on",
        server_header=False,
        ws_max_size=settings.ws_max_frame_bytes,
        ws_per_message_deflate=settings.ws_compression,
        ws_ping_interval=settings.ws_ping_interval.total_seconds(),
        ws_ping_timeout=settings.ws_ping_interval.total_seconds(),
    )
    server = uvicorn.Server(config)
    server.run()
    # uvicorn exits quietly when start-up fails; make that an error for the shell.
    return 0 if server.started else 1


async def _migrate(settings: Settings) -> int:
    from kintsugi_rt.db.database import Database
    from kintsugi_rt.db.migrations import migrate

    log = get_logger("kintsugi_rt.cli")
    db = Database(settings)
    await db.open()
    try:
        applied = await migrate(db.dsn)
    finally:
        await db.close()
    log.info("migrate.done", applied=[m.name for m in applied])
    return 0


async def _set_tier(settings: Settings, email: str, tier: str) -> int:
    """Run against the database (and Redis, so live sockets hear of it at once when there is one)."""
    from redis.asyncio import Redis

    from kintsugi_rt.billing.service import set_tier_by_hand
    from kintsugi_rt.clock import SystemClock
    from kintsugi_rt.context import AppContext
    from kintsugi_rt.db.database import Database
    from kintsugi_rt.ratelimit import MemoryRateLimiter
    from kintsugi_rt.socket.events import Events
    from kintsugi_rt.socket.hub import Hub, LocalHub, RedisHub

    log = get_logger("kintsugi_rt.cli")
    db = Database(settings)
    await db.open()
    redis = Redis.from_url(settings.redis_url) if settings.redis_url else None
    hub: Hub = RedisHub(redis, settings.redis_key_prefix) if redis else LocalHub()
    clock = SystemClock()
    ctx = AppContext(settings, clock, db, redis, MemoryRateLimiter(clock), Events(hub, db), "cli")
    try:
        user_id = await set_tier_by_hand(ctx, email, tier)
    except (LookupError, ValueError) as exc:
        sys.stderr.write(f"kintsugi-rt: {exc}\n")
        return 1
    finally:
        if redis is not None:
            await redis.aclose()
        await db.close()
    log.info("users.tier_set", user_id=str(user_id), tier=tier)
    return 0


async def _rekey_agents(settings: Settings) -> int:
    """Re-encrypt agents' tool secrets with AGENT_SECRETS_KEY (old ones from AGENT_SECRETS_KEYS_OLD)."""
    from kintsugi_rt.agents import rekey
    from kintsugi_rt.agents.secrets import box_from_settings
    from kintsugi_rt.db.database import Database

    log = get_logger("kintsugi_rt.cli")
    box = box_from_settings(settings)
    if box.current_id is None:
        sys.stderr.write("kintsugi-rt: AGENT_SECRETS_KEY is not set\n")
        return 1
    db = Database(settings)
    await db.open()
    try:
        report = await rekey(db.pool, box)
    finally:
        await db.close()
    log.info(
        "agents.rekeyed", rewritten=report.rewritten, unreadable=report.unreadable, key_id=box.current_id
    )
    return 1 if report.unreadable else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kintsugi-rt", description="Kintsugi RT real-time server")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="run the server (applies migrations outside production)")
    commands.add_parser("migrate", help="apply pending database migrations and exit")
    commands.add_parser("env-example", help="print .env.example: every setting with its default")
    commands.add_parser(
        "vapid-keys", help="print a new VAPID key pair for Web Push (VAPID_PRIVATE_KEY, ..._PUBLIC_KEY)"
    )
    users = commands.add_parser("users", help="manage users").add_subparsers(
        dest="users_command", required=True
    )
    set_tier = users.add_parser(
        "set-tier", help="set a user's tier by hand (servers without Stripe, support)"
    )
    set_tier.add_argument("email")
    set_tier.add_argument("tier", choices=TIERS)
    agents = commands.add_parser("agents", help="manage agents").add_subparsers(
        dest="agents_command", required=True
    )
    agents.add_parser(
        "rekey", help="re-encrypt agents' tool secrets with AGENT_SECRETS_KEY (after a key rotation)"
    )
    commands.add_parser("schema", help="print docs/schema.json: the JSON Schema of every socket frame")
    commands.add_parser("protocol-doc", help="print docs/protocol.md, generated from the frame types")
    commands.add_parser("asyncapi", help="print docs/asyncapi.yaml: the socket as an AsyncAPI 3.0 document")
    commands.add_parser("openapi", help="print docs/openapi.json: the REST API in OpenAPI 3.1")
    args = parser.parse_args(argv)
    if args.command == "env-example":
        sys.stdout.write(env_example())
        return 0
    if args.command == "vapid-keys":
        from kintsugi_rt.push.vapid import generate_private_key, private_key_from, public_key_of

        private = generate_private_key()
        sys.stdout.write(
            f"VAPID_PRIVATE_KEY={private}\nVAPID_PUBLIC_KEY={public_key_of(private_key_from(private))}\n"
        )
        return 0
    if args.command == "openapi":
        from kintsugi_rt.app import openapi_document
        from kintsugi_rt.openapi import render
        from kintsugi_rt.wiring import build_services, documentation_settings

        sys.stdout.write(render(openapi_document(build_services(documentation_settings()))))
        return 0
    if args.command in ("schema", "protocol-doc", "asyncapi"):
        from kintsugi_rt import asyncapi, protocol_doc

        registry = protocol_doc.build_registry()
        if args.command == "schema":
            sys.stdout.write(protocol_doc.schema_json(registry))
        elif args.command == "asyncapi":
            sys.stdout.write(asyncapi.asyncapi_yaml(registry))
        else:
            sys.stdout.write(protocol_doc.protocol_markdown(registry))
        return 0

    try:
        settings = load_settings()
    except SettingsError as exc:
        # Logging is configured from the settings, so this one line goes straight to stderr.
        sys.stderr.write(f"kintsugi-rt: configuration error: {exc}\n")
        return 2
    configure_logging(settings)

    if args.command == "serve":
        return _serve(settings)
    if args.command == "users":
        return asyncio.run(_set_tier(settings, args.email, args.tier))
    if args.command == "agents":
        return asyncio.run(_rekey_agents(settings))
    return asyncio.run(_migrate(settings))
