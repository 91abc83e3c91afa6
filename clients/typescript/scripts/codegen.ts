/**
 * A small JSON Schema → TypeScript generator for the server's socket protocol schema
 * (`kintsugi-rt schema`, committed as docs/schema.json).
 *
 * It understands the subset msgspec emits (objects, `anyOf`, `enum`/`const`, arrays and tuples, maps,
 * `$ref` into `$defs`) and writes, besides one declaration per `$defs` entry:
 *
 * - `Requests`: for every client frame `type`, its frame, its fields (without `type`/`id`) and its reply;
 * - `ServerEvents`: for every server frame `type`, its payload (durable events with `pos`);
 * - runtime lists of the request and event types.
 *
 * The output depends only on the schema, so `test/generated.test.ts` can regenerate it in memory and
 * compare it with the committed `src/generated/protocol.ts`.
 */

export type Schema = { [key: string]: unknown };

type Json = unknown;

const RESERVED = new Set([
  // Global names a generated declaration must not shadow (consumers import them beside their own code).
  "Array", "ArrayBuffer", "Blob", "Boolean", "Date", "Error", "Event", "File", "Function", "Headers",
  "JSON", "Map", "Math", "Number", "Object", "Partial", "Promise", "Record", "Request", "Response",
  "Set", "Storage", "String", "Symbol", "WebSocket", "Location", "Required", "Readonly", "Pick", "Omit",
]);

const IDENT = /^[A-Za-z_$][A-Za-z0-9_$]*$/;

function isObject(value: Json): value is Schema {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function refName(ref: string): string {
  const match = /^#\/(?:\$defs|definitions)\/(.+)$/.exec(ref);
  if (!match?.[1]) throw new Error(`unsupported $ref ${ref}`);
  return decodeURIComponent(match[1].replace(/~1/g, "/").replace(/~0/g, "~"));
}

/** The TypeScript name of a `$defs` entry (PascalCase, never a global's name). */
export function typeName(def: string): string {
  let name = def
    .split(/[^A-Za-z0-9]+/)
    .filter(Boolean)
    .map((part) => part[0]!.toUpperCase() + part.slice(1))
    .join("");
  if (!name || /^[0-9]/.test(name)) name = `T${name}`;
  return RESERVED.has(name) ? `${name}Frame` : name;
}

function literal(value: Json): string {
  return JSON.stringify(value);
}

function docComment(text: string | undefined, indent: string): string[] {
  if (!text) return [];
  const cleaned = text
    .replace(/``([^`]+)``/g, "`$1`")
    .replace(/\*\//g, "*\\/")
    .split(/\r?\n/)
    .map((line) => line.trimEnd());
  while (cleaned.length && cleaned[cleaned.length - 1] === "") cleaned.pop();
  if (!cleaned.length) return [];
  if (cleaned.length === 1) return [`${indent}/** ${cleaned[0]} */`];
  return [`${indent}/**`, ...cleaned.map((line) => (line ? `${indent} * ${line}` : `${indent} *`)), `${indent} */`];
}

function propertyKey(name: string): string {
  return IDENT.test(name) ? name : JSON.stringify(name);
}

function union(parts: string[]): string {
  const unique = [...new Set(parts)];
  if (unique.includes("unknown")) return "unknown";
  return unique.length ? unique.join(" | ") : "never";
}

function needsParens(expr: string): boolean {
  // A union or intersection at the top level (outside braces, brackets and parentheses).
  let depth = 0;
  for (let i = 0; i < expr.length; i++) {
    const ch = expr[i];
    if (ch === "{" || ch === "[" || ch === "(" || ch === "<") depth++;
    else if (ch === "}" || ch === "]" || ch === ")" || ch === ">") depth--;
    else if (depth === 0 && (ch === "|" || ch === "&")) return true;
    else if (ch === '"') {
      for (i++; i < expr.length && expr[i] !== '"'; i++) if (expr[i] === "\\") i++;
    }
  }
  return false;
}

class Emitter {
  constructor(private readonly defs: Schema) {}

  type(schema: Json, indent: string): string {
    if (schema === true || (isObject(schema) && Object.keys(schema).length === 0)) return "unknown";
    if (schema === false) return "never";
    if (!isObject(schema)) return "unknown";
    if (typeof schema.$ref === "string") {
      const name = refName(schema.$ref);
      if (!(name in this.defs)) throw new Error(`$ref to a missing definition: ${schema.$ref}`);
      return typeName(name);
    }
    if ("const" in schema) return literal(schema.const);
    if (Array.isArray(schema.enum)) return union(schema.enum.map(literal));
    const alternatives = (schema.anyOf ?? schema.oneOf) as Json[] | undefined;
    if (Array.isArray(alternatives)) return union(alternatives.map((alt) => this.type(alt, indent)));
    if (Array.isArray(schema.allOf)) {
      const parts = schema.allOf.map((part) => this.type(part, indent));
      return parts.map((p) => (needsParens(p) ? `(${p})` : p)).join(" & ") || "unknown";
    }
    if (Array.isArray(schema.type)) {
      return union(schema.type.map((t) => this.type({ ...schema, type: t }, indent)));
    }
    switch (schema.type) {
      case "string":
        return "string";
      case "integer":
      case "number":
        return "number";
      case "boolean":
        return "boolean";
      case "null":
        return "null";
      case "array":
        return this.array(schema, indent);
      case "object":
        return this.object(schema, indent);
      default:
        if (isObject(schema.properties) || "additionalProperties" in schema) return this.object(schema, indent);
        return "unknown";
    }
  }

  private array(schema: Schema, indent: string): string {
    if (Array.isArray(schema.prefixItems)) {
      const items = schema.prefixItems.map((item) => this.type(item, indent));
      const rest = schema.items === false || schema.items === undefined ? [] : [`...${this.wrap(this.type(schema.items, indent))}[]`];
      return `[${[...items, ...rest].join(", ")}]`;
    }
    if (schema.items === undefined) return "unknown[]";
    return `${this.wrap(this.type(schema.items, indent))}[]`;
  }

  private wrap(expr: string): string {
    return needsParens(expr) ? `(${expr})` : expr;
  }

  /** An object type's body lines (between the braces), at `indent` + 2 spaces. */
  members(schema: Schema, indent: string): string[] {
    const inner = `${indent}  `;
    const lines: string[] = [];
    const required = new Set(Array.isArray(schema.required) ? (schema.required as string[]) : []);
    const properties = isObject(schema.properties) ? schema.properties : {};
    for (const [name, prop] of Object.entries(properties)) {
      lines.push(...docComment(isObject(prop) ? (prop.description as string | undefined) : undefined, inner));
      const optional = required.has(name) ? "" : "?";
      lines.push(`${inner}${propertyKey(name)}${optional}: ${this.type(prop, inner)};`);
    }
    const extra = schema.additionalProperties;
    const hasProps = Object.keys(properties).length > 0;
    if (isObject(extra) || (extra === undefined && !hasProps) || extra === true) {
      const valueType = isObject(extra) ? this.type(extra, inner) : "unknown";
      // With named properties beside it, the index signature must admit their types too.
      lines.push(`${inner}[key: string]: ${hasProps && valueType !== "unknown" ? "unknown" : valueType};`);
    }
    return lines;
  }

  private object(schema: Schema, indent: string): string {
    const lines = this.members(schema, indent);
    if (!lines.length) return "{}";
    return `{\n${lines.join("\n")}\n${indent}}`;
  }
}

/** The `type` tag of a frame definition (`{"type": {"enum": ["auth"]}}` or `{"const": "auth"}`). */
function frameTag(def: Json): string | undefined {
  if (!isObject(def) || !isObject(def.properties)) return undefined;
  const tag = def.properties.type;
  if (!isObject(tag)) return undefined;
  if (typeof tag.const === "string") return tag.const;
  if (Array.isArray(tag.enum) && tag.enum.length === 1 && typeof tag.enum[0] === "string") return tag.enum[0];
  return undefined;
}

/** `type` → definition name for one side ("client" or "server") of the protocol. */
function frameMap(schema: Schema, side: "client" | "server", defs: Schema): Map<string, string> {
  const out = new Map<string, string>();
  // docs/schema.json: `x-requests` / `x-events` map each `type` to `{frame: "<def name>", ...}`.
  const listed = schema[side === "client" ? "x-requests" : "x-events"];
  if (isObject(listed)) {
    for (const [tag, entry] of Object.entries(listed)) {
      if (isObject(entry) && typeof entry.frame === "string") out.set(tag, entry.frame);
    }
    if (out.size) return out;
  }
  // Older layout (`properties.client` / `properties.server` unions with a discriminator).
  const candidates: Json[] = [];
  const props = isObject(schema.properties) ? schema.properties : {};
  candidates.push(props[side], schema[side], (schema["x-frames"] as Schema | undefined)?.[side]);
  for (const candidate of candidates) {
    if (!isObject(candidate)) continue;
    const mapping = isObject(candidate.discriminator) ? candidate.discriminator.mapping : undefined;
    if (isObject(mapping)) {
      for (const [tag, ref] of Object.entries(mapping)) if (typeof ref === "string") out.set(tag, refName(ref));
    }
    const alternatives = (candidate.anyOf ?? candidate.oneOf) as Json[] | undefined;
    if (Array.isArray(alternatives)) {
      for (const alt of alternatives) {
        if (!isObject(alt) || typeof alt.$ref !== "string") continue;
        const name = refName(alt.$ref);
        const tag = frameTag(defs[name]);
        if (tag !== undefined && !out.has(tag)) out.set(tag, name);
      }
    }
    if (out.size) break;
  }
  return out;
}

/** Where a request's ok-reply is described, if the schema says (several layouts are understood). */
function replyDef(schema: Schema, defs: Schema, tag: string, clientDef: string): Json | undefined {
  const listed = schema["x-requests"];
  const entry = isObject(listed) ? listed[tag] : undefined;
  if (isObject(entry) && Array.isArray(entry.replies) && entry.replies.length) {
    const refs = entry.replies.filter((r): r is string => typeof r === "string").map((r) => ({ $ref: `#/$defs/${r}` }));
    return refs.length === 1 ? refs[0] : { anyOf: refs };
  }
  const def = defs[clientDef];
  if (isObject(def)) {
    for (const key of ["x-reply", "x-ok", "x-result", "x-ok-reply"]) if (def[key] !== undefined) return def[key];
  }
  const props = isObject(schema.properties) ? schema.properties : {};
  for (const key of ["replies", "results", "ok"]) {
    for (const holder of [props[key], schema[key], schema[`x-${key}`]]) {
      if (!isObject(holder)) continue;
      const mapping = isObject(holder.discriminator) ? holder.discriminator.mapping : undefined;
      if (isObject(mapping) && typeof mapping[tag] === "string") return { $ref: mapping[tag] };
      if (isObject(holder.properties) && holder.properties[tag] !== undefined) return holder.properties[tag];
      if (holder[tag] !== undefined && isObject(holder[tag])) return holder[tag];
    }
  }
  for (const suffix of ["Reply", "OkReply", "Ok", "Result"]) {
    if (isObject(defs[`${clientDef}${suffix}`])) return { $ref: `#/$defs/${clientDef}${suffix}` };
  }
  return undefined;
}

function isDurable(schema: Schema, def: Json, tag: string): boolean | undefined {
  const listed = schema["x-events"];
  const entry = isObject(listed) ? listed[tag] : undefined;
  if (isObject(entry) && typeof entry.durable === "boolean") return entry.durable;
  if (isObject(def)) {
    if (typeof def["x-durable"] === "boolean") return def["x-durable"];
    if (isObject(def.properties) && "pos" in def.properties) {
      return Array.isArray(def.required) && def.required.includes("pos") ? true : undefined;
    }
  }
  const list = schema["x-durable-events"] ?? (schema["x-kintsugi"] as Schema | undefined)?.durable;
  if (Array.isArray(list)) return list.includes(tag);
  return undefined;
}

function hasProperty(def: Json, name: string): boolean {
  return isObject(def) && isObject(def.properties) && name in def.properties;
}

export interface GenerateOptions {
  /** Where the schema came from, for the header comment. */
  source?: string;
}

/** The text of `src/generated/protocol.ts` for this schema. */
export function generate(schema: Schema, options: GenerateOptions = {}): string {
  const defs = (isObject(schema.$defs) ? schema.$defs : isObject(schema.definitions) ? schema.definitions : {}) as Schema;
  const emitter = new Emitter(defs);
  const out: string[] = [
    "/* eslint-disable */",
    `// Generated by \`npm run gen\` from ${options.source ?? "docs/schema.json"}; do not edit by hand.`,
    ...(typeof schema.title === "string" ? [`// ${schema.title}`] : []),
    "",
  ];

  const names = new Map<string, string>();
  for (const def of Object.keys(defs)) {
    const name = typeName(def);
    if (names.has(name)) throw new Error(`two definitions map to the TypeScript name ${name}`);
    names.set(name, def);
  }
  for (const [defName, def] of Object.entries(defs)) {
    const name = typeName(defName);
    const description = isObject(def) ? (def.description as string | undefined) : undefined;
    out.push(...docComment(description, ""));
    const isPlainObject =
      isObject(def) &&
      (def.type === "object" || (def.type === undefined && isObject(def.properties))) &&
      !def.anyOf && !def.oneOf && !def.allOf && !def.$ref;
    if (isPlainObject) {
      const lines = emitter.members(def, "");
      out.push(lines.length ? `export interface ${name} {\n${lines.join("\n")}\n}` : `export interface ${name} {}`);
    } else {
      out.push(`export type ${name} = ${emitter.type(def, "")};`);
    }
    out.push("");
  }

  const client = frameMap(schema, "client", defs);
  const server = frameMap(schema, "server", defs);
  if (!client.size) throw new Error("the schema lists no client frames (properties.client)");
  if (!server.size) throw new Error("the schema lists no server frames (properties.server)");

  out.push(
    "/** A terminal success reply: `type: \"ok\"`, the request's `id`, and the result's fields beside them. */",
    "export type OkReply<T = { [key: string]: unknown }> = { type: \"ok\"; id: string } & T;",
    "",
    ...(names.has("ClientFrame")
      ? []
      : ["/** Every client frame. */", `export type ClientFrame = ${union([...client.values()].map(typeName))};`, ""]),
    ...(names.has("ServerFrame")
      ? []
      : ["/** Every server frame. */", `export type ServerFrame = ${union([...server.values()].map(typeName))};`, ""]),
    "/** For each client frame `type`: the frame, its fields (all but `type` and `id`), and its reply. */",
    "export interface Requests {",
  );
  for (const [tag, defName] of client) {
    const name = typeName(defName);
    let reply: string;
    if (tag === "ping" && server.has("pong")) reply = typeName(server.get("pong")!);
    else if (tag === "resume" && server.has("resumed")) {
      reply = union(["resumed", "resync_required"].filter((t) => server.has(t)).map((t) => typeName(server.get(t)!)));
    } else {
      const described = replyDef(schema, defs, tag, defName);
      if (described === undefined) reply = "OkReply";
      else if (isObject(described) && Array.isArray(described.anyOf)) reply = emitter.type(described, "    ");
      else {
        const expr = emitter.type(described, "    ");
        const target = isObject(described) && typeof described.$ref === "string" ? defs[refName(described.$ref)] : described;
        const hasType = hasProperty(target, "type");
        const hasId = hasProperty(target, "id");
        if (hasType && hasId) reply = expr;
        else if (hasType) reply = `${expr} & { id: string }`;
        else if (expr === "null" || expr === "{}") reply = "OkReply<{}>";
        else if (hasId) reply = `OkReply<Omit<${expr}, "id">>`;
        else reply = `OkReply<${expr}>`;
      }
    }
    out.push(
      `  ${JSON.stringify(tag)}: {`,
      `    frame: ${name};`,
      `    fields: Omit<${name}, "type" | "id">;`,
      `    reply: ${reply};`,
      "  };",
    );
  }
  out.push("}", "");

  const durable: string[] = [];
  out.push(
    "/** A durable event's position in the user's stream (see docs/delivery.md). */",
    "export interface Positioned {",
    "  pos: number;",
    "}",
    "",
    "/** For each server frame `type` (but `ok`): its payload. Durable events carry `pos`. */",
    "export interface ServerEvents {",
  );
  for (const [tag, defName] of server) {
    if (tag === "ok") continue;
    const name = typeName(defName);
    const known = isDurable(schema, defs[defName], tag);
    if (known) durable.push(tag);
    const payload = hasProperty(defs[defName], "pos") ? name : known === true ? `${name} & Positioned` : known === false ? name : `${name} & Partial<Positioned>`;
    out.push(`  ${JSON.stringify(tag)}: ${payload};`);
  }
  out.push("}", "");

  const list = (items: string[]) =>
    items.length ? `[\n${items.map((t) => `  ${JSON.stringify(t)},`).join("\n")}\n]` : "[]";
  out.push(
    "export type RequestType = keyof Requests;",
    "export type EventType = keyof ServerEvents;",
    "",
    `export const REQUEST_TYPES = ${list([...client.keys()])} as const satisfies readonly RequestType[];`,
    "",
    `export const EVENT_TYPES = ${list([...server.keys()].filter((t) => t !== "ok"))} as const satisfies readonly EventType[];`,
    "",
    "/** Server events the schema marks durable (empty when it does not say; any frame with `pos` is durable). */",
    `export const DURABLE_EVENT_TYPES: readonly EventType[] = ${list(durable)};`,
    "",
  );
  const record = (value: Json, numeric: boolean) =>
    isObject(value) && Object.keys(value).length
      ? `{\n${Object.entries(value)
          .map(([k, v]) => `  ${numeric && /^[0-9]+$/.test(k) ? k : JSON.stringify(k)}: ${JSON.stringify(String(v).replace(/``([^`]+)``/g, "`$1`"))},`)
          .join("\n")}\n}`
      : "{}";
  out.push(
    "/** Every `error` code the server sends, with its meaning. */",
    `export const SERVER_ERROR_CODES = ${record(schema["x-error-codes"], false)} as const;`,
    "",
    "export type ServerErrorCode = keyof typeof SERVER_ERROR_CODES;",
    "",
    "/** Close codes the server uses (and 1006), with their meaning. */",
    `export const CLOSE_CODES: { readonly [code: number]: string } = ${record(schema["x-close-codes"], true)};`,
    "",
  );
  return out.join("\n");
}
