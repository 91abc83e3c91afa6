/**
 * Shared plumbing of the browser tests: the suite's server (KINTSUGI_WEB_URL, started by
 * tests/global-setup.ts), users made over REST and signed in by seeding the app's stored session
 * (localStorage "kintsugi.session", as web/src/lib/session.ts keeps it), and page checks.
 * Only the signup test goes through the signup form; every other test starts signed in.
 */
import { randomBytes } from "node:crypto";
import { mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { deflateSync } from "node:zlib";
import { decode as msgpackDecode } from "@msgpack/msgpack";
import pg from "pg";
import { test as base, expect, type Browser, type BrowserContext, type BrowserContextOptions, type Page } from "@playwright/test";

export { expect };

export const PASSWORD = "correct horse battery staple";
export const SCREENSHOT_DIR = join(dirname(fileURLToPath(import.meta.url)), "screenshots");
export const PHONE = { width: 390, height: 844 };
export const DESKTOP = { width: 1280, height: 800 };

export function serverUrl(): string {
  const url = process.env.KINTSUGI_WEB_URL;
  if (!url) throw new Error("KINTSUGI_WEB_URL is unset: run the suite with `npx playwright test` (tests/global-setup.ts)");
  return url;
}

export interface TokenResponse {
  access_token: string;
  refresh_token: string;
  user: { id: string; email: string; display_name: string; tier?: string };
}

export interface TestUser {
  name: string;
  email: string;
  tokens: TokenResponse;
}

let counter = 0;

export function uniqueEmail(name: string): string {
  return `${name.toLowerCase().replace(/[^a-z0-9]+/g, "-")}-${process.pid}-${++counter}-${randomBytes(3).toString("hex")}@example.com`;
}

/** A new account, made over REST. */
export async function registerUser(name: string, baseUrl = serverUrl()): Promise<TestUser> {
  const email = uniqueEmail(name);
  const response = await fetch(`${baseUrl}/api/auth/register`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ email, password: PASSWORD, display_name: name }),
  });
  if (response.status !== 201 && response.status !== 200) {
    throw new Error(`register ${email}: ${response.status} ${await response.text()}`);
  }
  return { name, email, tokens: (await response.json()) as TokenResponse };
}

/**
 * Put `user` on `tier` (basic, premium_starter, …) directly in the suite server's database: the
 * server reads `users.tier` on every check, so this takes effect at once (there is no test billing).
 * `databaseUrl`: another server's (`startBackend().databaseUrl`).
 */
export async function setTier(user: TestUser, tier: string, databaseUrl = process.env.KINTSUGI_WEB_DATABASE_URL): Promise<void> {
  const connectionString = databaseUrl;
  if (!connectionString) throw new Error("KINTSUGI_WEB_DATABASE_URL is unset: run the suite with `npx playwright test` (tests/global-setup.ts)");
  const client = new pg.Client({ connectionString });
  await client.connect();
  try {
    const result = await client.query("UPDATE users SET tier = $1 WHERE id = $2", [tier, user.tokens.user.id]);
    if (result.rowCount !== 1) throw new Error(`setTier: no user ${user.tokens.user.id}`);
  } finally {
    await client.end();
  }
}

/** A browser context signed in as `user` (its stored session seeded), with one page. */
export async function signedInContext(
  browser: Browser,
  user: TestUser,
  options: BrowserContextOptions & { baseUrl?: string } = {},
): Promise<{ context: BrowserContext; page: Page }> {
  const { baseUrl = serverUrl(), ...contextOptions } = options;
  const context = await browser.newContext({
    baseURL: baseUrl,
    storageState: {
      cookies: [],
      origins: [{ origin: baseUrl, localStorage: [{ name: "kintsugi.session", value: JSON.stringify(user.tokens) }] }],
    },
    ...contextOptions,
  });
  const page = await context.newPage();
  return { context, page };
}

/** No horizontal scrolling: the document is no wider than the viewport (a soft assertion). */
export async function expectNoHorizontalScroll(page: Page, what: string): Promise<void> {
  const { scrollWidth, innerWidth } = await page.evaluate(() => ({
    scrollWidth: document.documentElement.scrollWidth,
    innerWidth: window.innerWidth,
  }));
  // Soft: a screen that scrolls sideways fails the test, but the other screens are still checked.
  expect.soft(scrollWidth, `${what}: document.documentElement.scrollWidth (${scrollWidth}) > innerWidth (${innerWidth})`).toBeLessThanOrEqual(innerWidth);
}

/** A full-page screenshot into tests/screenshots/<name>.png (kept as an artifact, gitignored). */
export async function saveScreenshot(page: Page, name: string): Promise<string> {
  mkdirSync(SCREENSHOT_DIR, { recursive: true });
  const path = join(SCREENSHOT_DIR, `${name}.png`);
  await page.screenshot({ path, fullPage: false, animations: "disabled", caret: "hide" });
  return path;
}

/**
 * The test fixtures: `baseURL` is the suite's server; `openAs(user)` opens a page in a new context
 * signed in as `user` (closed at the end). Uncaught exceptions and console errors of every page,
 * these and the default `page`'s, fail the test unless `allowConsoleErrors` matches them.
 */
export const test = base.extend<{
  /** Console errors (and uncaught exceptions) matching this do not fail the test. */
  allowConsoleErrors: RegExp | null;
  pageProblems: string[];
  openAs: (user: TestUser, options?: BrowserContextOptions & { baseUrl?: string }) => Promise<Page>;
}>({
  baseURL: async ({}, use) => {
    await use(serverUrl());
  },
  allowConsoleErrors: [null, { option: true }],
  pageProblems: async ({}, use, testInfo) => {
    const problems: string[] = [];
    await use(problems);
    if (problems.length && testInfo.status === testInfo.expectedStatus) {
      throw new Error(`errors in the page:\n${problems.join("\n")}`);
    }
  },
  context: async ({ context, allowConsoleErrors, pageProblems }, use) => {
    watchPages(context, pageProblems, allowConsoleErrors);
    await use(context);
  },
  openAs: async ({ browser, allowConsoleErrors, pageProblems }, use) => {
    const contexts: BrowserContext[] = [];
    await use(async (user, options = {}) => {
      const { context, page } = await signedInContext(browser, user, options);
      contexts.push(context);
      watchPages(context, pageProblems, allowConsoleErrors);
      return page;
    });
    for (const context of contexts) await context.close();
  },
});

/** Collect uncaught exceptions and console errors of every page of `context` into `problems`. */
export function watchPages(context: BrowserContext, problems: string[], allow: RegExp | null = null): void {
  const allowed = (text: string) => !!allow?.test(text) || BENIGN.some((re) => re.test(text));
  context.on("page", (page) => watchPage(page, problems, allowed));
  for (const page of context.pages()) watchPage(page, problems, allowed);
}

// Chromium's own noise, never the app's fault.
const BENIGN = [/favicon\.ico/];

function watchPage(page: Page, problems: string[], allowed: (text: string) => boolean): void {
  page.on("pageerror", (error) => {
    const text = `${page.url()}: uncaught ${error.name}: ${error.message}`;
    if (!allowed(text)) problems.push(text);
  });
  page.on("console", (message) => {
    if (message.type() !== "error") return;
    const text = `${page.url()}: console.error: ${message.text()}`;
    if (!allowed(text)) problems.push(text);
  });
}

// --- socket frames -------------------------------------------------------------------------------

export interface Frame {
  type?: string;
  [key: string]: unknown;
}

/**
 * Every frame the page's app socket (`/ws`) receives from now on, decoded (JSON text frames, or
 * MessagePack binary ones under the kintsugi.msgpack subprotocol).
 */
export function receivedFrames(page: Page): Frame[] {
  const frames: Frame[] = [];
  page.on("websocket", (ws) => {
    if (!new URL(ws.url()).pathname.startsWith("/ws")) return;
    ws.on("framereceived", ({ payload }) => {
      try {
        const value = typeof payload === "string" ? JSON.parse(payload) : msgpackDecode(payload);
        if (value && typeof value === "object") frames.push(value as Frame);
      } catch {
        /* not a frame of ours */
      }
    });
  });
  return frames;
}

// --- test images ---------------------------------------------------------------------------------

const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});

function crc32(data: Buffer): number {
  let c = 0xffffffff;
  for (const byte of data) c = CRC_TABLE[(c ^ byte) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function chunk(type: string, data: Buffer): Buffer {
  const length = Buffer.alloc(4);
  length.writeUInt32BE(data.length);
  const body = Buffer.concat([Buffer.from(type, "ascii"), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(body));
  return Buffer.concat([length, body, crc]);
}

/** A real PNG (RGB, a diagonal gradient) of `width`×`height`, made here: no fixture files. */
export function makePng(width: number, height: number): Buffer {
  const header = Buffer.alloc(13);
  header.writeUInt32BE(width, 0);
  header.writeUInt32BE(height, 4);
  header[8] = 8; // bit depth
  header[9] = 2; // RGB
  const rows = Buffer.alloc((width * 3 + 1) * height);
  for (let y = 0; y < height; y++) {
    const row = y * (width * 3 + 1);
    rows[row] = 0; // no filter
    for (let x = 0; x < width; x++) {
      rows[row + 1 + x * 3] = 230;
      rows[row + 2 + x * 3] = Math.round((180 * x) / width);
      rows[row + 3 + x * 3] = Math.round((255 * y) / height);
    }
  }
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk("IHDR", header),
    chunk("IDAT", deflateSync(rows)),
    chunk("IEND", Buffer.alloc(0)),
  ]);
}

// --- the app's screens -----------------------------------------------------------------------------

/** The messenger composer's text box. */
export function composer(page: Page) {
  return page.getByRole("textbox", { name: "Message", exact: true });
}

/** Messages of the open conversation whose text includes `text`. */
export function messages(page: Page, text?: string | RegExp) {
  const all = page.getByTestId("message");
  return text === undefined ? all : all.filter({ hasText: text });
}

/** Type `text` into the messenger composer and send it (Enter). */
export async function sendMessage(page: Page, text: string): Promise<void> {
  const box = composer(page);
  await box.fill(text);
  await box.press("Enter");
  await expect(box).toHaveValue("");
}

/** From a signed-in `page`, open the direct conversation with `other` (New chat → find by email); its id. */
export async function startDirectChat(page: Page, other: TestUser): Promise<string> {
  await page.goto("/messenger");
  await page.getByRole("button", { name: "New chat" }).first().click();
  const dialog = page.getByRole("dialog", { name: "New chat" });
  await dialog.getByLabel("Email, @handle or name").fill(other.email);
  await dialog.getByRole("button", { name: "Find" }).click();
  await dialog.getByRole("button", { name: `Message ${other.name}` }).click();
  await expect(page).toHaveURL(/\/messenger\/[0-9a-f-]{36}$/);
  await expect(composer(page)).toBeVisible();
  return new URL(page.url()).pathname.split("/").pop()!;
}
