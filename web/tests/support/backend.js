// @ts-check
/**
 * A real `kintsugi-rt serve` for the browser tests and the Lighthouse script (plain ESM so that both
 * the Playwright runner and `node lighthouse/run.mjs` can load it), the way the TypeScript client's
 * tests start theirs (clients/typescript/test/harness.ts): a fresh database on the real PostgreSQL
 * (TEST_DATABASE_URL, else postgresql://postgres@127.0.0.1:5432/postgres, else an embedded one from the
 * venv), the real Redis under a key prefix of its own when one answers (TEST_REDIS_URL, else
 * redis://127.0.0.1:6379), ENVIRONMENT=test, cheap argon2, and the built app (web/dist) served at `/`.
 * `restart()` starts it again on the same port and database; `stop()` drops the database.
 */
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { createConnection, createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import pg from "pg";

export const SERVER_BIN = fileURLToPath(new URL("../../../.venv/bin/kintsugi-rt", import.meta.url));
const VENV_PYTHON = fileURLToPath(new URL("../../../.venv/bin/python", import.meta.url));
export const WEB_DIST = process.env.KINTSUGI_WEB_DIST ?? fileURLToPath(new URL("../../dist", import.meta.url));
const LOCAL_DSN = "postgresql://postgres@127.0.0.1:5432/postgres";
const REDIS_URL = process.env.TEST_REDIS_URL ?? "redis://127.0.0.1:6379/0";

/** @returns {Promise<number>} */
export async function freePort() {
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

/** The same DSN with another database (`postgresql://u@h:p/<db>?…`). */
function withDatabase(/** @type {string} */ dsn, /** @type {string} */ database) {
  const match = /^([a-z]+:\/\/[^/]*)\/?([^?]*)(\?.*)?$/i.exec(dsn);
  if (!match) throw new Error(`not a PostgreSQL URL: ${dsn}`);
  return `${match[1]}/${database}${match[3] ?? ""}`;
}

async function connects(/** @type {string} */ dsn) {
  const client = new pg.Client({ connectionString: dsn, connectionTimeoutMillis: 3_000 });
  try {
    await client.connect();
    await client.end();
    return true;
  } catch {
    return false;
  }
}

// The server's own embedded PostgreSQL when no real one answers (as the Python and TS tests do).
const EMBEDDED = `
import asyncio, sys, tempfile
from pathlib import Path
from kintsugi_rt.db.embedded import EmbeddedPostgres
async def main():
    with tempfile.TemporaryDirectory(prefix="kintsugi-web-pg-") as d:
        pg = EmbeddedPostgres(Path(d) / "pg")
        await pg.start()
        print("DSN " + pg.dsn("postgres"), flush=True)
        await asyncio.to_thread(sys.stdin.read)
        await pg.stop()
asyncio.run(main())
`;

/** @type {Promise<string> | null} */
let adminDsnPromise = null;
/** @type {import("node:child_process").ChildProcess | null} */
let embedded = null;
let liveBackends = 0;

function adminDsn() {
  adminDsnPromise ??= (async () => {
    if (process.env.TEST_DATABASE_URL) return process.env.TEST_DATABASE_URL;
    if (await connects(LOCAL_DSN)) return LOCAL_DSN;
    const child = spawn(VENV_PYTHON, ["-c", EMBEDDED], { stdio: ["pipe", "pipe", "pipe"] });
    let output = "";
    child.stderr?.on("data", (d) => (output += d.toString()));
    const dsn = await new Promise((resolve, reject) => {
      child.stdout?.on("data", (d) => {
        output += d.toString();
        const line = output.split("\n").find((l) => l.startsWith("DSN "));
        if (line) resolve(line.slice(4).trim());
      });
      child.on("exit", (code) =>
        reject(new Error(`no PostgreSQL: none at ${LOCAL_DSN}, and the embedded one failed (${code}):\n${output}`)),
      );
    });
    embedded = child;
    return /** @type {string} */ (dsn);
  })();
  return adminDsnPromise;
}

async function adminQuery(/** @type {string} */ sql) {
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
export async function redisAnswers(/** @type {string} */ url = REDIS_URL) {
  /** @type {URL} */
  let parsed;
  try {
    parsed = new URL(url);
  } catch {
    return false;
  }
  if (parsed.protocol !== "redis:") return false;
  return new Promise((resolve) => {
    const socket = createConnection({ host: parsed.hostname, port: Number(parsed.port || 6379) });
    const done = (/** @type {boolean} */ ok) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(1_000, () => done(false));
    socket.on("error", () => done(false));
    socket.on("connect", () => socket.write("PING\r\n"));
    socket.on("data", (data) => done(data.toString().startsWith("+PONG")));
  });
}

/**
 * @typedef {object} Backend
 * @property {string} baseUrl   http://127.0.0.1:PORT (the app is at `/`)
 * @property {number} port
 * @property {string} databaseUrl
 * @property {boolean} redis
 * @property {() => string} log          the server's output so far
 * @property {() => Promise<void>} kill   SIGKILL (no close frames: pages see 1006)
 * @property {() => Promise<void>} shutdown  SIGTERM: a graceful stop (close frames), the database kept
 * @property {() => Promise<void>} restart  start again on the same port and database
 * @property {() => Promise<void>} stop   stop the server and drop the database
 */

/**
 * @param {{ env?: Record<string, string>, port?: number }} [options]
 * @returns {Promise<Backend>}
 */
export async function startBackend(options = {}) {
  if (!existsSync(SERVER_BIN)) {
    throw new Error(`${SERVER_BIN} is missing: create the venv first (\`make web-test\` from the repository root does)`);
  }
  if (!existsSync(join(WEB_DIST, "index.html"))) {
    throw new Error(`${WEB_DIST}/index.html is missing: \`npm run build --prefix web\` first`);
  }
  const suffix = randomBytes(6).toString("hex");
  const database = `kintsugi_web_${suffix}`;
  await adminQuery(`CREATE DATABASE "${database}"`);
  const databaseUrl = withDatabase(await adminDsn(), database);
  liveBackends++;
  const redis = await redisAnswers(REDIS_URL);
  const port = options.port ?? (await freePort());
  const dataDir = mkdtempSync(join(tmpdir(), "kintsugi-web-"));
  const baseUrl = `http://127.0.0.1:${port}`;
  /** @type {Record<string, string>} */
  const env = {
    PATH: process.env.PATH ?? "/usr/bin:/bin",
    HOME: process.env.HOME ?? dataDir,
    ENVIRONMENT: "test",
    JWT_SECRET: `test-secret-${"x".repeat(40)}`,
    ARGON2_TIME_COST: "1",
    ARGON2_MEMORY_KIB: "8192",
    ARGON2_PARALLELISM: "1",
    AUTH_RATE_LIMIT_IP: "10000/1m",
    AUTH_RATE_LIMIT_EMAIL: "10000/1m",
    AUTH_RATE_LIMIT_EMAIL_IP: "10000/1m",
    USER_LOOKUP_RATE_LIMIT: "10000/1m",
    USER_SEARCH_RATE_LIMIT: "10000/1m",
    CHAT_DEMO_TOKENS_PER_SECOND: "200",
    CORS_ORIGINS: baseUrl,
    DATABASE_URL: databaseUrl,
    KINTSUGI_DATA_DIR: dataDir,
    WEB_DIST_DIR: WEB_DIST,
    HOST: "127.0.0.1",
    PORT: String(port),
    LOG_LEVEL: "warning",
    ...(redis ? { REDIS_URL, REDIS_KEY_PREFIX: `kintsugi_web_${suffix}:` } : {}),
    ...options.env,
  };
  let output = "";
  /** @type {import("node:child_process").ChildProcess | null} */
  let proc = null;

  const launch = async () => {
    const child = spawn(SERVER_BIN, ["serve"], { env, stdio: ["ignore", "pipe", "pipe"] });
    proc = child;
    child.stdout?.on("data", (d) => (output += d.toString()));
    child.stderr?.on("data", (d) => (output += d.toString()));
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

  const exited = (/** @type {import("node:child_process").ChildProcess} */ child) =>
    child.exitCode !== null || child.signalCode !== null
      ? Promise.resolve()
      : new Promise((resolve) => child.once("exit", () => resolve(undefined)));

  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
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
    if (--liveBackends === 0) embedded?.stdin?.end();
  };

  try {
    await launch();
  } catch (error) {
    await stop();
    throw error;
  }
  return {
    baseUrl,
    port,
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
    async shutdown() {
      const child = proc;
      if (!child) return;
      proc = null;
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 15_000);
      await exited(child);
      clearTimeout(timer);
    },
    restart: launch,
    stop,
  };
}

export function sleep(/** @type {number} */ ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
