/** (f) src/generated/protocol.ts is what `npm run gen` makes from docs/schema.json today. */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { generate } from "../scripts/codegen.js";
import { loadSchema } from "../scripts/schema-source.js";
import { CLOSE_CODES, CLOSE_POLICY, EVENT_TYPES, REQUEST_TYPES } from "../src/index.js";

const GENERATED = fileURLToPath(new URL("../src/generated/protocol.ts", import.meta.url));

test("the generated protocol types are fresh (run `npm run gen` if not)", () => {
  const { schema, source } = loadSchema();
  const expected = generate(schema, { source });
  const actual = readFileSync(GENERATED, "utf8");
  if (actual !== expected) {
    const a = actual.split("\n");
    const e = expected.split("\n");
    const line = a.findIndex((text, i) => text !== e[i]);
    assert.fail(
      `src/generated/protocol.ts is stale against ${source}: first difference at line ${line + 1}:\n` +
        `  committed: ${a[line] ?? "(end of file)"}\n  expected:  ${e[line] ?? "(end of file)"}\n` +
        "Run `npm run gen` in clients/typescript.",
    );
  }
});

test("the generated maps cover the protocol's frames", () => {
  for (const type of ["auth", "ping", "resume", "message.send", "chat.send", "conversation.create"]) {
    assert.ok((REQUEST_TYPES as readonly string[]).includes(type), type);
  }
  for (const type of ["hello", "error", "message.new", "chat.delta", "chat.done", "resync_required"]) {
    assert.ok((EVENT_TYPES as readonly string[]).includes(type), type);
  }
});

test("every close code the server documents has a client policy", () => {
  for (const code of Object.keys(CLOSE_CODES).map(Number)) {
    assert.ok(CLOSE_POLICY[code], `close code ${code} has no policy in CLOSE_POLICY`);
  }
});
