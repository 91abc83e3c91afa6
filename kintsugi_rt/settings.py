"""Typed settings, read once from environment variables.

Every variable the server reads is declared in ``VARIABLES`` with its parser, default and meaning;
``.env.example`` lists the same set (a test keeps the two in step). A bad value raises
``SettingsError`` naming the variable, so the server stops at start instead of half-working.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import ipaddress
import os
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import msgspec

Environment = Literal["development", "production", "test"]

# Placeholder secrets that must never sign production tokens (the roadmap's example among them).
KNOWN_PLACEHOLDER_SECRETS = frozenset(
    {"", "your-super-secret-jwt-key-change-in-production", "change-me", "changeme", "secret"}
)
MIN_PRODUCTION_SECRET_LENGTH = 32


class SettingsError(ValueError):
    """A variable holds a value the server cannot run with."""


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most ``limit`` events per ``window``."""

    limit: int
    window: timedelta

    def __str__(self) -> str:
        return f"{self.limit}/{format_duration(self.window)}"


TIERS = ("basic", "premium_starter", "premium_pro", "premium_ultra", "unlimited")


class ModelSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One entry of the chat model catalogue (``CHAT_MODELS``)."""

    id: str
    label: str
    context_window: int
    max_output: int
    tiers: tuple[str, ...] = TIERS


DEFAULT_CHAT_MODELS = (
    '[{"id": "gpt-4o-mini", "label": "GPT-4o mini", "context_window": 128000, "max_output": 16384}, '
    '{"id": "gpt-4o", "label": "GPT-4o", "context_window": 128000, "max_output": 16384, '
    '"tiers": ["premium_starter", "premium_pro", "premium_ultra", "unlimited"]}, '
    '{"id": "gpt-4.1", "label": "GPT-4.1", "context_window": 1047576, "max_output": 32768, '
    '"tiers": ["premium_pro", "premium_ultra", "unlimited"]}]'
)


def _parse_models(text: str) -> tuple[ModelSpec, ...]:
    try:
        models = msgspec.json.decode(text, type=tuple[ModelSpec, ...])
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ValueError(f"not a JSON list of models ({exc})") from None
    for model in models:
        unknown = set(model.tiers) - set(TIERS)
        if unknown:
            raise ValueError(f"model {model.id!r} names unknown tiers {sorted(unknown)}")
        if model.context_window <= model.max_output or model.max_output <= 0:
            raise ValueError(f"model {model.id!r} needs 0 < max_output < context_window")
    if len({m.id for m in models}) != len(models):
        raise ValueError("model ids repeat")
    return models


@dataclass(frozen=True, slots=True)
class Settings:
    port: int
    host: str
    environment: Environment
    database_url: str | None
    database_pool_min: int
    database_pool_max: int
    database_connect_timeout: timedelta
    database_acquire_timeout: timedelta
    database_statement_timeout: timedelta
    data_dir: Path
    redis_url: str | None
    redis_key_prefix: str
    redis_max_connections: int
    redis_timeout: timedelta
    jwt_secret: str
    jwt_access_expiry: timedelta
    jwt_refresh_expiry: timedelta
    cors_origins: tuple[str, ...]
    log_level: str
    log_format: Literal["auto", "json", "console"]
    max_request_body_bytes: int
    auth_rate_limit_ip: RateLimit
    auth_rate_limit_email: RateLimit
    auth_rate_limit_email_ip: RateLimit
    forwarded_allow_ips: str
    shutdown_timeout: timedelta
    argon2_time_cost: int
    argon2_memory_kib: int
    argon2_parallelism: int
    password_hash_concurrency: int
    ws_max_frame_bytes: int
    ws_outbound_queue_bytes: int
    ws_rate_limit: RateLimit
    ws_auth_timeout: timedelta
    ws_ping_interval: timedelta
    ws_compression: bool
    ws_resume_grace: timedelta
    ws_max_replay: int
    ws_max_sockets_per_user: int
    metrics_token: str | None
    event_retention: timedelta
    presence_ttl: timedelta
    messenger_max_members: int
    messenger_max_text: int
    messenger_edit_window: timedelta
    messenger_delete_window: timedelta
    messenger_typing_max_members: int
    user_lookup_rate_limit: RateLimit
    user_search_rate_limit: RateLimit
    openai_api_key: str | None
    openai_base_url: str | None
    openai_org_id: str | None
    openai_stream_usage: bool
    openai_max_retries: int
    openai_timeout: timedelta
    chat_models: tuple[ModelSpec, ...]
    chat_default_model: str
    chat_max_output_tokens: int
    chat_max_input_chars: int
    chat_delta_interval: timedelta
    chat_demo_tokens_per_second: int
    basic_token_limit: int
    premium_starter_token_limit: int
    premium_pro_token_limit: int
    premium_ultra_token_limit: int
    unlimited_token_limit: int
    token_reset_interval: timedelta
    stripe_secret_key: str | None
    stripe_webhook_secret: str | None
    stripe_api_base: str | None
    stripe_price_premium_starter: str | None
    stripe_price_premium_pro: str | None
    stripe_price_premium_ultra: str | None
    stripe_price_unlimited: str | None
    billing_success_url: str
    billing_cancel_url: str
    billing_portal_return_url: str
    billing_plans_cache_ttl: timedelta
    media_max_bytes_basic: int
    media_max_bytes_premium: int
    media_dir: Path | None
    s3_bucket: str | None
    s3_region: str | None
    s3_access_key: str | None
    s3_secret_key: str | None
    s3_endpoint_url: str | None
    media_url_secret: str | None
    media_url_ttl: timedelta
    media_thumbnail_max_pixels: int
    call_ring_timeout: timedelta
    call_rejoin_grace: timedelta
    call_signal_max_bytes: int
    call_signal_rate_limit: RateLimit
    ice_stun_urls: tuple[str, ...]
    turn_urls: tuple[str, ...]
    turn_secret: str | None
    turn_credential_ttl: timedelta
    livekit_url: str | None
    livekit_api_key: str | None
    livekit_api_secret: str | None
    sfu_max_participants: int
    call_max_participants_basic: int
    call_max_participants_premium: int
    call_max_duration_basic: timedelta
    call_max_duration_premium: timedelta
    call_video_basic: bool
    web_dist_dir: Path | None
    vapid_public_key: str | None
    vapid_private_key: str | None
    vapid_subject: str | None
    push_message_preview: bool
    push_rate_limit: RateLimit
    push_concurrency: int
    push_message_ttl: timedelta
    push_max_retries: int
    push_timeout: timedelta
    agent_secrets_key: str | None
    agent_secrets_keys_old: tuple[str, ...]
    agent_webhook_timeout: timedelta
    agent_webhook_max_bytes: int
    agent_webhook_allow: tuple[str, ...]

    def token_limit(self, tier: str) -> int:
        """Tokens a tier may use per window; -1 means no limit."""
        limit: int = getattr(self, f"{tier}_token_limit")
        return limit

    def stripe_prices(self) -> dict[str, str]:
        """Stripe price id -> tier, for the prices that are configured."""
        prices = {}
        for tier in TIERS[1:]:
            price = getattr(self, f"stripe_price_{tier}")
            if price:
                prices[price] = tier
        return prices

    @property
    def is_production(self) -> bool:
        return self.environment == "production"

    @property
    def json_logs(self) -> bool:
        if self.log_format == "auto":
            return self.is_production
        return self.log_format == "json"

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


# --- parsers ---------------------------------------------------------------------------------

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> timedelta:
    """Parse Go-style durations such as ``15m``, ``168h`` or ``1h30m``."""
    text = text.strip()
    if not text or _DURATION_PART.sub("", text):
        raise ValueError(f"{text!r} is not a duration like 30s, 15m or 168h")
    seconds = sum(float(n) * _DURATION_UNITS[unit] for n, unit in _DURATION_PART.findall(text))
    if seconds <= 0:
        raise ValueError(f"{text!r} must be longer than zero")
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _parse_positive_int(text: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise ValueError(f"{text!r} must be greater than zero")
    return value


def _parse_non_negative_int(text: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise ValueError(f"{text!r} must not be negative")
    return value


def _parse_token_limit(text: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not a whole number") from None
    if value < -1:
        raise ValueError(f"{text!r} must be a number of tokens, or -1 for no limit")
    return value


def _parse_port(text: str) -> int:
    value = _parse_positive_int(text)
    if value > 65535:
        raise ValueError(f"{text!r} is not a TCP port (1-65535)")
    return value


def _parse_environment(text: str) -> Environment:
    value = text.strip().lower()
    if value == "development":
        return "development"
    if value == "production":
        return "production"
    if value == "test":
        return "test"
    raise ValueError(f"{text!r} is not one of development, production, test")


def _parse_url(schemes: tuple[str, ...]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.strip()
        if not value.startswith(tuple(f"{s}://" for s in schemes)):
            raise ValueError(f"{text!r} is not a URL starting with {' or '.join(s + '://' for s in schemes)}")
        return value

    return parse


def _parse_csv(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _parse_log_level(text: str) -> str:
    value = text.strip().lower()
    if value not in {"debug", "info", "warning", "error"}:
        raise ValueError(f"{text!r} is not one of debug, info, warning, error")
    return value


def _parse_log_format(text: str) -> str:
    value = text.strip().lower()
    if value not in {"auto", "json", "console"}:
        raise ValueError(f"{text!r} is not one of auto, json, console")
    return value


def parse_rate_limit(text: str) -> RateLimit:
    """Parse ``N/duration``, e.g. ``20/1m``."""
    count, sep, window = text.partition("/")
    if not sep:
        raise ValueError(f"{text!r} is not a rate like 20/1m")
    return RateLimit(_parse_positive_int(count), parse_duration(window))


def _agent_key_bytes(text: str) -> bytes:
    raw = text.strip()
    try:
        key = base64.urlsafe_b64decode(raw.replace("+", "-").replace("/", "_") + "=" * (-len(raw) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("not base64") from None
    if len(key) != 32:
        raise ValueError("must be base64 of 32 bytes (openssl rand -base64 32)")
    return key


def _parse_agent_key(text: str) -> str:
    _agent_key_bytes(text)
    return text.strip()


def _parse_agent_keys(text: str) -> tuple[str, ...]:
    keys = tuple(part.strip() for part in text.split(",") if part.strip())
    for key in keys:
        _agent_key_bytes(key)
    return keys


def _parse_str(text: str) -> str:
    return text


def _parse_base64url_key(size: int, what: str) -> Callable[[str], str]:
    """A key as unpadded base64url (the Web Push form) that decodes to ``size`` bytes."""

    def parse(text: str) -> str:
        value = text.strip().rstrip("=")
        if not re.fullmatch(r"[A-Za-z0-9_-]+", value):
            raise ValueError(f"is not base64url ({what})")
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        if len(raw) != size or (size == 65 and raw[0] != 4):
            raise ValueError(f"is not {what}")
        return value

    return parse


def _parse_vapid_subject(text: str) -> str:
    value = text.strip()
    if not re.fullmatch(r"mailto:[^@\s]+@[^@\s]+|https://[^\s/]+(/\S*)?", value):
        raise ValueError(f"{text!r} is not a mailto: address or an https:// URL (who runs this server)")
    return value


def _parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"{text!r} is not true or false")


_ALLOW_HOST = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(:\d{1,5})?")


def _parse_webhook_allow(text: str) -> tuple[str, ...]:
    """CIDRs (``10.1.0.0/16``, ``fd00::/8``, a single address) and ``host[:port]`` names, lower-cased."""
    entries = []
    for raw in text.split(","):
        entry = raw.strip().lower()
        if not entry:
            continue
        if "/" in entry:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"{entry!r} is not a CIDR") from None
        elif not _ALLOW_HOST.fullmatch(entry):
            raise ValueError(f"{entry!r} is not a CIDR or a host[:port]")
        entries.append(entry)
    return tuple(entries)


@dataclass(frozen=True, slots=True)
class Variable:
    name: str
    field: str
    parse: Callable[[str], Any]
    default: str | None
    doc: str


VARIABLES: tuple[Variable, ...] = (
    Variable("PORT", "port", _parse_port, "8080", "TCP port the server listens on."),
    Variable("HOST", "host", _parse_str, "127.0.0.1", "Interface to bind; 0.0.0.0 in containers."),
    Variable(
        "ENVIRONMENT", "environment", _parse_environment, "development", "development, production or test."
    ),
    Variable(
        "DATABASE_URL",
        "database_url",
        _parse_url(("postgresql", "postgres")),
        None,
        "PostgreSQL DSN. Unset: an embedded PostgreSQL runs in KINTSUGI_DATA_DIR/postgres.",
    ),
    Variable("DATABASE_POOL_MIN", "database_pool_min", _parse_positive_int, "1", "Smallest pool size."),
    Variable("DATABASE_POOL_MAX", "database_pool_max", _parse_positive_int, "10", "Largest pool size."),
    Variable(
        "DATABASE_CONNECT_TIMEOUT",
        "database_connect_timeout",
        parse_duration,
        "5s",
        "How long opening one database connection may take before the request gets 'unavailable'.",
    ),
    Variable(
        "DATABASE_ACQUIRE_TIMEOUT",
        "database_acquire_timeout",
        parse_duration,
        "5s",
        "How long a request waits for a free pooled connection (connecting included) before 'unavailable'.",
    ),
    Variable(
        "DATABASE_STATEMENT_TIMEOUT",
        "database_statement_timeout",
        parse_duration,
        "10s",
        "Longest one SQL statement may run before it is cancelled and the request gets 'unavailable'.",
    ),
    Variable(
        "KINTSUGI_DATA_DIR",
        "data_dir",
        lambda text: Path(text).expanduser(),
        "./.kintsugi",
        "Local state: embedded database, development JWT secret.",
    ),
    Variable(
        "REDIS_URL",
        "redis_url",
        _parse_url(("redis", "rediss", "unix")),
        None,
        "Redis for cross-node fan-out and shared rate limits. Unset: everything stays in-process.",
    ),
    Variable(
        "REDIS_KEY_PREFIX", "redis_key_prefix", _parse_str, "kintsugi:", "Prefix of every Redis key we write."
    ),
    Variable(
        "REDIS_MAX_CONNECTIONS",
        "redis_max_connections",
        _parse_positive_int,
        "64",
        "Redis connections per node; a burst beyond waits for a free one.",
    ),
    Variable(
        "REDIS_TIMEOUT",
        "redis_timeout",
        parse_duration,
        "2s",
        "Longest one Redis command (or connect, or wait for a pooled connection) may take.",
    ),
    Variable(
        "JWT_SECRET",
        "jwt_secret",
        _parse_str,
        "",
        "HMAC key for access tokens. Required in production (32+ characters); "
        "generated once into KINTSUGI_DATA_DIR in development.",
    ),
    Variable("JWT_ACCESS_EXPIRY", "jwt_access_expiry", parse_duration, "15m", "Access token lifetime."),
    Variable("JWT_REFRESH_EXPIRY", "jwt_refresh_expiry", parse_duration, "168h", "Refresh token lifetime."),
    Variable(
        "CORS_ORIGINS",
        "cors_origins",
        _parse_csv,
        "http://localhost:3000",
        "Comma-separated origins allowed to call the API from a browser.",
    ),
    Variable("LOG_LEVEL", "log_level", _parse_log_level, "info", "debug, info, warning or error."),
    Variable(
        "LOG_FORMAT",
        "log_format",
        _parse_log_format,
        "auto",
        "json, console, or auto (json in production, console otherwise).",
    ),
    Variable(
        "MAX_REQUEST_BODY_BYTES",
        "max_request_body_bytes",
        _parse_positive_int,
        "65536",
        "Largest JSON request body accepted by the REST API.",
    ),
    Variable(
        "AUTH_RATE_LIMIT_IP",
        "auth_rate_limit_ip",
        parse_rate_limit,
        "30/1m",
        "Login and register attempts allowed per client IP.",
    ),
    Variable(
        "AUTH_RATE_LIMIT_EMAIL",
        "auth_rate_limit_email",
        parse_rate_limit,
        "100/1h",
        "Login and register attempts allowed per email address from all IPs together (a loose cap).",
    ),
    Variable(
        "AUTH_RATE_LIMIT_EMAIL_IP",
        "auth_rate_limit_email_ip",
        parse_rate_limit,
        "10/10m",
        "Login and register attempts allowed per email address from one client IP.",
    ),
    Variable(
        "FORWARDED_ALLOW_IPS",
        "forwarded_allow_ips",
        _parse_str,
        "127.0.0.1",
        "Proxies whose X-Forwarded-For is trusted for the client IP (comma-separated, or *).",
    ),
    Variable(
        "SHUTDOWN_TIMEOUT",
        "shutdown_timeout",
        parse_duration,
        "10s",
        "How long SIGTERM waits for open requests and sockets.",
    ),
    Variable("ARGON2_TIME_COST", "argon2_time_cost", _parse_positive_int, "3", "argon2id iterations."),
    Variable(
        "ARGON2_MEMORY_KIB", "argon2_memory_kib", _parse_positive_int, "65536", "argon2id memory in KiB."
    ),
    Variable("ARGON2_PARALLELISM", "argon2_parallelism", _parse_positive_int, "4", "argon2id lanes."),
    Variable(
        "PASSWORD_HASH_CONCURRENCY",
        "password_hash_concurrency",
        _parse_positive_int,
        "4",
        "Password hashes computed at once per node (each takes ARGON2_MEMORY_KIB); others wait their turn.",
    ),
    Variable(
        "WS_MAX_FRAME_BYTES",
        "ws_max_frame_bytes",
        _parse_positive_int,
        "262144",
        "Largest client WebSocket frame; a bigger one closes the socket with 1009.",
    ),
    Variable(
        "WS_OUTBOUND_QUEUE_BYTES",
        "ws_outbound_queue_bytes",
        _parse_positive_int,
        "1048576",
        "Per-socket outbound queue; ephemeral events drop at half, durable overflow closes with 4008.",
    ),
    Variable(
        "WS_RATE_LIMIT",
        "ws_rate_limit",
        parse_rate_limit,
        "200/10s",
        "Client frames allowed per socket (token bucket, bursts up to the count).",
    ),
    Variable(
        "WS_AUTH_TIMEOUT", "ws_auth_timeout", parse_duration, "10s", "Time to send the auth frame; then 4408."
    ),
    Variable(
        "WS_PING_INTERVAL",
        "ws_ping_interval",
        parse_duration,
        "20s",
        "Protocol ping interval; a peer silent for two intervals is dropped.",
    ),
    Variable(
        "WS_COMPRESSION", "ws_compression", _parse_bool, "false", "permessage-deflate (costs memory and CPU)."
    ),
    Variable(
        "WS_RESUME_GRACE",
        "ws_resume_grace",
        parse_duration,
        "1s",
        "Durable events wait this long after connect for a resume frame (or any other frame).",
    ),
    Variable(
        "WS_MAX_REPLAY",
        "ws_max_replay",
        _parse_positive_int,
        "1000",
        "Most durable events one resume replays; a larger gap gets resync_required.",
    ),
    Variable(
        "WS_MAX_SOCKETS_PER_USER",
        "ws_max_sockets_per_user",
        _parse_positive_int,
        "32",
        "Sockets one user may hold open on a node; one more is refused with close code 4409.",
    ),
    Variable(
        "METRICS_TOKEN",
        "metrics_token",
        _parse_str,
        None,
        "If set, GET /metrics requires 'Authorization: Bearer <token>' (recommended in production).",
    ),
    Variable(
        "EVENT_RETENTION",
        "event_retention",
        parse_duration,
        "72h",
        "How long durable events stay replayable.",
    ),
    Variable(
        "OPENAI_API_KEY",
        "openai_api_key",
        _parse_str,
        None,
        "Chat provider key. Unset: the offline-demo model in development, chat off in production.",
    ),
    Variable(
        "OPENAI_BASE_URL",
        "openai_base_url",
        _parse_url(("http", "https")),
        None,
        "Any OpenAI-compatible API (OpenAI, Ollama, vLLM, llama.cpp, OpenRouter), e.g. http://localhost:11434/v1.",
    ),
    Variable("OPENAI_ORG_ID", "openai_org_id", _parse_str, None, "OpenAI organisation, if any."),
    Variable(
        "OPENAI_STREAM_USAGE",
        "openai_stream_usage",
        _parse_bool,
        "true",
        "Ask for the usage chunk (stream_options.include_usage); turn off for providers that reject it.",
    ),
    Variable(
        "OPENAI_MAX_RETRIES",
        "openai_max_retries",
        _parse_non_negative_int,
        "2",
        "Retries of 429/5xx/connection errors, with backoff, before the first token only.",
    ),
    Variable("OPENAI_TIMEOUT", "openai_timeout", parse_duration, "120s", "Timeout of one provider request."),
    Variable(
        "CHAT_MODELS",
        "chat_models",
        _parse_models,
        DEFAULT_CHAT_MODELS,
        "JSON list of models: id, label, context_window, max_output, tiers allowed.",
    ),
    Variable(
        "CHAT_DEFAULT_MODEL",
        "chat_default_model",
        _parse_str,
        "gpt-4o-mini",
        "Model of new chats by default.",
    ),
    Variable(
        "CHAT_MAX_OUTPUT_TOKENS",
        "chat_max_output_tokens",
        _parse_positive_int,
        "4096",
        "Most tokens one answer may have (capped by the model's max_output).",
    ),
    Variable(
        "CHAT_MAX_INPUT_CHARS",
        "chat_max_input_chars",
        _parse_positive_int,
        "32000",
        "Longest message a user may send to the AI chat.",
    ),
    Variable(
        "CHAT_DELTA_INTERVAL",
        "chat_delta_interval",
        parse_duration,
        "50ms",
        "Tokens are batched into one chat.delta frame per interval.",
    ),
    Variable(
        "CHAT_DEMO_TOKENS_PER_SECOND",
        "chat_demo_tokens_per_second",
        _parse_positive_int,
        "20",
        "Pace of the offline-demo model's answer (no OPENAI_API_KEY): slow enough to stop one by hand.",
    ),
    Variable(
        "BASIC_TOKEN_LIMIT",
        "basic_token_limit",
        _parse_token_limit,
        "100000",
        "Tokens the basic tier may use per window (-1: no limit).",
    ),
    Variable(
        "PREMIUM_STARTER_TOKEN_LIMIT",
        "premium_starter_token_limit",
        _parse_token_limit,
        "500000",
        "Tokens the premium_starter tier may use per window (-1: no limit).",
    ),
    Variable(
        "PREMIUM_PRO_TOKEN_LIMIT",
        "premium_pro_token_limit",
        _parse_token_limit,
        "2000000",
        "Tokens the premium_pro tier may use per window (-1: no limit).",
    ),
    Variable(
        "PREMIUM_ULTRA_TOKEN_LIMIT",
        "premium_ultra_token_limit",
        _parse_token_limit,
        "5000000",
        "Tokens the premium_ultra tier may use per window (-1: no limit).",
    ),
    Variable(
        "UNLIMITED_TOKEN_LIMIT",
        "unlimited_token_limit",
        _parse_token_limit,
        "-1",
        "Tokens the unlimited tier may use per window (-1: no limit).",
    ),
    Variable(
        "TOKEN_RESET_INTERVAL",
        "token_reset_interval",
        parse_duration,
        "6h",
        "Length of a usage window; windows start at multiples of it since 1970-01-01 UTC.",
    ),
    Variable(
        "STRIPE_SECRET_KEY",
        "stripe_secret_key",
        _parse_str,
        None,
        "Stripe API key. Unset: billing routes answer 503 billing_disabled; tiers are set by hand.",
    ),
    Variable(
        "STRIPE_WEBHOOK_SECRET",
        "stripe_webhook_secret",
        _parse_str,
        None,
        "Signing secret of the webhook endpoint.",
    ),
    Variable(
        "STRIPE_API_BASE",
        "stripe_api_base",
        _parse_url(("http", "https")),
        None,
        "Stripe API address (tests point it at a local fake); unset: Stripe's own.",
    ),
    Variable(
        "STRIPE_PRICE_PREMIUM_STARTER",
        "stripe_price_premium_starter",
        _parse_str,
        None,
        "Stripe price id of the premium_starter subscription.",
    ),
    Variable(
        "STRIPE_PRICE_PREMIUM_PRO",
        "stripe_price_premium_pro",
        _parse_str,
        None,
        "Stripe price id of the premium_pro subscription.",
    ),
    Variable(
        "STRIPE_PRICE_PREMIUM_ULTRA",
        "stripe_price_premium_ultra",
        _parse_str,
        None,
        "Stripe price id of the premium_ultra subscription.",
    ),
    Variable(
        "STRIPE_PRICE_UNLIMITED",
        "stripe_price_unlimited",
        _parse_str,
        None,
        "Stripe price id of the unlimited subscription.",
    ),
    Variable(
        "BILLING_SUCCESS_URL",
        "billing_success_url",
        _parse_url(("http", "https")),
        "http://localhost:3000/billing/success?session_id={CHECKOUT_SESSION_ID}",
        "Where Checkout sends the user after paying.",
    ),
    Variable(
        "BILLING_CANCEL_URL",
        "billing_cancel_url",
        _parse_url(("http", "https")),
        "http://localhost:3000/billing/cancel",
        "Where Checkout sends the user who gives up.",
    ),
    Variable(
        "BILLING_PORTAL_RETURN_URL",
        "billing_portal_return_url",
        _parse_url(("http", "https")),
        "http://localhost:3000/settings/billing",
        "Where the Customer Portal returns to.",
    ),
    Variable(
        "BILLING_PLANS_CACHE_TTL",
        "billing_plans_cache_ttl",
        parse_duration,
        "10m",
        "How long GET /api/billing/plans keeps the prices it read from Stripe.",
    ),
    Variable(
        "MESSENGER_MAX_MEMBERS",
        "messenger_max_members",
        _parse_positive_int,
        "1000",
        "Most members of a group.",
    ),
    Variable(
        "MESSENGER_MAX_TEXT",
        "messenger_max_text",
        _parse_positive_int,
        "4096",
        "Longest message, in characters.",
    ),
    Variable(
        "MESSENGER_EDIT_WINDOW",
        "messenger_edit_window",
        parse_duration,
        "48h",
        "How long after sending the author may edit a message.",
    ),
    Variable(
        "MESSENGER_DELETE_WINDOW",
        "messenger_delete_window",
        parse_duration,
        "48h",
        "How long after sending the author may delete a message for everyone (group admins: always).",
    ),
    Variable(
        "MESSENGER_TYPING_MAX_MEMBERS",
        "messenger_typing_max_members",
        _parse_positive_int,
        "100",
        "Typing is not sent in groups larger than this.",
    ),
    Variable(
        "USER_LOOKUP_RATE_LIMIT",
        "user_lookup_rate_limit",
        parse_rate_limit,
        "30/1m",
        "user.lookup requests (by exact email or @handle) one user may make: no enumerating the accounts.",
    ),
    Variable(
        "USER_SEARCH_RATE_LIMIT",
        "user_search_rate_limit",
        parse_rate_limit,
        "60/1m",
        "user.search requests (people you share a conversation with) one user may make.",
    ),
    Variable(
        "PRESENCE_TTL",
        "presence_ttl",
        parse_duration,
        "30s",
        "A socket's presence lapses this long after its node's last heartbeat.",
    ),
    Variable(
        "MEDIA_MAX_BYTES_BASIC",
        "media_max_bytes_basic",
        _parse_positive_int,
        "10485760",
        "Largest upload (bytes) of a basic-tier user; a bigger one is cut off with 413.",
    ),
    Variable(
        "MEDIA_MAX_BYTES_PREMIUM",
        "media_max_bytes_premium",
        _parse_positive_int,
        "104857600",
        "Largest upload (bytes) of a user on any paid tier.",
    ),
    Variable(
        "MEDIA_DIR",
        "media_dir",
        lambda text: Path(text).expanduser(),
        None,
        "Directory of uploaded files when S3 is not configured. Unset: KINTSUGI_DATA_DIR/media.",
    ),
    Variable(
        "S3_BUCKET",
        "s3_bucket",
        _parse_str,
        None,
        "Store uploads in this S3 (or S3-compatible) bucket instead of the local directory.",
    ),
    Variable("S3_REGION", "s3_region", _parse_str, None, "Region of S3_BUCKET; required with it."),
    Variable(
        "S3_ACCESS_KEY",
        "s3_access_key",
        _parse_str,
        None,
        "S3 access key id. Unset with S3_SECRET_KEY: the default AWS credential chain (e.g. an IAM role).",
    ),
    Variable("S3_SECRET_KEY", "s3_secret_key", _parse_str, None, "S3 secret access key."),
    Variable(
        "S3_ENDPOINT_URL",
        "s3_endpoint_url",
        _parse_url(("http", "https")),
        None,
        "S3-compatible endpoint (MinIO, R2, Ceph...), e.g. http://127.0.0.1:9000; unset: AWS.",
    ),
    Variable(
        "MEDIA_URL_SECRET",
        "media_url_secret",
        _parse_str,
        None,
        "HMAC key of signed media URLs (32+ characters). Unset: derived from JWT_SECRET.",
    ),
    Variable(
        "MEDIA_URL_TTL",
        "media_url_ttl",
        parse_duration,
        "1h",
        "How long a signed media URL stays valid (rounded up to a quarter of this, so URLs repeat).",
    ),
    Variable(
        "MEDIA_THUMBNAIL_MAX_PIXELS",
        "media_thumbnail_max_pixels",
        _parse_positive_int,
        "50000000",
        "Largest image (width x height) a thumbnail is made of; a bigger one is stored without.",
    ),
    Variable(
        "CALL_RING_TIMEOUT",
        "call_ring_timeout",
        parse_duration,
        "60s",
        "How long a call rings before it counts as missed.",
    ),
    Variable(
        "CALL_REJOIN_GRACE",
        "call_rejoin_grace",
        parse_duration,
        "30s",
        "How long a device whose socket dropped stays in its call, to come back with call.join.",
    ),
    Variable(
        "CALL_SIGNAL_MAX_BYTES",
        "call_signal_max_bytes",
        _parse_positive_int,
        "65536",
        "Largest call.signal payload (an SDP offer with many codecs fits in 16 KB).",
    ),
    Variable(
        "CALL_SIGNAL_RATE_LIMIT",
        "call_signal_rate_limit",
        parse_rate_limit,
        "200/10s",
        "call.signal frames one device may send per call (ICE candidates come in bursts).",
    ),
    Variable(
        "ICE_STUN_URLS",
        "ice_stun_urls",
        _parse_csv,
        "",
        "STUN servers given to callers, comma-separated (e.g. stun:stun.example.com:3478).",
    ),
    Variable(
        "TURN_URLS",
        "turn_urls",
        _parse_csv,
        "",
        "TURN servers given to callers with per-call credentials, comma-separated "
        "(e.g. turn:turn.example.com:3478?transport=udp,turns:turn.example.com:5349).",
    ),
    Variable(
        "TURN_SECRET",
        "turn_secret",
        _parse_str,
        None,
        "coturn's static-auth-secret (use-auth-secret): TURN credentials are HMACs of it.",
    ),
    Variable(
        "TURN_CREDENTIAL_TTL",
        "turn_credential_ttl",
        parse_duration,
        "2h",
        "How long issued TURN credentials stay valid (a call longer than this loses its relay).",
    ),
    Variable(
        "LIVEKIT_URL",
        "livekit_url",
        _parse_url(("http", "https", "ws", "wss")),
        None,
        "LiveKit server for group calls (its API and clients' URL). Unset: group calls use the built-in SFU.",
    ),
    Variable("LIVEKIT_API_KEY", "livekit_api_key", _parse_str, None, "LiveKit API key."),
    Variable("LIVEKIT_API_SECRET", "livekit_api_secret", _parse_str, None, "LiveKit API secret."),
    Variable(
        "SFU_MAX_PARTICIPANTS",
        "sfu_max_participants",
        _parse_positive_int,
        "30",
        "Participants the built-in SFU takes on one node, over all its calls; more get call_capacity.",
    ),
    Variable(
        "CALL_MAX_PARTICIPANTS_BASIC",
        "call_max_participants_basic",
        _parse_positive_int,
        "4",
        "Most participants in a call started by a basic-tier user.",
    ),
    Variable(
        "CALL_MAX_PARTICIPANTS_PREMIUM",
        "call_max_participants_premium",
        _parse_positive_int,
        "50",
        "Most participants in a call started by a user on any paid tier.",
    ),
    Variable(
        "CALL_MAX_DURATION_BASIC",
        "call_max_duration_basic",
        parse_duration,
        "1h",
        "Longest call started by a basic-tier user; it then ends with reason time_limit.",
    ),
    Variable(
        "CALL_MAX_DURATION_PREMIUM",
        "call_max_duration_premium",
        parse_duration,
        "8h",
        "Longest call started by a user on any paid tier.",
    ),
    Variable(
        "CALL_VIDEO_BASIC",
        "call_video_basic",
        _parse_bool,
        "true",
        "Whether basic-tier users may start video calls (false: audio only, video needs a paid tier).",
    ),
    Variable(
        "WEB_DIST_DIR",
        "web_dist_dir",
        lambda text: Path(text).expanduser(),
        None,
        "The built web app served at / (npm run build --prefix web). Unset: web/dist of the checkout "
        "the server runs from.",
    ),
    Variable(
        "VAPID_PUBLIC_KEY",
        "vapid_public_key",
        _parse_base64url_key(65, "an uncompressed P-256 public key (65 bytes)"),
        None,
        "Web Push: the VAPID public key (base64url), with VAPID_PRIVATE_KEY. Unset outside production: "
        "a pair is generated once into KINTSUGI_DATA_DIR; unset in production: push is off.",
    ),
    Variable(
        "VAPID_PRIVATE_KEY",
        "vapid_private_key",
        _parse_base64url_key(32, "a raw P-256 private key (32 bytes)"),
        None,
        "Web Push: the VAPID private key (base64url; `kintsugi-rt vapid-keys` prints a new pair).",
    ),
    Variable(
        "VAPID_SUBJECT",
        "vapid_subject",
        _parse_vapid_subject,
        None,
        "Web Push: who push services may contact about this server (mailto:ops@example.com or an "
        "https:// URL). Required in production with the keys.",
    ),
    Variable(
        "PUSH_MESSAGE_PREVIEW",
        "push_message_preview",
        _parse_bool,
        "false",
        "Whether a message's push shows its text (truncated); false: only the sender and 'New message'.",
    ),
    Variable(
        "PUSH_RATE_LIMIT",
        "push_rate_limit",
        parse_rate_limit,
        "20/1m",
        "Push notifications one user may be sent (all devices, all kinds together); more are skipped.",
    ),
    Variable(
        "PUSH_CONCURRENCY",
        "push_concurrency",
        _parse_positive_int,
        "16",
        "Requests to push services in flight at once per node.",
    ),
    Variable(
        "PUSH_MESSAGE_TTL",
        "push_message_ttl",
        parse_duration,
        "24h",
        "How long a push service keeps a message's push for a device that is offline "
        "(a call's push lives CALL_RING_TIMEOUT).",
    ),
    Variable(
        "PUSH_MAX_RETRIES",
        "push_max_retries",
        _parse_non_negative_int,
        "3",
        "Retries (with backoff, or the push service's Retry-After) after a 429, a 5xx or a network error.",
    ),
    Variable(
        "AGENT_SECRETS_KEY",
        "agent_secrets_key",
        _parse_agent_key,
        None,
        "Agents: the AES-256 key (base64 of 32 bytes: openssl rand -base64 32) that encrypts tool "
        "endpoint secrets at rest. Required in production for agents with secrets; unset elsewhere: "
        "generated once into KINTSUGI_DATA_DIR.",
    ),
    Variable(
        "AGENT_SECRETS_KEYS_OLD",
        "agent_secrets_keys_old",
        _parse_agent_keys,
        "",
        "Agents: comma-separated earlier AGENT_SECRETS_KEYs, still accepted for decrypting (rotation: "
        "docs/agents.md, then kintsugi-rt agents rekey).",
    ),
    Variable(
        "PUSH_TIMEOUT",
        "push_timeout",
        parse_duration,
        "10s",
        "Longest one request to a push service may take.",
    ),
    Variable(
        "AGENT_WEBHOOK_TIMEOUT",
        "agent_webhook_timeout",
        parse_duration,
        "15s",
        "Agents: longest one call of a tool's webhook may take (connecting and reading, redirects included).",
    ),
    Variable(
        "AGENT_WEBHOOK_MAX_BYTES",
        "agent_webhook_max_bytes",
        _parse_positive_int,
        "262144",
        "Agents: largest answer read from a tool's webhook; a longer one fails as response_too_large.",
    ),
    Variable(
        "AGENT_WEBHOOK_ALLOW",
        "agent_webhook_allow",
        _parse_webhook_allow,
        "",
        "Agents: comma-separated CIDRs and host[:port] names a tool's webhook may reach although they are "
        "not public (loopback, private, link-local ...), plain http included. Empty: public https only.",
    ),
)


def env_example() -> str:
    """The text of ``.env.example``: every variable, its meaning and its default."""
    lines = [
        "# Kintsugi RT settings, read from the environment. Every variable is optional in development.",
        "# Values shown are the defaults (blank: unset). Regenerate with: kintsugi-rt env-example",
    ]
    for var in VARIABLES:
        lines += ["", f"# {var.doc}", f"{var.name}={var.default or ''}"]
    return "\n".join(lines) + "\n"


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read and check every variable; raise ``SettingsError`` naming the first bad one."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for var in VARIABLES:
        raw = env.get(var.name)
        if raw is None or (raw.strip() == "" and var.default is None):
            values[var.field] = None if var.default is None else var.parse(var.default)
            continue
        try:
            values[var.field] = var.parse(raw)
        except ValueError as exc:
            raise SettingsError(f"{var.name}: {exc}") from None
    settings = Settings(**values)
    if settings.is_production:
        _require_production_settings(settings)
    if settings.database_pool_min > settings.database_pool_max:
        raise SettingsError("DATABASE_POOL_MIN: must not exceed DATABASE_POOL_MAX")
    if settings.openai_api_key and settings.chat_default_model not in {m.id for m in settings.chat_models}:
        raise SettingsError("CHAT_DEFAULT_MODEL: must be one of the CHAT_MODELS ids")
    _check_vapid(settings)
    return settings.replace(jwt_secret=_resolve_jwt_secret(settings))


def _require_production_settings(settings: Settings) -> None:
    """Production never falls back to development's embedded database or generated secret."""
    missing = []
    if settings.database_url is None:
        missing.append("DATABASE_URL")
    if settings.jwt_secret in KNOWN_PLACEHOLDER_SECRETS:
        missing.append("JWT_SECRET")
    if missing:
        raise SettingsError(
            f"{', '.join(missing)}: required in production (the embedded database and the generated "
            "secret are for development; set ENVIRONMENT=development to use them)"
        )


def _check_vapid(settings: Settings) -> None:
    """The VAPID keys come as a pair; production names its contact with them."""
    public, private = settings.vapid_public_key, settings.vapid_private_key
    if public is not None and private is None:
        raise SettingsError("VAPID_PRIVATE_KEY: required with VAPID_PUBLIC_KEY")
    if private is not None and public is None:
        raise SettingsError("VAPID_PUBLIC_KEY: required with VAPID_PRIVATE_KEY")
    if settings.is_production and private is not None and settings.vapid_subject is None:
        raise SettingsError("VAPID_SUBJECT: required in production with the VAPID keys (mailto: or https://)")


def _resolve_jwt_secret(settings: Settings) -> str:
    secret = settings.jwt_secret
    if settings.is_production:
        if secret in KNOWN_PLACEHOLDER_SECRETS:
            raise SettingsError("JWT_SECRET: must be set to a private value in production")
        if len(secret) < MIN_PRODUCTION_SECRET_LENGTH:
            raise SettingsError(
                f"JWT_SECRET: must be at least {MIN_PRODUCTION_SECRET_LENGTH} characters in production"
            )
        return secret
    if secret and secret not in KNOWN_PLACEHOLDER_SECRETS:
        return secret
    return _development_secret(settings.data_dir)


def _development_secret(data_dir: Path) -> str:
    """Generate a secret once and keep it, so development tokens survive restarts.

    The file is written under a temporary name and linked into place, so two nodes starting
    together agree on one secret.
    """
    path = data_dir / "jwt_secret"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        staging = data_dir / f".jwt_secret.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(48) + "\n")
        try:
            os.link(staging, path)
        except FileExistsError:
            pass
        finally:
            staging.unlink()
    return path.read_text().strip()
