/**
 * The app as the server serves it: a deep link loads the app (SPA fallback), and the app is an
 * installable PWA as Chromium itself judges it (Lighthouse 12 dropped its PWA category):
 * `Page.getInstallabilityErrors` over CDP returns none, the manifest has what installing needs, and a
 * service worker controls the page after a reload.
 */
import type { APIRequestContext, BrowserContext } from "@playwright/test";
import { expect, registerUser, serverUrl, test } from "./fixtures";
import { CHROMIUM_ARGS, CHROMIUM_PATH } from "./support/chromium";

test("a deep link loads the app; signed out, it goes to the login", async ({ page }) => {
  const response = await page.goto("/messenger/00000000-0000-0000-0000-000000000000");
  expect(response?.status()).toBe(200);
  expect(response?.headers()["content-type"]).toContain("text/html");
  await expect(page).toHaveURL(/\/login\?next=/);
  await expect(page.getByRole("heading", { name: "Log in" })).toBeVisible();
});

test("signing in from the login form lands on the page asked for", async ({ page }) => {
  const user = await registerUser("Ivan");
  await page.goto("/usage");
  await expect(page).toHaveURL(/\/login\?next=%2Fusage/);
  await page.getByLabel("Email").fill(user.email);
  await page.getByLabel("Password").fill("correct horse battery staple");
  await page.getByRole("button", { name: "Log in" }).click();
  await expect(page).toHaveURL(/\/usage$/);
  await expect(page.getByRole("progressbar", { name: "Tokens used in this window" })).toBeVisible();
});

test("installable: Chromium reports no installability errors; a service worker controls the page", async ({ playwright, request }, testInfo) => {
  // A persistent profile: in Playwright's usual (incognito) contexts Chromium never offers to install.
  const context = await playwright.chromium.launchPersistentContext(testInfo.outputPath("profile"), {
    executablePath: CHROMIUM_PATH,
    args: CHROMIUM_ARGS,
    baseURL: serverUrl(),
  });
  try {
    await installable(context, request);
  } finally {
    await context.close();
  }
});

async function installable(context: BrowserContext, request: APIRequestContext): Promise<void> {
  const page = context.pages()[0] ?? (await context.newPage());
  await page.goto("/login");
  await expect(page.getByRole("heading", { name: "Log in" })).toBeVisible();

  // The manifest: what Chromium needs to offer installing.
  const href = await page.locator('link[rel="manifest"]').getAttribute("href");
  expect(href).toBeTruthy();
  const manifestResponse = await request.get(new URL(href!, page.url()).href);
  expect(manifestResponse.ok()).toBeTruthy();
  const manifest = (await manifestResponse.json()) as {
    name?: string;
    short_name?: string;
    start_url?: string;
    display?: string;
    icons?: { src: string; sizes: string; type?: string; purpose?: string }[];
  };
  expect(manifest.name).toBeTruthy();
  expect(manifest.short_name).toBeTruthy();
  expect(manifest.start_url).toBeTruthy();
  expect(["standalone", "fullscreen", "minimal-ui"]).toContain(manifest.display);
  const sizes = (manifest.icons ?? []).flatMap((i) => i.sizes.split(" "));
  expect(sizes).toContain("192x192");
  expect(sizes).toContain("512x512");
  expect((manifest.icons ?? []).some((i) => (i.purpose ?? "").includes("maskable"))).toBeTruthy();
  for (const icon of manifest.icons ?? []) {
    const response = await request.get(new URL(icon.src, new URL(href!, page.url())).href);
    expect(response.ok(), `icon ${icon.src}`).toBeTruthy();
  }

  // The precache list names files of this build. A name the server does not have is reported, not
  // failed: the worker caches the shell first and tolerates a chunk that fails (public/sw.js).
  const sw = await (await request.get("/sw.js")).text();
  const precache = /const PRECACHE = (\[[^\]]*\]);/.exec(sw)?.[1];
  expect(precache, "sw.js has its precache list filled in by the build").toBeTruthy();
  const list = JSON.parse(precache!) as string[];
  expect(list).toContain("/");
  const missing: string[] = [];
  for (const url of list) {
    const response = await request.get(url);
    if (!response.ok()) missing.push(`${url} (${response.status()})`);
  }
  if (missing.length) {
    console.warn(`warning: sw.js precaches files the server does not have: ${missing.join(", ")}`);
    test.info().annotations.push({ type: "warning", description: `sw.js precaches files the server does not have: ${missing.join(", ")}` });
  }

  // The service worker installs and activates, and controls the page once it is reloaded.
  await expect
    .poll(() => page.evaluate(() => navigator.serviceWorker.getRegistration().then((r) => r?.active?.state ?? null)), {
      message: "an active service worker",
      timeout: 20_000,
    })
    .toBe("activated");
  await page.reload();
  await expect.poll(() => page.evaluate(() => !!navigator.serviceWorker.controller)).toBe(true);

  // Chromium's own verdict.
  const cdp = await context.newCDPSession(page);
  const { installabilityErrors } = await cdp.send("Page.getInstallabilityErrors");
  expect(installabilityErrors.map((e) => e.errorId)).toEqual([]);
  const { errors } = await cdp.send("Page.getAppManifest");
  expect(errors.filter((e) => e.critical)).toEqual([]);
}
