/**
 * The server restarted mid-conversation (its own server and database, so the rest of the suite is
 * not disturbed): both pages notice, reconnect on their own, and every message — those sent before,
 * one sent while the server was down (it waits in the outbox), and those sent after — shows exactly
 * once on both sides.
 */
import type { Page } from "@playwright/test";
import { startBackend, type Backend } from "./support/backend.js";
import { composer, expect, messages, registerUser, sendMessage, startDirectChat, test } from "./fixtures";

// While the server is away, the socket's reconnect attempts (and requests) fail in the console.
test.use({ allowConsoleErrors: /WebSocket connection to .* failed|Failed to load resource|ERR_CONNECTION_REFUSED/ });

let backend: Backend;
test.beforeAll(async () => {
  backend = await startBackend();
});
test.afterEach(async ({}, testInfo) => {
  if (testInfo.status !== testInfo.expectedStatus) await testInfo.attach("server.log", { body: backend.log(), contentType: "text/plain" });
});
test.afterAll(async () => {
  await backend?.stop();
});

async function expectEachOnce(page: Page, texts: string[]): Promise<void> {
  for (const text of texts) {
    await expect(messages(page, text), `"${text}" shows once`).toHaveCount(1);
  }
  await expect(messages(page)).toHaveCount(texts.length);
}

function connection(page: Page) {
  return page.getByRole("img", { name: /^Connection: / });
}

for (const how of ["killed", "stopped gracefully"] as const) {
  test(`server ${how} and restarted mid-conversation: the pages reconnect, every message shows once`, async ({ openAs }) => {
    test.slow();
    const [eve, finn] = await Promise.all([registerUser("Eve", backend.baseUrl), registerUser("Finn", backend.baseUrl)]);
    const e = await openAs(eve, { baseUrl: backend.baseUrl });
    const f = await openAs(finn, { baseUrl: backend.baseUrl });

    const conversationId = await startDirectChat(e, finn);
    await sendMessage(e, "before 1");
    await f.goto(`/messenger/${conversationId}`);
    await sendMessage(f, "before 2");
    await expectEachOnce(e, ["before 1", "before 2"]);
    await expectEachOnce(f, ["before 1", "before 2"]);
    await expect(connection(e)).toHaveAttribute("aria-label", "Connection: Connected");

    if (how === "killed") await backend.kill();
    else await backend.shutdown();
    await expect(connection(e)).not.toHaveAttribute("aria-label", "Connection: Connected");
    await expect(connection(f)).not.toHaveAttribute("aria-label", "Connection: Connected");

    // Sent while the server is down: it waits, then goes out once the socket is back.
    await composer(e).fill("during the outage");
    await composer(e).press("Enter");
    await expect(messages(e, "during the outage")).toHaveCount(1);

    const restarting = Date.now();
    await backend.restart();
    const restarted = Date.now();
    for (const page of [e, f]) {
      // The client's own backoff (full jitter, up to 20 s): no "Retry now" click.
      await expect(connection(page)).toHaveAttribute("aria-label", "Connection: Connected", { timeout: 30_000 });
    }
    test.info().annotations.push({
      type: "timing",
      description: `server back in ${restarted - restarting} ms; both pages reconnected ${Date.now() - restarted} ms later`,
    });
    await expect(messages(e, "during the outage").getByTestId("receipt")).toHaveAttribute("data-state", /sent|seen/, { timeout: 15_000 });

    await sendMessage(f, "after 1");
    await sendMessage(e, "after 2");
    const all = ["before 1", "before 2", "during the outage", "after 1", "after 2"];
    await expectEachOnce(e, all);
    await expectEachOnce(f, all);

    // And a reload (history from the server) agrees.
    await f.reload();
    await expectEachOnce(f, all);
  });
}
