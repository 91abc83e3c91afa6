import { execFileSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import type { Schema } from "./codegen.js";

const repo = fileURLToPath(new URL("../../../", import.meta.url));
export const SCHEMA_PATH = `${repo}docs/schema.json`;
export const SERVER_BIN = `${repo}.venv/bin/kintsugi-rt`;

/** The protocol schema: docs/schema.json, or (when it is not there) what the server prints. */
export function loadSchema(): { schema: Schema; source: string } {
  if (existsSync(SCHEMA_PATH)) {
    return { schema: JSON.parse(readFileSync(SCHEMA_PATH, "utf8")) as Schema, source: "docs/schema.json" };
  }
  const text = execFileSync(SERVER_BIN, ["schema"], { encoding: "utf8", maxBuffer: 64 * 1024 * 1024 });
  return { schema: JSON.parse(text) as Schema, source: "`kintsugi-rt schema`" };
}
