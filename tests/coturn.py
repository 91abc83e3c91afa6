"""A real coturn ``turnserver`` on loopback for the tests: TURN REST API auth, UDP and TCP, no TLS.

``make test`` installs coturn when ``turnserver`` is missing (the Makefile's ``system-deps``). The
server listens on 127.0.0.1 on a free port, relays on 127.0.0.1 and allows loopback peers (coturn
refuses them by default, and every peer here is on loopback), keeps its SQLite database, pid file and
log in a temporary directory, and is stopped at the end. ``Coturn.log()`` shows its log on a failure.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REALM = "kintsugi.test"
_STUN_MAGIC = 0x2112A442


@dataclass(frozen=True)
class Coturn:
    """A running turnserver: where it listens and the ``static-auth-secret`` its credentials use."""

    host: str
    port: int
    secret: str
    realm: str
    log_path: Path
    pid: int

    @property
    def url(self) -> str:
        """The TURN url for ``TURN_URLS``: ``turn:127.0.0.1:<port>?transport=udp``."""
        return f"turn:{self.host}:{self.port}?transport=udp"

    @property
    def tcp_url(self) -> str:
        return f"turn:{self.host}:{self.port}?transport=tcp"

    @property
    def stun_url(self) -> str:
        return f"stun:{self.host}:{self.port}"

    def env(self) -> dict[str, str]:
        """Settings overrides that point the server's calls at this TURN server."""
        return {"TURN_URLS": self.url, "TURN_SECRET": self.secret}

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_lines(self, *texts: str, timeout: float = 3.0) -> list[str]:
        """The log lines holding every one of ``texts``, once there is one (coturn writes its log from
        several threads, a little later than it acts); [] after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            lines = [line for line in self.log().splitlines() if all(text in line for text in texts)]
            if lines or time.monotonic() > deadline:
                return lines
            time.sleep(0.05)


def turnserver_binary() -> str:
    path = shutil.which("turnserver")
    if path is None:
        raise RuntimeError(
            "coturn's turnserver is not installed: `make test` installs it (or run `make system-deps`, "
            "i.e. apt-get install coturn)"
        )
    return path


def _free_udp_and_tcp_port() -> int:
    """A loopback port free for both UDP and TCP (coturn listens on both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port: int = udp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free loopback port for UDP and TCP")


def stun_binding_answered(host: str, port: int, timeout: float = 0.2) -> bool:
    """Whether a STUN Binding request over UDP gets a Binding success response."""
    transaction = secrets.token_bytes(12)
    request = (
        (0x0001).to_bytes(2, "big") + (0).to_bytes(2, "big") + _STUN_MAGIC.to_bytes(4, "big") + transaction
    )
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.sendto(request, (host, port))
            data = sock.recv(2048)
        except OSError:  # timeout, or ICMP port unreachable while it starts
            return False
    return len(data) >= 20 and data[:2] == b"\x01\x01" and data[8:20] == transaction


def turnserver_command(binary: str, workdir: Path, port: int, secret: str, realm: str = REALM) -> list[str]:
    return [
        binary,
        "-n",  # no configuration file: only these options
        "--listening-ip=127.0.0.1",
        f"--listening-port={port}",
        "--relay-ip=127.0.0.1",
        "--allow-loopback-peers",
        "--use-auth-secret",
        f"--static-auth-secret={secret}",
        f"--realm={realm}",
        "--fingerprint",
        "--no-tls",
        "--no-dtls",
        "--no-cli",
        "--no-rfc5780",
        "--no-multicast-peers",
        f"--userdb={workdir / 'turndb'}",
        f"--pidfile={workdir / 'turnserver.pid'}",
        f"--log-file={workdir / 'turnserver.log'}",
        "--verbose",  # sessions and allocations, with their usernames
        "--simple-log",
        "--no-stdout-log",
    ]


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def running_coturn(secret: str | None = None, *, start_timeout: float = 10.0) -> Iterator[Coturn]:
    """Start a turnserver on a free loopback port, wait until it answers STUN, stop it on exit."""
    binary = turnserver_binary()
    secret = secret or secrets.token_urlsafe(24)
    with tempfile.TemporaryDirectory(prefix="kintsugi-test-turn-") as tmp:
        workdir = Path(tmp)
        problems: list[str] = []
        for _attempt in range(3):  # another process may take the free port before coturn binds it
            port = _free_udp_and_tcp_port()
            log_path = workdir / "turnserver.log"
            proc = subprocess.Popen(
                turnserver_command(binary, workdir, port, secret),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                cwd=workdir,
                env={**os.environ, "HOME": tmp},
            )
            deadline = time.monotonic() + start_timeout
            while proc.poll() is None and time.monotonic() < deadline:
                if stun_binding_answered("127.0.0.1", port):
                    server = Coturn("127.0.0.1", port, secret, REALM, log_path, proc.pid)
                    try:
                        yield server
                    finally:
                        _stop(proc)
                    return
                time.sleep(0.05)
            _stop(proc)
            log = log_path.read_text(errors="replace") if log_path.exists() else ""
            problems.append(f"port {port}: exit code {proc.returncode}\n{log[-2000:]}")
            log_path.unlink(missing_ok=True)
        raise RuntimeError("turnserver did not start:\n" + "\n".join(problems))
