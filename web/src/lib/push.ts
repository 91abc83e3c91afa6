/**
 * Web Push, the browser's side (docs/push.md): notifications for new messages and incoming calls
 * while no tab of the app is open.
 *
 * - `enablePush(client)`: asks for permission (call it from a click: browsers refuse prompts
 *   otherwise), registers /sw.js, subscribes with the server's VAPID key (`push.config`) and hands
 *   the subscription to the server (`push.subscribe`).
 * - `disablePush(client)`: unsubscribes this browser and tells the server (`push.unsubscribe`).
 * - `syncPush(client)`: after a sign-in, re-registers an existing subscription with the new login
 *   (the server forgets a login's subscription at logout); never prompts.
 * - `pushStatus()`: what a settings toggle shows.
 *
 * The service worker (public/sw.js) shows each push: its payload is JSON `{kind, title, body, url,
 * tag}` (`tag` collapses a conversation's notifications; a missed call replaces its ringing one).
 */
import type { KintsugiClient } from "@kintsugi/rt-client";

const WORKER_URL = "/sw.js";

export type PushStatus = "unsupported" | "disabled_by_server" | "denied" | "enabled" | "off";

/** Why `enablePush` did not enable push; `code` is stable for the UI to branch on. */
export class PushError extends Error {
  constructor(
    readonly code: "unsupported" | "disabled_by_server" | "denied",
    message: string,
  ) {
    super(message);
    this.name = "PushError";
  }
}

export function pushSupported(): boolean {
  return (
    typeof window !== "undefined" &&
    "serviceWorker" in navigator &&
    "PushManager" in window &&
    "Notification" in window &&
    window.isSecureContext
  );
}

/** This browser's state: whether it can, may and does receive pushes. */
export async function pushStatus(): Promise<PushStatus> {
  if (!pushSupported()) return "unsupported";
  if (Notification.permission === "denied") return "denied";
  const subscription = await currentSubscription();
  return subscription !== null && Notification.permission === "granted" ? "enabled" : "off";
}

/**
 * Subscribe this browser and register the subscription with the server. Asks for permission first
 * (from a user gesture). Rejects with a `PushError` (unsupported, disabled_by_server, denied), or the
 * client's `KintsugiError` when the server refused the subscription.
 */
export async function enablePush(client: KintsugiClient): Promise<PushSubscription> {
  if (!pushSupported()) throw new PushError("unsupported", "This browser cannot receive push notifications.");
  const config = await client.request("push.config");
  if (!config.enabled || !config.vapid_public_key) {
    throw new PushError("disabled_by_server", "This server does not send push notifications.");
  }
  const permission = Notification.permission === "granted" ? "granted" : await Notification.requestPermission();
  if (permission !== "granted") {
    throw new PushError("denied", "Notifications are blocked for this site (the browser's site settings allow them again).");
  }
  const registration = await workerRegistration();
  const key = fromBase64Url(config.vapid_public_key);
  let subscription = await registration.pushManager.getSubscription();
  if (subscription !== null && !sameKey(subscription.options.applicationServerKey, key)) {
    // Made with another server key (the server's keys changed): it can never be used again.
    await subscription.unsubscribe();
    subscription = null;
  }
  subscription ??= await registration.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: key });
  await register(client, subscription);
  return subscription;
}

/** Stop pushes to this browser: unsubscribe it, then tell the server (best effort: a push service
 * answers 410 for an unsubscribed browser, and the server forgets it then anyway). */
export async function disablePush(client: KintsugiClient): Promise<void> {
  const subscription = await currentSubscription();
  if (subscription === null) return;
  const endpoint = subscription.endpoint;
  await subscription.unsubscribe();
  try {
    await client.request("push.unsubscribe", { endpoint });
  } catch {
    /* offline or signed out: the next push to it gets 410 and the server deletes it */
  }
}

/** After a sign-in (or at start): give an existing subscription to the current login. No prompt;
 * nothing happens without permission and a subscription. Resolves true if one was registered. */
export async function syncPush(client: KintsugiClient): Promise<boolean> {
  if (!pushSupported() || Notification.permission !== "granted") return false;
  const subscription = await currentSubscription();
  if (subscription === null) return false;
  const config = await client.request("push.config");
  if (!config.enabled || !config.vapid_public_key) return false;
  if (!sameKey(subscription.options.applicationServerKey, fromBase64Url(config.vapid_public_key))) return false;
  await register(client, subscription);
  return true;
}

async function register(client: KintsugiClient, subscription: PushSubscription): Promise<void> {
  const json = subscription.toJSON();
  const p256dh = json.keys?.["p256dh"];
  const auth = json.keys?.["auth"];
  if (!json.endpoint || !p256dh || !auth) throw new Error("The browser's push subscription has no keys.");
  await client.request("push.subscribe", { endpoint: json.endpoint, keys: { p256dh, auth } });
}

async function workerRegistration(): Promise<ServiceWorkerRegistration> {
  // The shell registers the worker on load in production (src/lib/sw.ts); registering the same script
  // again returns that registration. `ready` waits until it is active (subscribe needs an active one).
  await navigator.serviceWorker.register(WORKER_URL, { scope: "/" });
  return navigator.serviceWorker.ready;
}

async function currentSubscription(): Promise<PushSubscription | null> {
  if (!pushSupported()) return null;
  const registration = await navigator.serviceWorker.getRegistration("/");
  return registration ? registration.pushManager.getSubscription() : null;
}

/** The VAPID key (base64url, as the server sends it) as bytes for `applicationServerKey`. */
function fromBase64Url(text: string): Uint8Array<ArrayBuffer> {
  const base64 = text.replace(/-/g, "+").replace(/_/g, "/") + "=".repeat((4 - (text.length % 4)) % 4);
  const raw = atob(base64);
  const bytes = new Uint8Array(new ArrayBuffer(raw.length));
  for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
  return bytes;
}

function sameKey(current: ArrayBuffer | null, wanted: Uint8Array): boolean {
  if (current === null) return false;
  const bytes = new Uint8Array(current);
  return bytes.length === wanted.length && bytes.every((byte, i) => byte === wanted[i]);
}
