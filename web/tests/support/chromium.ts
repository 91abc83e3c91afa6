/** Debian's Chromium (never Playwright's own download), shared by the config and tests that launch their own. */
export const CHROMIUM_PATH = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";

/** Chromium's fake camera and microphone, permission prompts answered yes; no sandbox (root, containers). */
export const CHROMIUM_ARGS = ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream", "--no-sandbox"];
