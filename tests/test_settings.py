from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from kintsugi_rt.settings import (
    VARIABLES,
    SettingsError,
    env_example,
    load_settings,
    parse_duration,
    parse_rate_limit,
)

ROOT = Path(__file__).resolve().parent.parent


def test_defaults_follow_the_roadmap(tmp_path: Path) -> None:
    settings = load_settings({"KINTSUGI_DATA_DIR": str(tmp_path)})
    assert settings.port == 8080
    assert settings.environment == "development"
    assert settings.database_url is None
    assert settings.redis_url is None
    assert settings.jwt_access_expiry == timedelta(minutes=15)
    assert settings.jwt_refresh_expiry == timedelta(hours=168)
    assert settings.data_dir == tmp_path


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("15m", timedelta(minutes=15)),
        ("168h", timedelta(hours=168)),
        ("1h30m", timedelta(minutes=90)),
        ("250ms", timedelta(milliseconds=250)),
        ("2d", timedelta(days=2)),
    ],
)
def test_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "15", "m", "15x", "-5m", "0s", "15 m"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="duration|longer than zero"):
        parse_duration(text)


def test_rate_limit_format() -> None:
    rule = parse_rate_limit("20/1m")
    assert (rule.limit, rule.window) == (20, timedelta(minutes=1))
    with pytest.raises(ValueError):
        parse_rate_limit("20")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PORT", "eighty"),
        ("PORT", "70000"),
        ("ENVIRONMENT", "staging"),
        ("JWT_ACCESS_EXPIRY", "15 minutes"),
        ("DATABASE_URL", "mysql://x"),
        ("REDIS_URL", "localhost:6379"),
        ("AUTH_RATE_LIMIT_IP", "lots"),
        ("USER_LOOKUP_RATE_LIMIT", "30"),
        ("USER_SEARCH_RATE_LIMIT", "0/1m"),
        ("LOG_LEVEL", "loud"),
    ],
)
def test_bad_value_names_the_variable(name: str, value: str, tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=f"^{name}: "):
        load_settings({name: value, "KINTSUGI_DATA_DIR": str(tmp_path)})


@pytest.mark.parametrize("secret", [None, "", "your-super-secret-jwt-key-change-in-production", "short"])
def test_production_refuses_missing_or_weak_secret(secret: str | None, tmp_path: Path) -> None:
    env = {
        "ENVIRONMENT": "production",
        "KINTSUGI_DATA_DIR": str(tmp_path),
        "DATABASE_URL": "postgresql://db.internal/kintsugi",
    }
    if secret is not None:
        env["JWT_SECRET"] = secret
    with pytest.raises(SettingsError, match="^JWT_SECRET: "):
        load_settings(env)
    assert not (tmp_path / "jwt_secret").exists()


def test_production_accepts_a_real_secret(tmp_path: Path) -> None:
    secret = "p" * 48
    settings = load_settings(
        {
            "ENVIRONMENT": "production",
            "JWT_SECRET": secret,
            "KINTSUGI_DATA_DIR": str(tmp_path),
            "DATABASE_URL": "postgresql://db.internal/kintsugi",
        }
    )
    assert settings.jwt_secret == secret
    assert settings.json_logs


def test_development_secret_is_generated_once_and_kept(tmp_path: Path) -> None:
    first = load_settings({"KINTSUGI_DATA_DIR": str(tmp_path)})
    second = load_settings({"KINTSUGI_DATA_DIR": str(tmp_path)})
    assert len(first.jwt_secret) >= 32
    assert first.jwt_secret == second.jwt_secret
    assert (tmp_path / "jwt_secret").stat().st_mode & 0o077 == 0
    assert list(tmp_path.iterdir()) == [tmp_path / "jwt_secret"]


def test_env_example_lists_every_variable() -> None:
    text = (ROOT / ".env.example").read_text()
    assert text == env_example(), "regenerate with: kintsugi-rt env-example > .env.example"
    listed = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", text, flags=re.MULTILINE))
    assert listed == {var.name for var in VARIABLES}


def test_cli_stops_on_a_bad_value_and_names_it(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "kintsugi_rt", "serve"],
        env={"PORT": "nope", "KINTSUGI_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "PORT: 'nope' is not a whole number" in result.stderr


def test_protocol_doc_is_generated_from_the_types() -> None:
    from kintsugi_rt.protocol_doc import build_registry, protocol_markdown

    assert (ROOT / "docs" / "protocol.md").read_text() == protocol_markdown(build_registry()), (
        "regenerate with: kintsugi-rt protocol-doc > docs/protocol.md"
    )


def test_schema_command_prints_every_frame() -> None:
    import json

    result = subprocess.run(
        [sys.executable, "-m", "kintsugi_rt", "schema"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    schema = json.loads(result.stdout)
    titles = set(schema["$defs"])
    assert {"Auth", "Ping", "Resume", "PresenceWatch", "Hello", "Error", "Resumed", "Presence"} <= titles


def _dockerfile_env() -> dict[str, str]:
    """The variables the Dockerfile's ENV instructions set (``ENV A=1 \\ B=2`` style)."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            for pair in line[4:].split():
                name, _, value = pair.partition("=")
                env[name] = value
    return env


def test_the_image_runs_in_production_and_names_what_is_missing(tmp_path: Path) -> None:
    """Regression (F23): the image ran in development mode, so it would have started an embedded
    PostgreSQL, the offline-demo model and a generated JWT secret."""
    env = {
        **_dockerfile_env(),
        "KINTSUGI_DATA_DIR": str(tmp_path),
        "PATH": os.environ["PATH"],
    }
    assert env.get("ENVIRONMENT") == "production", env
    done = subprocess.run(
        [sys.executable, "-m", "kintsugi_rt", "serve"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    assert "DATABASE_URL, JWT_SECRET: required in production" in done.stderr, done.stderr[-2000:]
    assert not (tmp_path / "postgres").exists() and not (tmp_path / "jwt_secret").exists()
