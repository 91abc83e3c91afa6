"""Agent tool steps benchmark (issue 15): the time the server adds per tool step, webhook excluded.

    .venv/bin/python -m loadtests.agent_steps --runs 64 --rounds 5 --steps 4

Three processes on 127.0.0.1 (with PostgreSQL and Redis):

- one ``kintsugi-rt serve`` node on a fresh database and Redis key prefix (``loadtests.fanout.cluster``),
  its model provider pointed at the simulator (``OPENAI_MAX_RETRIES=0``), ``AGENT_WEBHOOK_ALLOW=127.0.0.1``;
- the upstream process (this module with ``--upstream``, uvloop): the OpenAI simulator
  (``loadtests.openai_sim``, no pacing: ``ttft 0``, ``tps 0``) with a ``tool_script`` of ``--steps``
  turns of one tool call then a text answer, and a webhook receiver answering every POST at once with
  a small JSON body. Both record their timestamps with ``time.monotonic()`` in this one process: one
  clock, and the server's time is what lies between them;
- this process: the client (uvloop), ``--runs`` users (tier ``premium_starter``, set in the database as
  the tests do), each with an agent with one tool (``hmac`` endpoint: the call is signed) and a socket.

After a warm-up round, ``--rounds`` rounds of ``--runs`` concurrent ``agent.chat.send``, each round
waiting for every ``agent.done``. For each tool step k of a run:

- **call** = webhook request received - simulator's last chunk of the tool-call turn written: the rest
  of the model stream, the turn's billing settlement (ledger row, Redis counter, tier query,
  ``usage.updated``), the ``agent.step`` running event, the arguments' JSON Schema check, the URL check,
  connecting, signing and sending;
- **resume** = next simulator request received - webhook answer written: reading the answer, the
  ``agent.step`` result event (its step row and durable event are written by another task, concurrently),
  the next turn's prompt estimate and token reservation (a transaction: tier query, Redis script),
  the provider request;
- **step** = call + resume: the server's overhead per tool step.

Runs/s counts whole runs (``--steps`` tool steps and a text answer each) over the measured rounds.
Everything shares the machine's cores with PostgreSQL and Redis: read the numbers with the CPU and
the load average printed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import asyncpg
import httpx
import msgspec
import psutil
import uvloop
from starlette.types import Receive, Scope, Send
from websockets.asyncio.client import ClientConnection

from loadtests.fanout import (
    HOST,
    Account,
    CpuWindow,
    Reader,
    _free_port,
    _percentile,
    _raise_nofile,
    _register,
    close_all,
    cluster,
    connect_all,
)
from loadtests.openai_sim import OpenAISimulator, SimConfig

API_KEY = "sk-sim-test"
MODEL = "gpt-4o-mini"
TOOL = "lookup_order"
HMAC_SECRET = "bench-hmac-secret-" + "s" * 24
ANSWER = b'{"order":"A-17","status":"shipped","eta":"2026-12-03"}'
ORDER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"order": {"type": "string"}},
    "required": ["order"],
    "additionalProperties": False,
}
MAX_RUNS = 1_000
MAX_ROUNDS = 100
MAX_STEPS = 19  # step_limit is at most 20: the steps and the final answer
RUN_TIMEOUT = 120.0


# --- the upstream process: simulator + webhook receiver -------------------------------------------------


@dataclass
class Hook:
    user: str
    received_at: float
    answered_at: float = 0.0


class Receiver:
    """A webhook receiver answering at once, and ``GET /timings`` (what it and the simulator recorded)."""

    def __init__(self, sim: OpenAISimulator) -> None:
        self.sim = sim
        self.hooks: list[Hook] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        received_at = time.monotonic()
        if scope["method"] == "GET" and scope["path"] == "/timings":
            body = msgspec.json.encode(self.timings())
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"application/json")],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        more = True
        while more:  # read the whole request body
            message = await receive()
            more = message.get("more_body", False)
        user = parse_qs(scope.get("query_string", b"").decode()).get("u", ["?"])[0]
        hook = Hook(user, received_at)
        self.hooks.append(hook)
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(ANSWER)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": ANSWER})
        hook.answered_at = time.monotonic()

    def timings(self) -> dict[str, Any]:
        requests = []
        for r in self.sim.requests:
            messages = r.body.get("messages") or []
            tag = next((m.get("content") for m in messages if m.get("role") == "user"), None)
            requests.append(
                {
                    "tag": tag,
                    "turn": r.script_turn,
                    "status": r.status,
                    "started_at": r.started_at,
                    "finished_at": r.finished_at,
                }
            )
        hooks = [
            {"user": h.user, "received_at": h.received_at, "answered_at": h.answered_at} for h in self.hooks
        ]
        return {"requests": requests, "hooks": hooks}


async def serve_upstream(steps: int, ttft: float) -> None:
    import uvicorn

    script: list[str | list[dict[str, Any]]] = [
        [{"name": TOOL, "arguments": {"order": f"A-{k}"}}] for k in range(steps)
    ]
    script.append("Order A-17 has shipped and arrives on December 3.")
    sim = OpenAISimulator(SimConfig(api_key=API_KEY, ttft=ttft, tokens_per_second=0.0, tool_script=script))
    sim_url = await sim.start(HOST, 0)
    receiver = Receiver(sim)
    port = _free_port()
    config = uvicorn.Config(
        receiver, host=HOST, port=port, lifespan="off", log_config=None, log_level="warning", access_log=False
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("the webhook receiver stopped during start-up")
        await asyncio.sleep(0.01)
    print(json.dumps({"sim": sim_url, "hooks": f"http://{HOST}:{port}"}), flush=True)
    try:
        await task  # until SIGTERM / SIGINT (uvicorn's handlers)
    finally:
        await sim.stop()


# --- the client -----------------------------------------------------------------------------------------


class _Frame(msgspec.Struct):
    type: str
    id: str | None = None
    code: str | None = None
    run_id: str | None = None
    status: str | None = None
    error_code: str | None = None
    agent: dict[str, Any] | None = None


_decode = msgspec.json.Decoder(_Frame).decode


class AgentClient(Reader):
    def __init__(self, account: Account, ws: ClientConnection, closes: Counter[int]) -> None:
        self.replies: dict[str, asyncio.Future[_Frame]] = {}
        self.done: dict[str, asyncio.Future[_Frame]] = {}
        self.steps: Counter[str] = Counter()
        self.seq = 0
        self.agent_id = ""
        super().__init__(account, ws, closes)

    def on_frame(self, raw: str | bytes, now: float) -> None:
        frame = _decode(raw)
        if frame.type in ("ok", "error") and frame.id is not None:
            future = self.replies.pop(frame.id, None)
            if future is not None and not future.done():
                future.set_result(frame)
        elif frame.type == "agent.step" and frame.status is not None:
            self.steps[frame.status] += 1
        elif frame.type == "agent.done" and frame.run_id is not None:
            waiting = self.done.setdefault(frame.run_id, asyncio.get_running_loop().create_future())
            if not waiting.done():
                waiting.set_result(frame)

    async def request(self, type_: str, **fields: Any) -> _Frame:
        self.seq += 1
        request_id = f"r{self.seq}"
        future: asyncio.Future[_Frame] = asyncio.get_running_loop().create_future()
        self.replies[request_id] = future
        await self.ws.send(msgspec.json.encode({"type": type_, "id": request_id, **fields}).decode())
        return await asyncio.wait_for(future, 30)

    async def run(self, content: str, delay: float = 0.0) -> str:
        """One agent.chat.send (after ``delay``) and its agent.done; the done status (or what went wrong)."""
        await asyncio.sleep(delay)
        reply = await self.request("agent.chat.send", agent_id=self.agent_id, content=content)
        if reply.type != "ok" or reply.run_id is None:
            return f"send {reply.type} {reply.code}"
        waiting = self.done.setdefault(reply.run_id, asyncio.get_running_loop().create_future())
        try:
            done = await asyncio.wait_for(waiting, RUN_TIMEOUT)
        except TimeoutError:
            return "timeout"
        return f"{done.status} {done.error_code}" if done.error_code else done.status or "?"


@dataclass
class Parts:
    call: list[float] = field(default_factory=list)
    resume: list[float] = field(default_factory=list)
    step: list[float] = field(default_factory=list)
    unmatched: int = 0


def measure(timings: dict[str, Any], runs: int, rounds: int, steps: int) -> Parts:
    """Pair each measured run's simulator requests with its webhook calls (same user, in time order)."""
    requests: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in timings["requests"]:
        if r["tag"] and r["status"] == 200:
            requests[r["tag"]].append(r)
    hooks: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for h in timings["hooks"]:
        hooks[h["user"]].append(h)
    parts = Parts()
    for user in range(runs):
        mine = sorted(hooks[str(user)], key=lambda h: h["received_at"])
        for round_ in range(rounds):
            turns = sorted(requests[f"u{user} r{round_}"], key=lambda r: r["started_at"])
            if len(turns) != steps + 1 or any(t["finished_at"] is None for t in turns):
                parts.unmatched += 1
                continue
            start, end = turns[0]["started_at"], turns[-1]["started_at"]
            calls = [h for h in mine if start <= h["received_at"] <= end]
            if len(calls) != steps:
                parts.unmatched += 1
                continue
            for k, hook in enumerate(calls):
                call = hook["received_at"] - turns[k]["finished_at"]
                resume = turns[k + 1]["started_at"] - hook["answered_at"]
                parts.call.append(call)
                parts.resume.append(resume)
                parts.step.append(call + resume)
    return parts


async def probe(db: asyncpg.Connection, samples: list[float]) -> None:
    """A trivial transaction every 20 ms: how long PostgreSQL itself takes to answer meanwhile."""
    while True:
        started = time.perf_counter()
        async with db.transaction():
            await db.execute("SELECT 1")
        samples.append(time.perf_counter() - started)
        await asyncio.sleep(0.02)


def _row(name: str, values: list[float]) -> str:
    ordered = sorted(values)
    cells = [f"{_percentile(ordered, q) * 1000:.2f}" for q in (0.5, 0.9, 0.99)]
    cells.append(f"{ordered[-1] * 1000:.2f}" if ordered else "-")
    return f"| {name} | " + " | ".join(cells) + " |"


def start_upstream(steps: int, ttft: float) -> tuple[subprocess.Popen[bytes], str, str]:
    """Start the upstream process and read its URLs (its first line; it exits if it cannot serve)."""
    command = [sys.executable, "-m", "loadtests.agent_steps", "--upstream", "--steps", str(steps)]
    command += ["--ttft", str(ttft)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE)
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        raise SystemExit(f"the upstream process exited with {process.wait()}")
    urls = json.loads(line)
    return process, urls["sim"], urls["hooks"]


def stop_upstream(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


async def run(args: argparse.Namespace) -> None:
    _raise_nofile(args.runs * 4 + 1024)
    print(f"{psutil.cpu_count()} cores; load average at start {_load()}", flush=True)
    upstream, sim_url, hooks_url = start_upstream(args.steps, args.ttft)
    upstream_ps = psutil.Process(upstream.pid)
    print(f"simulator {sim_url}, webhook receiver {hooks_url}", flush=True)
    os.environ.update(
        {
            "OPENAI_API_KEY": API_KEY,
            "OPENAI_BASE_URL": sim_url,
            "OPENAI_MAX_RETRIES": "0",
            "CHAT_MODELS": json.dumps(
                [{"id": MODEL, "label": "Mini", "context_window": 128000, "max_output": 16384}]
            ),
            "CHAT_DEFAULT_MODEL": MODEL,
            "AGENT_WEBHOOK_ALLOW": HOST,
            # A limit the runs never reach (not -1: the reservation path is measured as it runs).
            "PREMIUM_STARTER_TOKEN_LIMIT": "1000000000",
        }
    )
    if args.pool is not None:
        os.environ["DATABASE_POOL_MAX"] = str(args.pool)
    try:
        async with cluster(1, "agentsteps") as bench:
            await _bench(args, bench.nodes, bench.database_url, hooks_url, upstream_ps)
    finally:
        stop_upstream(upstream)
    print(f"load average at end {_load()}", flush=True)


async def _bench(
    args: argparse.Namespace, nodes: list[Any], database_url: str, hooks_url: str, upstream_ps: psutil.Process
) -> None:
    accounts = await _register(nodes, args.runs, concurrency=16)
    db = await asyncpg.connect(database_url)
    try:
        await db.execute(
            "UPDATE users SET tier = 'premium_starter' WHERE id = ANY($1::uuid[])",
            [a.user_id for a in accounts],
        )
    finally:
        await db.close()
    closes: Counter[int] = Counter()
    clients = await connect_all(
        nodes, accounts, lambda a, ws: AgentClient(a, ws, closes), concurrency=16, max_queue=1024
    )
    try:
        for index, client in enumerate(clients):
            reply = await client.request(
                "agent.create",
                name="Orders",
                handle=f"orders_{uuid.uuid4().hex[:12]}",
                model=MODEL,
                instructions="You look orders up.",
                step_limit=args.steps + 1,
                tools=[
                    {
                        "name": TOOL,
                        "description": "Look an order up.",
                        "parameters": ORDER_SCHEMA,
                        "endpoint": {
                            "kind": "hmac",
                            "url": f"{hooks_url}/hook?u={index}",
                            "secret": HMAC_SECRET,
                        },
                    }
                ],
            )
            if reply.type != "ok" or reply.agent is None:
                raise SystemExit(f"agent.create answered {reply.type} {reply.code}")
            client.agent_id = reply.agent["id"]

        statuses: Counter[str] = Counter()
        warm = await asyncio.gather(*(c.run(f"u{i} warm-up") for i, c in enumerate(clients)))
        statuses.update(f"warm-up {s}" for s in warm)
        probe_db = await asyncpg.connect(database_url)
        probes: list[float] = []
        probing = asyncio.create_task(probe(probe_db, probes))
        window = CpuWindow(nodes)
        up0 = sum(upstream_ps.cpu_times()[:2])
        started = time.monotonic()
        for round_ in range(args.rounds):
            done = await asyncio.gather(
                *(c.run(f"u{i} r{round_}", args.spread * i / len(clients)) for i, c in enumerate(clients))
            )
            statuses.update(done)
        wall = time.monotonic() - started
        cpu = window.end()
        upstream_cpu = sum(upstream_ps.cpu_times()[:2]) - up0
        probing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await probing
        await probe_db.close()
        async with httpx.AsyncClient(timeout=30) as http:
            timings = (await http.get(f"{hooks_url}/timings")).json()
    finally:
        await close_all(clients)

    parts = measure(timings, len(clients), args.rounds, args.steps)
    total_runs = len(clients) * args.rounds
    print()
    print(
        f"{len(clients)} concurrent runs x {args.rounds} rounds, {args.steps} tool steps + 1 answer each: "
        f"{total_runs} runs in {wall:.2f} s = {total_runs / wall:.1f} runs/s, "
        f"{total_runs * args.steps / wall:.0f} tool steps/s"
    )
    events = sum((c.steps for c in clients), Counter[str]())
    print(f"run statuses: {dict(statuses)}; agent.step events by status: {dict(events)}")
    print(f"node CPU per run: {cpu.nodes[0] / total_runs * 1000:.1f} ms ({args.steps + 1} model turns)")
    print(f"steps measured: {len(parts.step)} (runs not matched: {parts.unmatched})")
    print()
    print("| per tool step (ms) | p50 | p90 | p99 | max |")
    print("|---|---|---|---|---|")
    print(_row("call: last model chunk -> webhook request", parts.call))
    print(_row("resume: webhook answer -> next model request", parts.resume))
    print(_row("step: call + resume", parts.step))
    print()
    print()
    print(f"PostgreSQL probe (BEGIN; SELECT 1; COMMIT from the client, every 20 ms): {_row('ms', probes)}")
    print(f"node CPU: {cpu.nodes[0]:.1f} s = {cpu.nodes[0] / cpu.wall * 100:.0f}% of a core")
    print(f"upstream (simulator + receiver) CPU: {upstream_cpu / cpu.wall * 100:.0f}% of a core")
    cpu.print_rest()
    if closes:
        print(f"sockets closed by the server: {dict(closes)}")


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.agent_steps", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--runs", type=int, default=64, help="concurrent agent runs (one user each)")
    parser.add_argument("--rounds", type=int, default=5, help="measured rounds, after one warm-up round")
    parser.add_argument("--steps", type=int, default=4, help="tool steps per run (then a text answer)")
    parser.add_argument(
        "--ttft", type=float, default=0.0, help="the simulator's seconds to the first token of every turn"
    )
    parser.add_argument(
        "--spread", type=float, default=0.0, help="seconds over which each round's runs start (evenly)"
    )
    parser.add_argument("--pool", type=int, help="the node's DATABASE_POOL_MAX (default: the server's)")
    parser.add_argument("--upstream", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not (1 <= args.runs <= MAX_RUNS and 1 <= args.rounds <= MAX_ROUNDS and 1 <= args.steps <= MAX_STEPS):
        parser.error(f"--runs 1..{MAX_RUNS}, --rounds 1..{MAX_ROUNDS}, --steps 1..{MAX_STEPS}")
    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(serve_upstream(args.steps, args.ttft) if args.upstream else run(args))


if __name__ == "__main__":
    main()
