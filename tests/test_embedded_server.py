"""`kintsugi-rt serve` as a user runs it: no configuration, embedded PostgreSQL, SIGTERM to stop."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import httpx
import psutil

from tests.support import free_port, spawn_server, wait_ready


def postgres_processes(pgdata: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(attrs=["name", "cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if proc.info["name"] == "postgres" and any(str(pgdata) in part for part in cmdline):
            found.append(proc)
    return found


async def test_zero_config_serve_register_me_and_sigterm(tmp_path: Path) -> None:
    port = free_port()
    data_dir = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "REDIS_", "JWT_"))}
    env.update({"PORT": str(port), "KINTSUGI_DATA_DIR": str(data_dir), "ARGON2_MEMORY_KIB": "8192"})
    proc = await spawn_server(env, stderr=asyncio.subprocess.PIPE)
    try:
        await wait_ready(f"http://127.0.0.1:{port}", proc)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            assert postgres_processes(data_dir / "postgres"), "the embedded PostgreSQL runs in the data dir"
            registered = await client.post(
                "/api/auth/register",
                json={"email": "ann@example.com", "password": "correct horse battery", "display_name": "Ann"},
            )
            assert registered.status_code == 201
            token = registered.json()["access_token"]
            me = await client.get("/api/auth/me", headers={"Authorization": f"Bearer {token}"})
            assert me.json()["email"] == "ann@example.com"
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(proc.communicate(), timeout=60)
    # uvicorn finishes the shutdown, then re-raises SIGTERM so the exit status tells how it ended.
    assert proc.returncode in (0, -signal.SIGTERM), stderr.decode()
    log = stderr.decode()
    assert "server.stopping" in log
    assert "embedded_postgres.stopped" in log
    assert (data_dir / "jwt_secret").exists()
    assert not postgres_processes(data_dir / "postgres"), "the embedded PostgreSQL stops with the server"
