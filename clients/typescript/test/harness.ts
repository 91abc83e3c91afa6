/**
 * Test plumbing: a real `kintsugi-rt serve` on a free port, against a fresh database on the real
 * PostgreSQL (TEST_DATABASE_URL, else postgresql://postgres@127.0.0.1:5432/postgres, else an embedded
 * one started from the venv, as tests/support.py does) and, when one
 * answers, the real Redis (TEST_REDIS_URL, else redis://127.0.0.1:6379) under a key prefix of its own.
 * The same settings as the Python tests (tests/support.py): ENVIRONMENT=test, a fixed JWT_SECRET,
 * cheap argon2. Each test file starts its own server(s) and database, dropped at the end.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { createConnection, createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import pg from "pg";
import WebSocket from "ws";
import { AuthApi, AuthSession, KintsugiClient, type ClientOptions, type WebSocketConstructor, type WebSocketLike } from "../src/index.js";

export const SERVER_BIN = fileURLToPath(new URL("../../../.venv/bin/kintsugi-rt", import.meta.url));
const VENV_PYTHON = fileURLToPath(new URL("../../../.venv/bin/python", import.meta.url));
const LOCAL_DSN = "postgresql://postgres@127.0.0.1:5432/postgres";
const REDIS_URL = process.env.TEST_REDIS_URL ?? "redis://127.0.0.1:6379/0";

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

/** The same DSN with another database (`postgresql://u@h:p/<db>?…`, also `…@/<db>?host=/socket/dir`). */
function withDatabase(dsn: string, database: string): string {
  const match = /^([a-z]+:\/\/[^/]*)\/?([^?]*)(\?.*)?$/i.exec(dsn);
  if (!match) throw new Error(`not a PostgreSQL URL: ${dsn}`);
  return `${match[1]}/${database}${match[3] ?? ""}`;
}

async function connects(dsn: string): Promise<boolean> {
  const client = new pg.Client({ connectionString: dsn, connectionTimeoutMillis: 3_000 });
  try {
    await client.connect();
    await client.end();
    return true;
  } catch {
    return false;
  }
}

// An embedded PostgreSQL (the server's own, from the venv) when no real one answers, as the Python
// tests do; it lives as long as this test process.
const EMBEDDED = `
import asyncio, sys, tempfile
from pathlib import Path
from kintsugi_rt.db.embedded import EmbeddedPostgres
async def main():
    with tempfile.TemporaryDirectory(prefix="kintsugi-ts-pg-") as d:
        pg = EmbeddedPostgres(Path(d) / "pg")
        await pg.start()
        print("DSN " + pg.dsn("postgres"), flush=True)
        await asyncio.to_thread(sys.stdin.read)
        await pg.stop()
asyncio.run(main())
`;

let adminDsnPromise: Promise<string> | null = null;

/** Where test databases are created: TEST_DATABASE_URL, the local server, or an embedded one. */
function adminDsn(): Promise<string> {
  adminDsnPromise ??= (async () => {
    if (process.env.TEST_DATABASE_URL) return process.env.TEST_DATABASE_URL;
    if (!process.env.KINTSUGI_TS_EMBEDDED_PG && (await connects(LOCAL_DSN))) return LOCAL_DSN;
    const child = spawn(VENV_PYTHON, ["-c", EMBEDDED], { stdio: ["pipe", "pipe", "pipe"] });
    let output = "";
    child.stderr.on("data", (d: Buffer) => (output += d.toString()));
    const dsn = await new Promise<string>((resolve, reject) => {
      child.stdout.on("data", (d: Buffer) => {
        output += d.toString();
        const line = output.split("\n").find((l) => l.startsWith("DSN "));
        if (line) resolve(line.slice(4).trim());
      });
      child.on("exit", (code) => reject(new Error(`no PostgreSQL: none at ${LOCAL_DSN}, and the embedded one failed (${code}):\n${output}`)));
    });
    embedded = child;
    return dsn;
  })();
  return adminDsnPromise;
}

let embedded: ChildProcess | null = null;
let liveBackends = 0;

async function adminQuery(sql: string): Promise<void> {
  const dsn = await adminDsn();
  const client = new pg.Client({ connectionString: dsn, connectionTimeoutMillis: 5_000 });
  try {
    await client.connect();
  } catch (error) {
    throw new Error(`PostgreSQL is not reachable at ${dsn} (${String(error)}); start it or set TEST_DATABASE_URL`);
  }
  try {
    await client.query(sql);
  } finally {
    await client.end();
  }
}

/** Whether a Redis answers PING at `url` (redis://host:port only). */
async function redisAnswers(url: string): Promise<boolean> {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return false;
  }
  if (parsed.protocol !== "redis:") return false;
  return new Promise((resolve) => {
    const socket = createConnection({ host: parsed.hostname, port: Number(parsed.port || 6379) });
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(1_000, () => done(false));
    socket.on("error", () => done(false));
    socket.on("connect", () => socket.write("PING\r\n"));
    socket.on("data", (data) => done(data.toString().startsWith("+PONG")));
  });
}

export interface Backend {
  baseUrl: string;
  wsUrl: string;
  databaseUrl: string;
  redis: boolean;
  /** Server output so far (printed when a test fails). */
  log(): string;
  /** SIGKILL the server (no shutdown, no close frames: clients see 1006). */
  kill(): Promise<void>;
  /** Start it again on the same port and database. */
  restart(): Promise<void>;
  /** Stop the server and drop the database. */
  stop(): Promise<void>;
}

export interface BackendOptions {
  /** Extra settings, e.g. { JWT_ACCESS_EXPIRY: "3s" }. */
  env?: Record<string, string>;
}

export async function startBackend(options: BackendOptions = {}): Promise<Backend> {
  if (!existsSync(SERVER_BIN)) {
    throw new Error(`${SERVER_BIN} is missing: create the venv first (\`make ts-test\` from the repository root does)`);
  }
  const suffix = randomBytes(6).toString("hex");
  const database = `kintsugi_ts_${suffix}`;
  await adminQuery(`CREATE DATABASE "${database}"`);
  const databaseUrl = withDatabase(await adminDsn(), database);
  liveBackends++;
  const redis = await redisAnswers(REDIS_URL);
  const port = await freePort();
  const dataDir = mkdtempSync(join(tmpdir(), "kintsugi-ts-"));
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? "/usr/bin:/bin",
    HOME: process.env.HOME ?? dataDir,
    ENVIRONMENT: "test",
    JWT_SECRET: `test-secret-${"x".repeat(40)}`,
    ARGON2_TIME_COST: "1",
    ARGON2_MEMORY_KIB: "8192",
    ARGON2_PARALLELISM: "1",
    AUTH_RATE_LIMIT_IP: "10000/1m",
    AUTH_RATE_LIMIT_EMAIL_IP: "10000/1m",
    DATABASE_URL: databaseUrl,
    KINTSUGI_DATA_DIR: dataDir,
    HOST: "127.0.0.1",
    PORT: String(port),
    LOG_LEVEL: "warning",
    ...(redis ? { REDIS_URL, REDIS_KEY_PREFIX: `kintsugi_ts_${suffix}:` } : {}),
    ...options.env,
  };
  const baseUrl = `http://127.0.0.1:${port}`;
  let output = "";
  let proc: ChildProcess | null = null;

  const launch = async () => {
    const child = spawn(SERVER_BIN, ["serve"], { env, stdio: ["ignore", "pipe", "pipe"] });
    proc = child;
    child.stdout?.on("data", (d: Buffer) => (output += d.toString()));
    child.stderr?.on("data", (d: Buffer) => (output += d.toString()));
    const deadline = Date.now() + 30_000;
    while (Date.now() < deadline) {
      if (child.exitCode !== null) throw new Error(`kintsugi-rt serve exited with ${child.exitCode}:\n${output}`);
      try {
        const response = await fetch(`${baseUrl}/readyz`);
        if (response.status === 200) return;
      } catch {
        // not listening yet
      }
      await sleep(50);
    }
    throw new Error(`kintsugi-rt serve was not ready within 30 s:\n${output}`);
  };

  const exited = (child: ChildProcess) =>
    child.exitCode !== null || child.signalCode !== null
      ? Promise.resolve()
      : new Promise<void>((resolve) => child.once("exit", () => resolve()));

  const stop = async () => {
    const child = proc;
    proc = null;
    if (child) {
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 5_000);
      await exited(child);
      clearTimeout(timer);
    }
    rmSync(dataDir, { recursive: true, force: true });
    await adminQuery(`DROP DATABASE IF EXISTS "${database}" WITH (FORCE)`);
    if (--liveBackends === 0) embedded?.stdin?.end(); // an embedded PostgreSQL stops with the last backend
  };

  try {
    await launch();
  } catch (error) {
    await stop();
    throw error;
  }
  return {
    baseUrl,
    wsUrl: `ws://127.0.0.1:${port}/ws`,
    databaseUrl,
    redis,
    log: () => output,
    async kill() {
      const child = proc;
      if (!child) return;
      proc = null;
      child.kill("SIGKILL");
      await exited(child);
    },
    restart: launch,
    stop,
  };
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Wait until `check()` is true (polling), or fail with `what`. */
export async function eventually(check: () => boolean, what: string, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

let userCounter = 0;

/** Register a new user; its session (tokens, refresh) and user id. */
export async function newUser(backend: Backend, name = "user"): Promise<{ session: AuthSession; userId: string; email: string }> {
  const api = new AuthApi(backend.baseUrl);
  const email = `${name}-${process.pid}-${++userCounter}-${randomBytes(3).toString("hex")}@example.com`;
  const tokens = await api.register({ email, password: "correct horse battery staple", display_name: name });
  return { session: new AuthSession(api, tokens, { minValidityMs: 500 }), userId: tokens.user!.id, email };
}

/** A client for `session` on `backend` (the `ws` package as WebSocket, quick reconnects). */
export function clientFor(backend: Backend, session: AuthSession, options: Partial<ClientOptions> = {}): KintsugiClient {
  return new KintsugiClient({
    url: backend.wsUrl,
    token: session.accessToken,
    getToken: session.getToken,
    WebSocket: WebSocket as unknown as WebSocketConstructor,
    reconnect: { baseMs: 100, maxMs: 1_000 },
    ...options,
  });
}

/**
 * A WebSocket class that lets a test see (and drop) frames: `onServerFrame` returns "drop" to hide a
 * frame from the client, "drop-and-cut" to hide it and cut the connection (the client sees 1006).
 */
export function interceptingWebSocket(hooks: {
  onClientFrame?: (frame: Record<string, unknown>) => void;
  onServerFrame?: (frame: Record<string, unknown>) => "pass" | "drop" | "drop-and-cut";
}): WebSocketConstructor {
  return class Intercepting implements WebSocketLike {
    private readonly inner: WebSocket;
    onopen: ((event: unknown) => void) | null = null;
    onmessage: ((event: { data: unknown }) => void) | null = null;
    onclose: ((event: { code: number; reason: string }) => void) | null = null;
    onerror: ((event: unknown) => void) | null = null;

    constructor(url: string, protocols?: string | string[]) {
      this.inner = new WebSocket(url, protocols);
      this.inner.binaryType = "arraybuffer";
      this.inner.onopen = (e) => this.onopen?.(e);
      this.inner.onerror = (e) => this.onerror?.(e);
      this.inner.onclose = (e) => this.onclose?.({ code: e.code, reason: e.reason });
      this.inner.onmessage = (e) => {
        if (typeof e.data === "string" && hooks.onServerFrame) {
          const verdict = hooks.onServerFrame(JSON.parse(e.data) as Record<string, unknown>);
          if (verdict === "drop") return;
          if (verdict === "drop-and-cut") {
            this.inner.terminate();
            return;
          }
        }
        this.onmessage?.({ data: e.data });
      };
    }

    get readyState() {
      return this.inner.readyState;
    }
    get protocol() {
      return this.inner.protocol;
    }
    get binaryType() {
      return this.inner.binaryType;
    }
    set binaryType(value: string) {
      this.inner.binaryType = value as "arraybuffer";
    }
    send(data: string | ArrayBufferLike | ArrayBufferView) {
      if (typeof data === "string") hooks.onClientFrame?.(JSON.parse(data) as Record<string, unknown>);
      this.inner.send(data as string);
    }
    close(code?: number, reason?: string) {
      this.inner.close(code, reason);
    }
  };
}
