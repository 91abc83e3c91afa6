/**
 * `npm run gen`: write src/generated/protocol.ts from ../../docs/schema.json.
 *
 * docs/schema.json is `kintsugi-rt schema`'s output, committed. When it is missing (a checkout from
 * before it was committed), the schema is taken from `../../.venv/bin/kintsugi-rt schema` instead.
 */
import { writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { generate } from "./codegen.js";
import { loadSchema } from "./schema-source.js";

const target = fileURLToPath(new URL("../src/generated/protocol.ts", import.meta.url));
const { schema, source } = loadSchema();
writeFileSync(target, generate(schema, { source }));
console.log(`wrote ${target} from ${source}`);
