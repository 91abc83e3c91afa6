"""`kintsugi-rt serve` as a user runs it: no configuration, embedded PostgreSQL, SIGTERM to stop."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import httpx
import psutil

from tests.support import free_port


async def wait_ready(client: httpx.AsyncClient, proc: asyncio.subprocess.Process) -> None:
    for _ in range(600):
        if proc.returncode is not None:
            raise AssertionError(f"server exited with {proc.returncode}")
        try:
            if (await client.get("/readyz")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.1)
    raise AssertionError("server did not become ready in 60 s")


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
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "kintsugi_rt",
        "serve",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            await wait_ready(client, proc)
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
