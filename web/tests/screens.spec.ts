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
  setTier,
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
  /** A premium_starter user with an agent (one tool) and one finished run of it. */
  agents: { user: TestUser; agentId: string; runId: string };
}

/** Wait until the screen has loaded: the route's chunk, its data (no spinner left), fonts. */
async function settled(page: Page): Promise<void> {
  await expect(page.locator(".page-loading")).toHaveCount(0);
  await expect(page.locator("main h1, h1").first()).toBeAttached();
  await expect(page.locator(".spinner:visible")).toHaveCount(0);
  await page.evaluate(() => document.fonts.ready.then(() => undefined));
}

/** A premium_starter user who built an agent with one tool, and asked it once. */
async function seedAgents(browser: Browser): Promise<Seeded["agents"]> {
  const user = await registerUser("Ivan");
  await setTier(user, "premium_starter");
  const { context, page } = await signedInContext(browser, user);
  try {
    await page.goto("/agents/new");
    await page.getByLabel("Name", { exact: true }).fill("Order helper");
    await page.getByLabel("Handle", { exact: true }).fill("order_helper");
    await page.getByLabel("Instructions", { exact: true }).fill("Look orders up with lookup_order and answer briefly.");
    await page.getByRole("button", { name: "Add starter" }).click();
    await page.getByLabel("Starter 1", { exact: true }).fill("Where is order A-17?");
    await page.getByRole("button", { name: "Add tool" }).click();
    await page.getByLabel("Tool 1 name", { exact: true }).fill("lookup_order");
    await page.getByLabel("Tool 1 description", { exact: true }).fill("Find an order by its number.");
    await page.getByLabel("Tool 1 webhook URL", { exact: true }).fill("https://n8n.example.com/webhook/orders");
    await page.getByLabel("Tool 1 secret", { exact: true }).fill("s3cr3t-value");
    await page.getByRole("button", { name: "Create agent" }).click();
    await expect(page).toHaveURL(/\/agents\/[0-9a-f-]{36}$/);
    const agentId = new URL(page.url()).pathname.split("/").pop()!;
    await page.goto(`/agents/${agentId}/chat`);
    await page.getByRole("button", { name: "Where is order A-17?" }).click();
    await expect(page.getByTestId("agent-answer").getByText("Done", { exact: true })).toBeVisible({ timeout: 20_000 });
    const runId = new URL(page.url()).searchParams.get("run")!;
    return { user, agentId, runId };
  } finally {
    await context.close();
  }
}

/** An AI chat with an answer, and a conversation with a few messages (one a photo), for `user`. */
async function seed(browser: Browser): Promise<Seeded> {
  const agents = seedAgents(browser);
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
    return { user, chatId, conversationId, agents: await agents };
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
      // Agents, as a premium_starter user (the seeded user above sees the upsell at /agents).
      const premium = await signedInContext(browser, seeded.agents.user, signedInContextOptions);
      try {
        const { agentId, runId } = seeded.agents;
        for (const [name, path] of [
          ["agents-list", "/agents"],
          ["agent-builder", `/agents/${agentId}`],
          ["agent-chat", `/agents/${agentId}/chat?run=${runId}`],
        ] as const) {
          await test.step(`${viewport.name}: ${name} (${path}, premium)`, async () => {
            await premium.page.goto(path);
            await settled(premium.page);
            if (name === "agent-chat") await expect(premium.page.getByTestId("agent-answer")).toContainText("Offline demo");
            if (name === "agent-builder") await expect(premium.page.getByText("Version 1", { exact: true })).toBeVisible();
            await saveScreenshot(premium.page, `${name}-${viewport.name}`);
            await expectNoHorizontalScroll(premium.page, `${name} on ${viewport.name}`);
          });
        }
      } finally {
        await premium.context.close();
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
