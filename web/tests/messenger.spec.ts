/**
 * The messenger between two people, each in a browser context of their own: live messages, the typing
 * indicator, read receipts, a reaction, and an uploaded image that renders on the other side.
 */
import { composer, expect, makePng, messages, registerUser, sendMessage, startDirectChat, test } from "./fixtures";

test("two users message each other live: typing, read receipts, a reaction, an image", async ({ openAs }) => {
  const [ann, bob] = await Promise.all([registerUser("Ann"), registerUser("Bob")]);
  const a = await openAs(ann);
  const b = await openAs(bob);

  const conversationId = await startDirectChat(a, bob);
  await b.goto("/messenger");

  // Ann writes first; Bob, on his list, sees the conversation appear and opens it.
  await sendMessage(a, "Hi Bob, it is Ann");
  await expect(messages(a, "Hi Bob, it is Ann")).toHaveCount(1);
  await expect(messages(a, "Hi Bob, it is Ann").getByTestId("receipt")).toHaveAttribute("data-state", "sent");
  const item = b.getByTestId("conversation").filter({ hasText: "Ann" });
  await expect(item).toBeVisible();
  await item.click();
  await expect(b).toHaveURL(new RegExp(`/messenger/${conversationId}$`));
  await expect(messages(b, "Hi Bob, it is Ann")).toHaveCount(1);

  // Bob has read it: Ann's receipt turns to "seen".
  await expect(messages(a, "Hi Bob, it is Ann").getByTestId("receipt")).toHaveAttribute("data-state", "seen");

  // Bob types: Ann sees "Bob is typing…"; he sends, she gets the message live.
  await composer(b).pressSequentially("Hello Ann", { delay: 40 });
  await expect(a.getByTestId("typing")).toBeVisible();
  await expect(a.getByTestId("typing")).toContainText("Bob is typing");
  await composer(b).press("Enter");
  await expect(messages(a, "Hello Ann")).toHaveCount(1);
  await expect(messages(b, "Hello Ann").getByTestId("receipt")).toHaveAttribute("data-state", "seen");

  // Ann reacts to Bob's message with 👍; Bob sees the reaction on it.
  const row = a.locator(".msg-row").filter({ has: messages(a, "Hello Ann") });
  await row.hover();
  await row.getByRole("button", { name: "Message actions" }).click();
  await a.getByRole("menuitem", { name: "React with 👍" }).click();
  await expect(messages(a, "Hello Ann").getByRole("button", { name: "👍 1, you reacted" })).toBeVisible();
  await expect(messages(b, "Hello Ann").getByRole("button", { name: /^👍 1$/ })).toBeVisible();

  // Ann sends a photo with a caption: it uploads, and renders for Bob (a decoded image, not a broken one).
  await a.locator('input[type="file"]').setInputFiles({ name: "gradient.png", mimeType: "image/png", buffer: makePng(320, 200) });
  await expect(a.getByRole("list", { name: "Attachments to send" })).toContainText("gradient.png");
  await composer(a).fill("A gradient");
  await a.getByRole("button", { name: "Send" }).click();
  const photo = messages(b, "A gradient").getByRole("img", { name: "Photo: gradient.png" });
  await expect(photo).toBeVisible();
  await expect.poll(() => photo.evaluate((img: HTMLImageElement) => img.complete && img.naturalWidth), { message: "the photo decoded" }).toBeGreaterThan(0);
  const mine = messages(a, "A gradient").getByRole("img", { name: "Photo: gradient.png" });
  await expect.poll(() => mine.evaluate((img: HTMLImageElement) => img.complete && img.naturalWidth)).toBeGreaterThan(0);

  // Every message exactly once on both sides.
  for (const page of [a, b]) {
    await expect(messages(page)).toHaveCount(3);
  }
});
