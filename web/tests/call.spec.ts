/**
 * A peer-to-peer video call between two pages, with Chromium's fake camera and microphone
 * (--use-fake-device-for-media-stream): each side's remote <video> plays (its decoded frame count
 * keeps rising), and after the hang-up both timelines show the call.
 */
import type { Page } from "@playwright/test";
import { expect, expectNoHorizontalScroll, messages, PHONE, registerUser, saveScreenshot, sendMessage, startDirectChat, test } from "./fixtures";

/** Frames the page's remote video has decoded so far (0 until it plays). */
async function remoteFrames(page: Page): Promise<number> {
  return page.getByTestId("remote-video").first().evaluate((video: HTMLVideoElement) => {
    const quality = video.getVideoPlaybackQuality?.();
    return quality ? quality.totalVideoFrames : 0;
  });
}

/** The remote video is really playing: it has a size, is not paused, and its frame count grows. */
async function expectRemoteVideoPlays(page: Page, who: string): Promise<void> {
  const video = page.getByTestId("remote-video").first();
  await expect(video, `${who}: remote video`).toBeVisible({ timeout: 20_000 });
  await expect
    .poll(() => video.evaluate((v: HTMLVideoElement) => v.videoWidth > 0 && !v.paused && v.readyState >= 2), {
      message: `${who}: the remote video has frames and plays`,
      timeout: 20_000,
    })
    .toBe(true);
  const before = await remoteFrames(page);
  await expect
    .poll(() => remoteFrames(page), { message: `${who}: decoded frames keep increasing`, timeout: 10_000 })
    .toBeGreaterThan(before + 10);
}

test("a P2P video call between two pages: both remote videos play, the hang-up shows in both timelines", async ({ openAs }) => {
  test.slow(); // ICE, DTLS and two VP8 encoders on a 2-core machine.
  const [caller, callee] = await Promise.all([registerUser("Carol"), registerUser("Dave")]);
  const c = await openAs(caller);
  // The callee is on a phone: the incoming-call dialog and the call screen at 390×844, with touch.
  const d = await openAs(callee, { viewport: PHONE, isMobile: true, hasTouch: true, deviceScaleFactor: 2 });

  const conversationId = await startDirectChat(c, callee);
  await sendMessage(c, "Call you in a second");
  await d.goto(`/messenger/${conversationId}`);
  await expect(messages(d, "Call you in a second")).toHaveCount(1);

  await c.getByRole("button", { name: "Start video call" }).click();
  await expect(c.getByTestId("call-screen")).toBeVisible();

  const incoming = d.getByTestId("incoming-call");
  await expect(incoming).toBeVisible({ timeout: 15_000 });
  await expect(incoming).toContainText("Carol");
  await saveScreenshot(d, "call-incoming-phone");
  await expectNoHorizontalScroll(d, "incoming call on a phone");
  await d.getByRole("button", { name: "Accept call" }).click();

  for (const page of [c, d]) {
    await expect(page.getByTestId("call-screen")).toHaveAttribute("data-phase", "connected", { timeout: 30_000 });
    await expect(page.getByTestId("call-screen")).toHaveAttribute("data-mode", "p2p");
  }
  await expectRemoteVideoPlays(c, "caller");
  await expectRemoteVideoPlays(d, "callee");
  await saveScreenshot(c, "call-desktop");
  await saveScreenshot(d, "call-phone");
  await expectNoHorizontalScroll(d, "call screen on a phone");

  await c.getByRole("button", { name: "Hang up" }).click();
  for (const page of [c, d]) {
    await expect(page.getByTestId("call-screen")).toHaveAttribute("data-phase", "ended", { timeout: 15_000 });
  }

  // The call's entry in the conversation, on both sides: a completed video call with its duration.
  await expect(c.getByTestId("call-entry")).toHaveCount(1, { timeout: 15_000 });
  await expect(c.getByTestId("call-entry")).toHaveAttribute("data-outcome", "completed");
  await expect(c.getByTestId("call-entry")).toContainText(/Outgoing video call · \d+:\d\d/);
  await expect(d.getByTestId("call-entry")).toHaveCount(1, { timeout: 15_000 });
  await expect(d.getByTestId("call-entry")).toHaveAttribute("data-outcome", "completed");
  await expect(d.getByTestId("call-entry")).toContainText(/Incoming video call · \d+:\d\d/);
});
