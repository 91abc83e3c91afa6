// @ts-check
/**
 * `npm run lighthouse --prefix web` (after `npm run build --prefix web`): Lighthouse against the built
 * app served by a real `kintsugi-rt serve` (tests/support/backend.js: a fresh database, dropped at the
 * end), in Debian's Chromium (CHROME_PATH, else CHROMIUM_PATH, else /usr/bin/chromium) started
 * headless by chrome-launcher. Pages: /login signed out, and /chat and /messenger signed in (the stored
 * session seeded over CDP, kept with disableStorageReset), each with Lighthouse's mobile defaults
 * (emulated phone, simulated slow 4G); /login also with the desktop preset.
 *
 * Lighthouse 12 has no PWA category, so installability is checked here by Chromium itself:
 * `Page.getInstallabilityErrors` (none expected), the manifest Chromium parsed (`Page.getAppManifest`)
 * and whether a service worker controls the page after a reload.
 *
 * Writes tests/lighthouse/summary.json (and each page's full report as HTML beside it); prints the
 * scores. Exits non-zero only if a run fails, not on a low score: the numbers are for docs/web.md.
 * Options: LIGHTHOUSE_PAGES=/login,/chat to choose pages; LIGHTHOUSE_TARGET=90.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import * as chromeLauncher from "chrome-launcher";
import lighthouse, { desktopConfig } from "lighthouse";
import { chromium } from "@playwright/test";
import { startBackend } from "../tests/support/backend.js";

const HERE = dirname(fileURLToPath(import.meta.url));
const OUT = join(HERE, "..", "tests", "lighthouse");
const CHROME_PATH = process.env.CHROME_PATH ?? process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const TARGET = Number(process.env.LIGHTHOUSE_TARGET ?? 90);
const CATEGORIES = ["performance", "accessibility", "best-practices"];

/** @type {{ path: string, signedIn: boolean, preset: "mobile" | "desktop" }[]} */
const ALL_RUNS = [
  { path: "/login", signedIn: false, preset: "mobile" },
  { path: "/login", signedIn: false, preset: "desktop" },
  { path: "/chat", signedIn: true, preset: "mobile" },
  { path: "/messenger", signedIn: true, preset: "mobile" },
];
const only = process.env.LIGHTHOUSE_PAGES?.split(",").map((p) => p.trim());
const RUNS = only ? ALL_RUNS.filter((r) => only.includes(r.path)) : ALL_RUNS;

async function register(/** @type {string} */ baseUrl) {
  const email = `lighthouse-${Date.now()}@example.com`;
  const response = await fetch(`${baseUrl}/api/auth/register`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ email, password: "correct horse battery staple", display_name: "Lighthouse" }),
  });
  if (!response.ok) throw new Error(`register: ${response.status} ${await response.text()}`);
  return response.json();
}

/** Set (or clear) the app's stored session in the browser's default profile, over CDP. */
async function seedSession(/** @type {number} */ port, /** @type {string} */ baseUrl, /** @type {unknown} */ tokens) {
  const browser = await chromium.connectOverCDP(`http://127.0.0.1:${port}`);
  try {
    const context = browser.contexts()[0];
    if (!context) throw new Error("no default browser context");
    const page = await context.newPage();
    await page.goto(`${baseUrl}/404-seed`, { waitUntil: "domcontentloaded" });
    await page.evaluate((value) => {
      if (value) localStorage.setItem("kintsugi.session", value);
      else localStorage.removeItem("kintsugi.session");
    }, tokens ? JSON.stringify(tokens) : "");
    await page.close();
  } finally {
    // Disconnects only: the browser belongs to chrome-launcher.
    await browser.close();
  }
}

/** Installability as Chromium sees it, in a Playwright-driven instance of the same browser. */
async function installability(/** @type {string} */ baseUrl) {
  // A persistent profile: Chromium never offers to install from an incognito one.
  const profile = mkdtempSync(join(tmpdir(), "kintsugi-lh-profile-"));
  const context = await chromium.launchPersistentContext(profile, { executablePath: CHROME_PATH, args: ["--no-sandbox"] });
  try {
    const page = context.pages()[0] ?? (await context.newPage());
    await page.goto(`${baseUrl}/login`, { waitUntil: "load" });
    const registered = await page.evaluate(async () => {
      if (!("serviceWorker" in navigator)) return false;
      const registration = await Promise.race([
        navigator.serviceWorker.ready,
        new Promise((resolve) => setTimeout(() => resolve(null), 10_000)),
      ]);
      return !!registration;
    });
    await page.reload({ waitUntil: "load" });
    const controlled = await page.evaluate(() => !!navigator.serviceWorker?.controller);
    const cdp = await context.newCDPSession(page);
    const { installabilityErrors } = await cdp.send("Page.getInstallabilityErrors");
    const manifest = await cdp.send("Page.getAppManifest");
    /** @type {Record<string, unknown> | null} */
    let parsed = null;
    try {
      parsed = manifest.data ? JSON.parse(manifest.data) : null;
    } catch {
      parsed = null;
    }
    return {
      installable: installabilityErrors.length === 0,
      installabilityErrors: installabilityErrors.map((e) => e.errorId),
      manifestUrl: manifest.url,
      manifestErrors: manifest.errors.map((e) => e.message),
      manifest: parsed && {
        name: parsed.name,
        short_name: parsed.short_name,
        start_url: parsed.start_url,
        display: parsed.display,
        icons: Array.isArray(parsed.icons) ? parsed.icons.map((/** @type {any} */ i) => `${i.sizes} ${i.purpose ?? "any"}`) : [],
      },
      serviceWorkerRegistered: registered,
      serviceWorkerControlsAfterReload: controlled,
    };
  } finally {
    await context.close();
    rmSync(profile, { recursive: true, force: true });
  }
}

/**
 * The failing audits of one category that cost the most, for the report.
 * @param {any} lhr
 * @param {string} category
 * @returns {{ id: string, title: string, score: number, weight: number, displayValue?: string, items?: string[] }[]}
 */
function topFailing(lhr, category, limit = 6) {
  /** @type {{ id: string, weight: number }[]} */
  const refs = lhr.categories[category]?.auditRefs ?? [];
  /** @type {{ ref: { id: string, weight: number }, audit: any }[]} */
  const rows = refs.filter((ref) => ref.weight > 0).map((ref) => ({ ref, audit: lhr.audits[ref.id] }));
  return rows
    .filter((row) => row.audit && row.audit.score !== null && row.audit.score < 0.9)
    .sort((a, b) => b.ref.weight * (1 - b.audit.score) - a.ref.weight * (1 - a.audit.score))
    .slice(0, limit)
    .map((row) => ({
      id: row.ref.id,
      title: row.audit.title,
      score: row.audit.score,
      weight: row.ref.weight,
      ...(row.audit.displayValue ? { displayValue: row.audit.displayValue } : {}),
      ...(itemsOf(row.audit).length ? { items: itemsOf(row.audit) } : {}),
    }));
}

/** The elements an audit flags (selector, and the explanation when there is one), at most 5. */
function itemsOf(/** @type {any} */ audit) {
  /** @type {any[]} */
  const items = audit.details?.items ?? [];
  return items
    .map((item) => item.node)
    .filter((node) => node && node.selector)
    .slice(0, 5)
    .map((node) => `${node.selector}${node.explanation ? ` — ${String(node.explanation).split("\n").slice(-1)[0]}` : ""}`);
}

async function main() {
  mkdirSync(OUT, { recursive: true });
  const backend = await startBackend();
  const chrome = await chromeLauncher.launch({
    chromePath: CHROME_PATH,
    chromeFlags: ["--headless=new", "--no-sandbox", "--disable-gpu"],
  });
  const started = Date.now();
  /** @type {any[]} */
  const pages = [];
  try {
    const tokens = await register(backend.baseUrl);
    for (const run of RUNS) {
      await seedSession(chrome.port, backend.baseUrl, run.signedIn ? tokens : null);
      const url = `${backend.baseUrl}${run.path}`;
      const t0 = Date.now();
      const result = await lighthouse(
        url,
        {
          port: chrome.port,
          output: "html",
          logLevel: "error",
          onlyCategories: CATEGORIES,
          disableStorageReset: run.signedIn,
        },
        run.preset === "desktop" ? desktopConfig : undefined,
      );
      if (!result) throw new Error(`Lighthouse returned nothing for ${url}`);
      const { lhr } = result;
      const name = `${run.path.replace(/\W+/g, "-").replace(/^-|-$/g, "") || "root"}-${run.preset}`;
      writeFileSync(join(OUT, `${name}.html`), /** @type {string} */ (result.report));
      /** @type {Record<string, number | null>} */
      const scores = {};
      /** @type {Record<string, unknown[]>} */
      const failing = {};
      for (const category of CATEGORIES) {
        const score = lhr.categories[category]?.score;
        scores[category] = score == null ? null : Math.round(score * 100);
        if (scores[category] === null || /** @type {number} */ (scores[category]) < 100) {
          failing[category] = topFailing(lhr, category);
        }
      }
      const metrics = Object.fromEntries(
        ["first-contentful-paint", "largest-contentful-paint", "total-blocking-time", "cumulative-layout-shift", "speed-index"].map(
          (id) => [id, lhr.audits[id]?.displayValue ?? null],
        ),
      );
      const finalUrl = lhr.finalDisplayedUrl;
      const belowTarget = CATEGORIES.filter((c) => scores[c] === null || /** @type {number} */ (scores[c]) < TARGET);
      pages.push({ path: run.path, preset: run.preset, signedIn: run.signedIn, finalUrl, scores, metrics, belowTarget, failingAudits: failing, report: `${name}.html`, seconds: Math.round((Date.now() - t0) / 1000) });
      console.log(`${run.path} (${run.preset}${run.signedIn ? ", signed in" : ""}) → ${finalUrl}: ${CATEGORIES.map((c) => `${c} ${scores[c]}`).join(", ")}`);
      for (const [category, audits] of Object.entries(failing)) {
        if (!audits.length) continue;
        console.log(`  ${category}${belowTarget.includes(category) ? ` BELOW ${TARGET}` : ""}, failing audits: ${audits.map((/** @type {any} */ a) => `${a.id} (${a.score})`).join(", ")}`);
      }
    }
    const install = await installability(backend.baseUrl);
    console.log(`installable: ${install.installable}${install.installabilityErrors.length ? ` (${install.installabilityErrors.join(", ")})` : ""}; service worker controls the page after a reload: ${install.serviceWorkerControlsAfterReload}`);
    const summary = {
      lighthouse: lhVersion(),
      chromium: await chromeVersion(chrome.port),
      date: new Date().toISOString(),
      target: TARGET,
      pages,
      installability: install,
      seconds: Math.round((Date.now() - started) / 1000),
    };
    writeFileSync(join(OUT, "summary.json"), `${JSON.stringify(summary, null, 2)}\n`);
    console.log(`wrote ${join(OUT, "summary.json")}`);
  } finally {
    await chrome.kill();
    await backend.stop();
  }
}

function lhVersion() {
  try {
    return JSON.parse(readFileSync(join(HERE, "..", "node_modules", "lighthouse", "package.json"), "utf8")).version;
  } catch {
    return null;
  }
}

async function chromeVersion(/** @type {number} */ port) {
  try {
    const response = await fetch(`http://127.0.0.1:${port}/json/version`);
    return (await response.json()).Browser;
  } catch {
    return null;
  }
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
