"""Fault injection over real connections: a TCP relay in front of PostgreSQL or Redis.

The server under test is pointed at the relay instead of the real service, so a test can take the
service away the way an outage does — without touching the machine's PostgreSQL or Redis, which
other tests (and other test runs) share:

- ``down()``: open connections are reset and new ones refused (a restart, a crash, a network cut);
- ``hang()``: connections stay open but nothing comes back (a stuck server, a black-holed route);
- ``up()``: service as usual again.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Literal

Mode = Literal["up", "down", "hang"]


class TcpRelay:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.mode: Mode = "up"
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        # One listening socket for the relay's whole life, so its port never changes.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self._server = await asyncio.start_server(self._accept, sock=sock)
        return self.port

    def url(self, scheme_and_auth: str, path: str = "") -> str:
        """E.g. ``relay.url("postgresql://postgres@", "/db")``."""
        return f"{scheme_and_auth}127.0.0.1:{self.port}{path}"

    def down(self) -> None:
        self.mode = "down"
        self._cut_all()

    def hang(self) -> None:
        self.mode = "hang"

    def up(self) -> None:
        self.mode = "up"

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        self._cut_all()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def _cut_all(self) -> None:
        for writer in list(self._writers):
            _reset(writer)
        self._writers.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode == "down":
            _reset(writer)
            return
        self._writers.add(writer)
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            _reset(writer)
            return
        self._writers.add(upstream_writer)
        pumps = [
            asyncio.create_task(self._pump(reader, upstream_writer)),
            asyncio.create_task(self._pump(upstream_reader, writer)),
        ]
        for task in pumps:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        for task in pumps:
            task.cancel()
        for end in (writer, upstream_writer):
            self._writers.discard(end)
            _reset(end)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while True:
                data = await reader.read(65536)
                if not data:
                    return
                while self.mode == "hang":  # swallow nothing, send nothing: the peer just waits
                    await asyncio.sleep(0.05)
                if self.mode == "down":
                    return
                writer.write(data)
                await writer.drain()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset, as a crashed peer would."""
    transport = writer.transport
    if transport.is_closing():
        return
    with contextlib.suppress(OSError):
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    transport.abort()
