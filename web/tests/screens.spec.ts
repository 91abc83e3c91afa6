/**
 * Every screen (and the new-chat dialog, and the phone's "More" sheet) on a phone (390×844, touch) and
 * on a desktop (1280×800): no horizontal scrolling
 * (document.documentElement.scrollWidth <= innerWidth), and a screenshot of each saved as an artifact
 * in tests/screenshots/<screen>-<phone|desktop>.png (gitignored; a chosen few are copied into docs/web/
 * by tests/support/docs_screenshots.py). The screens show real data: an AI chat with an answer and a
 * conversation with messages and a photo, made through the app first.
 */
import type { Browser, BrowserContextOptions, Page } from "@playwright/test";
import {
  DESKTOP,
  expect,
  expectNoHorizontalScroll,
  makePng,
  messages,
  PHONE,
  registerUser,
  saveScreenshot,
  sendMessage,
  serverUrl,
  signedInContext,
  startDirectChat,
  test,
  type TestUser,
} from "./fixtures";

const VIEWPORTS: { name: "phone" | "desktop"; options: BrowserContextOptions }[] = [
  { name: "phone", options: { viewport: PHONE, isMobile: true, hasTouch: true, deviceScaleFactor: 2 } },
  { name: "desktop", options: { viewport: DESKTOP, deviceScaleFactor: 1 } },
];

interface Seeded {
  user: TestUser;
  chatId: string;
  conversationId: string;
}

/** Wait until the screen has loaded: the route's chunk, its data (no spinner left), fonts. */
async function settled(page: Page): Promise<void> {
  await expect(page.locator(".page-loading")).toHaveCount(0);
  await expect(page.locator("main h1, h1").first()).toBeAttached();
  await expect(page.locator(".spinner:visible")).toHaveCount(0);
  await page.evaluate(() => document.fonts.ready.then(() => undefined));
}

/** An AI chat with an answer, and a conversation with a few messages (one a photo), for `user`. */
async function seed(browser: Browser): Promise<Seeded> {
  const [user, other] = await Promise.all([registerUser("Grace"), registerUser("Heidi")]);
  const { context: gc, page: g } = await signedInContext(browser, user);
  const { context: hc, page: h } = await signedInContext(browser, other);
  try {
    await g.goto("/chat");
    await g.getByRole("textbox", { name: "Message" }).fill("Explain kintsugi in two sentences");
    await g.getByRole("button", { name: "Send" }).click();
    await expect(g).toHaveURL(/\/chat\/[0-9a-f-]{36}$/);
    await expect(g.getByRole("list", { name: "Messages" }).getByRole("listitem").last()).toContainText("history and search.");
    const chatId = new URL(g.url()).pathname.split("/").pop()!;

    const conversationId = await startDirectChat(h, user);
    await sendMessage(h, "Hi Grace! Did the gold repair work?");
    await g.goto(`/messenger/${conversationId}`);
    await expect(messages(g, "Did the gold repair work?")).toHaveCount(1);
    await sendMessage(g, "It did, look at the seams");
    await h.locator('input[type="file"]').setInputFiles({ name: "bowl.png", mimeType: "image/png", buffer: makePng(480, 320) });
    await h.getByRole("textbox", { name: "Message", exact: true }).fill("Beautiful.");
    await h.getByRole("button", { name: "Send" }).click();
    await expect(messages(g, "Beautiful.").getByRole("img")).toBeVisible();
    return { user, chatId, conversationId };
  } finally {
    await gc.close();
    await hc.close();
  }
}

test("every screen on a phone and a desktop: no horizontal scroll; screenshots", async ({ browser, pageProblems }) => {
  test.slow();
  const seeded = await seed(browser);
  const signedIn: [string, string][] = [
    ["chat-new", "/chat"],
    ["chat-thread", `/chat/${seeded.chatId}`],
    ["messenger", "/messenger"],
    ["messenger-thread", `/messenger/${seeded.conversationId}`],
    ["calls", "/calls"],
    ["usage", "/usage"],
    ["pricing", "/pricing"],
    ["billing", "/settings/billing"],
    ["profile", "/profile"],
    ["translator", "/translator"],
    ["agents", "/agents"],
    ["not-found", "/no-such-page"],
  ];
  const signedOut: [string, string][] = [
    ["login", "/login"],
    ["signup", "/signup"],
    ["pricing-signed-out", "/pricing"],
  ];

  for (const viewport of VIEWPORTS) {
    const signedInContextOptions = { ...viewport.options, reducedMotion: "reduce" as const };
    const { context, page } = await signedInContext(browser, seeded.user, signedInContextOptions);
    const outContext = await browser.newContext({ baseURL: serverUrl(), ...signedInContextOptions });
    const out = await outContext.newPage();
    const problems: string[] = [];
    for (const [p] of [[page], [out]] as const) {
      p.on("pageerror", (error) => problems.push(`${p.url()}: ${error.message}`));
    }
    try {
      for (const [name, path] of signedIn) {
        await test.step(`${viewport.name}: ${name} (${path})`, async () => {
          await page.goto(path);
          await settled(page);
          if (name === "messenger-thread") await expect(messages(page, "Beautiful.").getByRole("img")).toBeVisible();
          await saveScreenshot(page, `${name}-${viewport.name}`);
          await expectNoHorizontalScroll(page, `${name} on ${viewport.name}`);
        });
      }
      // Dialogs: finding someone to message; on phones, the bottom navigation's "More" sheet.
      await test.step(`${viewport.name}: new-chat dialog`, async () => {
        await page.goto("/messenger");
        await settled(page);
        await page.getByRole("button", { name: "New chat" }).first().click();
        await expect(page.getByRole("dialog", { name: "New chat" })).toBeVisible();
        await saveScreenshot(page, `messenger-new-chat-${viewport.name}`);
        await expectNoHorizontalScroll(page, `new-chat dialog on ${viewport.name}`);
      });
      if (viewport.name === "phone") {
        await test.step("phone: the More sheet", async () => {
          await page.goto("/chat");
          await settled(page);
          await page.getByRole("navigation", { name: "Main (mobile)" }).getByRole("button", { name: "More" }).click();
          await expect(page.getByRole("dialog", { name: "More" })).toBeVisible();
          await saveScreenshot(page, "more-phone");
          await expectNoHorizontalScroll(page, "More sheet on phone");
        });
      }
      for (const [name, path] of signedOut) {
        await test.step(`${viewport.name}: ${name} (${path}, signed out)`, async () => {
          await out.goto(path);
          await settled(out);
          await saveScreenshot(out, `${name}-${viewport.name}`);
          await expectNoHorizontalScroll(out, `${name} on ${viewport.name}`);
        });
      }
    } finally {
      await context.close();
      await outContext.close();
    }
    pageProblems.push(...problems);
  }
});
