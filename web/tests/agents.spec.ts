/**
 * Agents (issue 15): a basic user sees the upsell; a premium_starter user builds an agent with one
 * tool (the parameters JSON is checked in the page, and as a JSON Schema by the server, which names
 * the field), saves it (version 1, then 2), tests the tool's sample arguments against its schema, and
 * runs a chat with the offline-demo model (text only: no tool calls), seeing the streamed answer and
 * agent.done.
 */
import { startBackend, type Backend } from "./support/backend.js";
import { expect, expectNoHorizontalScroll, PHONE, receivedFrames, registerUser, setTier, test, type TestUser } from "./fixtures";

test("a basic user sees the Premium Starter upsell", async ({ openAs }) => {
  const user = await registerUser("Basil");
  const page = await openAs(user);
  await page.goto("/agents");
  await expect(page.getByRole("heading", { level: 1, name: "Agents" })).toBeVisible();
  await expect(page.getByRole("heading", { name: "Agents need Premium Starter" })).toBeVisible();
  await expect(page.getByRole("link", { name: "See plans" })).toHaveAttribute("href", "/pricing");
  await expect(page.getByRole("link", { name: "New agent" })).toHaveCount(0);
  // The builder and the chat say the same.
  await page.goto("/agents/new");
  await expect(page.getByRole("heading", { name: "Agents need Premium Starter" })).toBeVisible();
});

test("a premium user builds an agent with a tool and chats with it", async ({ openAs }) => {
  test.slow();
  const user = await registerUser("Priya");
  await setTier(user, "premium_starter");
  const page = await openAs(user);
  const frames = receivedFrames(page);

  await page.goto("/agents");
  await expect(page.getByRole("heading", { name: "No agents yet" })).toBeVisible();
  await page.getByRole("link", { name: "New agent" }).click();
  await expect(page).toHaveURL(/\/agents\/new$/);
  await expect(page.getByRole("heading", { level: 1, name: "New agent" })).toBeVisible();

  await page.getByLabel("Name", { exact: true }).fill("Order helper");
  await page.getByLabel("Handle", { exact: true }).fill("@OrderHelper");
  await page.getByLabel("Instructions", { exact: true }).fill("Look orders up with lookup_order and answer briefly.");
  await expect(page.getByRole("combobox", { name: "Model", exact: true })).toHaveValue("offline-demo");
  await page.getByLabel("Temperature", { exact: true }).fill("0.5");
  await page.getByLabel("Step limit", { exact: true }).fill("4");
  await page.getByRole("button", { name: "Add starter" }).click();
  await page.getByLabel("Starter 1", { exact: true }).fill("Where is order A-17?");

  await page.getByRole("button", { name: "Add tool" }).click();
  await page.getByLabel("Tool 1 name", { exact: true }).fill("lookup_order");
  await page.getByLabel("Tool 1 description", { exact: true }).fill("Find an order by its number.");
  await page.getByLabel("Tool 1 webhook kind", { exact: true }).selectOption("n8n");
  await page.getByLabel("Tool 1 webhook URL", { exact: true }).fill("https://n8n.example.com/webhook/orders");
  await page.getByLabel("Tool 1 header name", { exact: true }).fill("X-N8N-Key");
  await page.getByLabel("Tool 1 secret", { exact: true }).fill("s3cr3t-value");

  // Not JSON: a readable error in the page, nothing sent.
  const params = page.getByLabel("Tool 1 parameters (JSON Schema)", { exact: true });
  await params.fill('{"type": "object", "properties": {');
  await expect(page.getByText(/^Not valid JSON:/)).toBeVisible();
  await expect(params).toHaveAttribute("aria-invalid", "true");
  await page.getByRole("button", { name: "Create agent" }).click();
  await expect(page.getByText("Fix the marked fields first.")).toBeVisible();

  // JSON, but not a JSON Schema: the server says so and names the field.
  await params.fill('{"type": "object", "properties": {"order": {"type": "nope"}}}');
  await expect(page.getByText(/^Not valid JSON:/)).toHaveCount(0);
  await page.getByRole("button", { name: "Create agent" }).click();
  await expect(page.getByRole("alert").filter({ hasText: "tools[0].parameters:" })).toBeVisible();
  await expect(params).toHaveAttribute("aria-invalid", "true");

  await params.fill(JSON.stringify({ type: "object", properties: { order: { type: "string" } }, required: ["order"] }));
  await page.getByRole("button", { name: "Create agent" }).click();
  await expect(page).toHaveURL(/\/agents\/[0-9a-f-]{36}$/);
  await expect(page.getByText("Version 1", { exact: true })).toBeVisible();
  await expect(page.getByRole("heading", { level: 1, name: "Order helper" })).toBeVisible();
  await expect(page.getByLabel("Handle", { exact: true })).toHaveValue("orderhelper");
  // The secret is write-only: saved, not shown.
  await expect(page.getByText("Secret saved")).toBeVisible();
  await expect(page.getByLabel("Tool 1 replace secret", { exact: true })).toHaveValue("");

  // Test tool: arguments that do not match the schema are refused before any call.
  await page.getByLabel("Tool 1 sample arguments (JSON)", { exact: true }).fill('{"order": 17}');
  await page.getByRole("button", { name: "Test tool lookup_order" }).click();
  await expect(page.getByRole("alert").filter({ hasText: /^arguments/ })).toBeVisible();

  // A new version keeps the secret.
  await page.getByLabel("Name", { exact: true }).fill("Order helper 2");
  await page.getByRole("button", { name: "Save new version" }).click();
  await expect(page.getByText("Version 2", { exact: true })).toBeVisible();
  await expect(page.getByText("Secret saved")).toBeVisible();

  // Chat: the offline demo streams text only.
  await page.getByRole("link", { name: "Chat with it" }).click();
  await expect(page).toHaveURL(/\/agents\/[0-9a-f-]{36}\/chat$/);
  await expect(page.getByRole("heading", { level: 1, name: "Chat: Order helper 2" })).toBeVisible();
  await page.getByRole("button", { name: "Where is order A-17?" }).click();
  const conversation = page.getByRole("list", { name: "Agent conversation" });
  await expect(conversation.getByText("Where is order A-17?")).toBeVisible();
  const answer = page.getByTestId("agent-answer").last();
  await expect(answer).toContainText("Offline demo", { timeout: 20_000 });
  await expect(answer).toContainText("history and search.", { timeout: 20_000 });
  await expect(answer.getByText("Done", { exact: true })).toBeVisible();
  await expect(page).toHaveURL(/\/chat\?run=[0-9a-f-]{36}$/);
  expect(frames.some((f) => f.type === "agent.delta")).toBe(true);
  const done = frames.find((f) => f.type === "agent.done");
  expect(done).toMatchObject({ status: "answered", turn: 1 });
  expect(String(done?.text)).toContain("Offline demo");

  // Continue the run, then find it among the past runs after a reload.
  const composer = page.getByRole("textbox", { name: "Message to the agent" });
  await composer.fill("And order B-2?");
  await page.getByRole("button", { name: "Send" }).click();
  await expect(page.getByTestId("agent-answer")).toHaveCount(2);
  await expect(page.getByTestId("agent-answer").last().getByText("Done", { exact: true })).toBeVisible({ timeout: 20_000 });
  await page.reload();
  await expect(conversation.getByText("And order B-2?")).toBeVisible();
  await expect(page.getByTestId("agent-answer")).toHaveCount(2);
  await expect(page.getByRole("complementary", { name: "Past runs" }).getByRole("link")).toHaveCount(1);

  // Phone: no sideways scroll on the chat, the builder and the list.
  await page.setViewportSize(PHONE);
  await expectNoHorizontalScroll(page, "agent chat on a phone");
  await page.getByRole("link", { name: "Edit agent" }).click();
  await expect(page.getByText("Version 2", { exact: true })).toBeVisible();
  await expectNoHorizontalScroll(page, "agent builder on a phone");
  await page.goto("/agents");
  await expect(page.getByRole("link", { name: "Chat with Order helper 2" })).toBeVisible();
  await expectNoHorizontalScroll(page, "agents list on a phone");

  // Delete.
  await page.getByRole("link", { name: "Edit Order helper 2" }).click();
  await page.getByRole("button", { name: "Delete agent" }).click();
  await page.getByRole("alertdialog", { name: "Delete this agent?" }).getByRole("button", { name: "Delete", exact: true }).click();
  await expect(page).toHaveURL(/\/agents$/);
  await expect(page.getByRole("heading", { name: "No agents yet" })).toBeVisible();
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

  test("Stop ends an agent's answer mid-stream (agent.done stopped) and keeps what was written", async ({ openAs }) => {
    const user: TestUser = await registerUser("Stella", slow.baseUrl);
    await setTier(user, "premium_starter", slow.databaseUrl);
    const page = await openAs(user, { baseUrl: slow.baseUrl });
    const frames = receivedFrames(page);
    await page.goto("/agents/new");
    await page.getByLabel("Name", { exact: true }).fill("Talker");
    await page.getByLabel("Handle", { exact: true }).fill("talker");
    await page.getByRole("button", { name: "Create agent" }).click();
    await expect(page.getByText("Version 1", { exact: true })).toBeVisible();
    await page.getByRole("link", { name: "Chat with it" }).click();
    await page.getByRole("textbox", { name: "Message to the agent" }).fill("Tell me a long story");
    await page.getByRole("button", { name: "Send" }).click();
    const answer = page.getByTestId("agent-answer").last();
    await expect(answer).toContainText("Offline demo");
    await expect(answer).toHaveAttribute("aria-busy", "true");
    await page.getByRole("button", { name: "Stop" }).click();
    await expect(answer.getByText("Stopped", { exact: true })).toBeVisible();
    await expect(answer).not.toHaveAttribute("aria-busy", "true");
    await expect.poll(() => frames.find((f) => f.type === "agent.done")?.status).toBe("stopped");
    const kept = String(frames.find((f) => f.type === "agent.done")!.text);
    expect(kept).not.toContain("history and search.");
    await expect(answer).toContainText(kept);
    // The run is listed as stopped, and can be continued.
    await expect(page.getByRole("complementary", { name: "Past runs" }).getByRole("link")).toContainText("stopped");
    await expect(page.getByRole("button", { name: "Send" })).toBeVisible();
  });
});
