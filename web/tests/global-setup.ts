import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { FullConfig } from "@playwright/test";
import { startBackend } from "./support/backend.js";

/**
 * One real server for the suite (tests that restart a server or need other settings start their own
 * with `startBackend`): its URL reaches the workers as KINTSUGI_WEB_URL. The returned function is the
 * teardown: it stops the server, drops its database and keeps the server's output (warnings and
 * errors) in tests/results/server.log.
 */
export default async function globalSetup(config: FullConfig): Promise<() => Promise<void>> {
  // A small token limit makes one demo answer visible in the header chip (a percentage).
  const backend = await startBackend({ env: { BASIC_TOKEN_LIMIT: "5000" } });
  process.env.KINTSUGI_WEB_URL = backend.baseUrl;
  // For tests that change what the app cannot (a user's tier: tests/fixtures.ts setTier).
  process.env.KINTSUGI_WEB_DATABASE_URL = backend.databaseUrl;
  process.env.KINTSUGI_WEB_REDIS = backend.redis ? "1" : "";
  return async () => {
    await backend.stop();
    const dir = config.projects[0]?.outputDir ?? join(config.rootDir, "results");
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, "server.log"), backend.log());
  };
}
