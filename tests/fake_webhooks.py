"""Local fakes of the receivers an agent's tool calls: an n8n Webhook node, a Make custom webhook, and
a generic receiver that verifies ``X-Kintsugi-Signature``, for tests.

- ``POST /n8n``: n8n's "Header Auth": the header ``n8n_header`` must hold ``n8n_secret`` (else 403, as
  n8n answers "Authorization data is wrong!"); answers the body as JSON, as "Respond: immediately" with
  "Response Data: First Entry JSON" does, wrapped as ``{"received": <body>}``.
- ``POST /make``: ``x-make-apikey`` must be ``make_secret`` (else 401); answers ``Accepted`` as text, or
  JSON when ``make_json`` is set (a scenario with a "Webhook response" module).
- ``POST /hmac``: the signature over the raw body with ``hmac_secret`` and ``tolerance`` (else 401).

Every path takes ``?mode=``: ``slow`` (sleeps ``slow_seconds`` before answering), ``huge`` (streams
``huge_bytes``), ``flaky`` (503 with ``Retry-After: 0`` the first ``flaky_failures`` times, then as usual),
``redirect`` (307 to ``?to=<url>``), ``loop`` (307 to itself). Every request is recorded in ``requests``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from kintsugi_rt.agents.bindings import SIGNATURE_HEADER, verify_signature
from tests.support import _InLoopServer


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


class FakeWebhooks:
    def __init__(self) -> None:
        self.n8n_header = "X-N8N-Key"
        self.n8n_secret = "n8n-secret-value-1234"
        self.make_secret = "make-secret-value-5678"
        self.make_json = False
        self.hmac_secret = "hmac-secret-value-9012"
        self.tolerance = 300
        self.slow_seconds = 30.0
        self.huge_bytes = 1024 * 1024
        self.flaky_failures = 1
        self.requests: list[Received] = []
        self._flaky_seen = 0
        self._server: _InLoopServer | None = None
        self._task: asyncio.Task[None] | None = None
        self.url = ""
        self.app = Starlette(routes=[Route("/{kind}", self._receive, methods=["POST", "GET"])])

    async def _receive(self, request: Request) -> Response:
        kind = request.path_params["kind"]
        body = await request.body()
        self.requests.append(Received(kind, {k.lower(): v for k, v in request.headers.items()}, body))
        mode = request.query_params.get("mode", "")
        if mode == "redirect":
            return RedirectResponse(request.query_params["to"], status_code=307)
        if mode == "loop":
            return RedirectResponse(str(request.url), status_code=307)
        if mode == "flaky" and self._flaky_seen < self.flaky_failures:
            self._flaky_seen += 1
            return PlainTextResponse("try later", status_code=503, headers={"Retry-After": "0"})
        if mode == "slow":
            await asyncio.sleep(self.slow_seconds)
        if mode == "huge":
            return StreamingResponse(self._huge(), media_type="text/plain")
        if kind == "n8n":
            if request.headers.get(self.n8n_header) != self.n8n_secret:
                return PlainTextResponse("Authorization data is wrong!", status_code=403)
            return JSONResponse({"received": _json(body)})
        if kind == "make":
            if request.headers.get("x-make-apikey") != self.make_secret:
                return PlainTextResponse("Unauthorized", status_code=401)
            if self.make_json:
                return JSONResponse({"result": "done", "received": _json(body)})
            return PlainTextResponse("Accepted")
        if kind == "hmac":
            header = request.headers.get(SIGNATURE_HEADER, "")
            if not verify_signature(self.hmac_secret, header, body, self.tolerance):
                return PlainTextResponse("bad signature", status_code=401)
            return JSONResponse({"received": _json(body)})
        return PlainTextResponse("not found", status_code=404)

    async def _huge(self) -> AsyncIterator[bytes]:
        chunk = b"x" * 65536
        for _ in range(self.huge_bytes // len(chunk)):
            yield chunk

    async def start(self, host: str = "127.0.0.1") -> str:
        config = uvicorn.Config(
            self.app, host=host, port=0, log_config=None, access_log=False, lifespan="off"
        )
        server = _InLoopServer(config)
        task = asyncio.create_task(server.serve())
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("FakeWebhooks stopped during start-up")
            await asyncio.sleep(0.01)
        self._server, self._task = server, task
        port = server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://{host}:{port}"
        return self.url

    async def stop(self) -> None:
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        self._server.force_exit = True
        await self._task
        self._server = self._task = None


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None
