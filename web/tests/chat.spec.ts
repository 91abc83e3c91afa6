/**
 * AI chat against the server's offline-demo model (no OPENAI_API_KEY): sign up through the form, ask,
 * watch the answer stream in (many chat.delta frames, the text growing), regenerate it, and see the
 * usage meters move. Stopping runs on a server of its own with a slow demo model, so that there is
 * time to press Stop mid-answer.
 */
import { startBackend, type Backend } from "./support/backend.js";
import { expect, PASSWORD, receivedFrames, registerUser, test, uniqueEmail, type Frame } from "./fixtures";

// The demo model's fixed answer (kintsugi_rt/chat/provider.py, OFFLINE_REPLY): its first and last words.
const ANSWER_START = "Offline demo";
const ANSWER_END = "history and search.";

function deltas(frames: Frame[]): Frame[] {
  return frames.filter((f) => f.type === "chat.delta");
}

async function usageShown(page: import("@playwright/test").Page): Promise<number> {
  await page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "Usage" }).click();
  const bar = page.getByRole("progressbar", { name: "Tokens used in this window" });
  await expect(bar).toBeVisible();
  return Number(await bar.getAttribute("aria-valuenow"));
}

test("sign up, ask the AI chat, the answer streams in; regenerate; usage moves", async ({ page }) => {
  // With the typing effect (the suite otherwise runs with reduced motion).
  await page.emulateMedia({ reducedMotion: "no-preference" });
  const frames = receivedFrames(page);
  const email = uniqueEmail("Chatty");

  await page.goto("/signup");
  await page.getByLabel("Display name").fill("Chatty");
  await page.getByLabel("Email").fill(email);
  await page.getByLabel("Password").fill(PASSWORD);
  await page.getByRole("button", { name: "Sign up" }).click();
  await expect(page).toHaveURL(/\/chat$/);

  const usageBefore = await usageShown(page);
  expect(usageBefore).toBe(0);
  const chip = page.getByRole("link", { name: /^Token usage:/ });
  const chipBefore = await chip.getAttribute("aria-label");

  await page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "AI Chat" }).click();
  const box = page.getByRole("textbox", { name: "Message" });
  await box.fill("What is kintsugi?");
  // Record every length the last message of the thread takes, from the page itself: polling from
  // here can miss a fast answer on a busy machine (it streams at 200 tokens/s in the suite).
  await page.evaluate(() => {
    const seen = new Set<number>();
    (window as unknown as { __answerLengths: Set<number> }).__answerLengths = seen;
    new MutationObserver(() => {
      const items = document.querySelectorAll("ol.chat-msgs > li");
      const last = items[items.length - 1];
      if (items.length >= 2 && last) seen.add((last.textContent ?? "").length);
    }).observe(document.body, { subtree: true, childList: true, characterData: true });
  });
  await page.getByRole("button", { name: "Send" }).click();
  await expect(page).toHaveURL(/\/chat\/[0-9a-f-]{36}$/);

  // The question, then the answer: it grows while it streams, then ends with the reply's last words.
  const thread = page.getByRole("list", { name: "Messages" });
  await expect(thread.getByRole("listitem").first()).toContainText("What is kintsugi?");
  const answer = thread.getByRole("listitem").last();
  await expect(answer).toContainText(ANSWER_START);
  // Seen growing: several different lengths of the answer's text on the way to the whole reply.
  await expect(answer).toContainText(ANSWER_END, { timeout: 30_000 });
  const lengths = await page.evaluate(
    () => (window as unknown as { __answerLengths: Set<number> }).__answerLengths.size,
  );
  expect(lengths, "the answer was seen at several lengths as it streamed in").toBeGreaterThan(2);
  await expect(answer).not.toHaveAttribute("aria-busy", "true");
  const firstDeltas = deltas(frames).length;
  expect(firstDeltas, "the answer came in several chat.delta frames").toBeGreaterThan(2);

  // Regenerate: a second version of the answer (1/2 → 2/2), streamed again.
  await page.getByRole("button", { name: "Regenerate answer" }).click();
  await expect(page.getByRole("group", { name: "Versions of this answer" })).toContainText("2/2");
  await expect(answer).toContainText(ANSWER_END, { timeout: 30_000 });
  await expect(answer).not.toHaveAttribute("aria-busy", "true");
  expect(deltas(frames).length, "the regenerated answer streamed too").toBeGreaterThan(firstDeltas + 2);
  await expect(page.getByRole("button", { name: "Previous version of this answer" })).toBeEnabled();

  // Both answers were counted: the header chip (a small BASIC_TOKEN_LIMIT on the test server) and
  // the usage screen's bar.
  await expect(chip).not.toHaveAttribute("aria-label", chipBefore ?? "");
  const usageAfter = await usageShown(page);
  expect(usageAfter).toBeGreaterThan(usageBefore);
});

test.describe("with a slow demo model", () => {
  let slow: Backend;
  test.beforeAll(async () => {
    // 2 words a second: the ~40-word answer would take ~20 s, plenty of time to stop it.
    slow = await startBackend({ env: { CHAT_DEMO_TOKENS_PER_SECOND: "2" } });
  });
  test.afterEach(async ({}, testInfo) => {
    if (testInfo.status !== testInfo.expectedStatus) await testInfo.attach("server.log", { body: slow.log(), contentType: "text/plain" });
  });
  test.afterAll(async () => {
    await slow?.stop();
  });

  test("Stop ends the answer mid-stream and keeps what was written", async ({ openAs }) => {
    const user = await registerUser("Stopper", slow.baseUrl);
    const page = await openAs(user, { baseUrl: slow.baseUrl });
    const frames = receivedFrames(page);
    await page.goto("/chat");
    await page.getByRole("textbox", { name: "Message" }).fill("Tell me a long story");
    await page.getByRole("button", { name: "Send" }).click();
    await expect(page).toHaveURL(/\/chat\/[0-9a-f-]{36}$/);

    const answer = page.getByRole("list", { name: "Messages" }).getByRole("listitem").last();
    await expect(answer).toContainText(ANSWER_START);
    await expect(answer).toHaveAttribute("aria-busy", "true");
    // The composer's Stop (the answer's own Stop button does the same).
    await page.getByRole("button", { name: /(^|\W)Stop$/ }).first().click();

    await expect(answer).toContainText("Stopped");
    await expect(answer).not.toHaveAttribute("aria-busy", "true");
    // What was written up to the stop is kept: the answer shows the stored text (chat.done's content),
    // part of the reply only, and nothing more arrives after it.
    await expect.poll(() => frames.find((f) => f.type === "chat.done")?.finish_reason).toBe("stopped");
    const kept = String(frames.find((f) => f.type === "chat.done")!.content);
    expect(kept.startsWith(ANSWER_START)).toBeTruthy();
    expect(kept).not.toContain(ANSWER_END);
    await expect(answer).toContainText(kept);
    const shown = await answer.textContent();
    await page.waitForTimeout(1_500);
    await expect(answer).toHaveText(shown ?? "");
    expect(frames.filter((f) => f.type === "chat.delta" && f.message_id === frames.find((d) => d.type === "chat.done")!.message_id).length).toBeGreaterThan(0);
    // And it was stored so: after a reload the stopped answer is still there, still marked.
    await page.reload();
    const reloaded = page.getByRole("list", { name: "Messages" }).getByRole("listitem").last();
    await expect(reloaded).toContainText("Stopped");
    await expect(reloaded).toContainText(kept);
  });
});
