import { defineConfig } from "@playwright/test";
import { CHROMIUM_ARGS, CHROMIUM_PATH } from "./tests/support/chromium";

/**
 * Browser tests (`make web-test`, part of `make test`): Playwright driving Debian's Chromium
 * (/usr/bin/chromium, or CHROMIUM_PATH) — Playwright's own browsers are never downloaded — against a
 * real `kintsugi-rt serve` serving the built app (web/dist) on a fresh PostgreSQL database
 * (tests/global-setup.ts). Chromium's fake camera and microphone stand in for real devices.
 */
export default defineConfig({
  testDir: "tests",
  testMatch: "**/*.spec.ts",
  outputDir: "tests/results",
  globalSetup: "./tests/global-setup.ts",
  timeout: 60_000,
  expect: { timeout: 10_000 },
  // 2 cores: one worker runs the video call or the restart test while the other runs the rest.
  workers: Number(process.env.PLAYWRIGHT_WORKERS ?? 2),
  fullyParallel: true,
  forbidOnly: !!process.env.CI,
  retries: process.env.CI ? 1 : 0,
  reporter: [["list"], ["json", { outputFile: "tests/results/report.json" }]],
  use: {
    browserName: "chromium",
    viewport: { width: 1280, height: 800 },
    launchOptions: {
      executablePath: CHROMIUM_PATH,
      args: CHROMIUM_ARGS,
    },
    permissions: ["camera", "microphone"],
    // Steadier and cheaper on 2 cores: the app drops its glitch effects and the chat's typing effect
    // (tests/chat.spec.ts turns it back on to see an answer grow).
    reducedMotion: "reduce",
    trace: "retain-on-failure",
    screenshot: "only-on-failure",
    actionTimeout: 10_000,
  },
});
