/**
 * Live token usage of the current window: `usage.get` on every (re)connect (usage.updated is not
 * durable), then `usage.updated` / `usage.warning` frames. The shell starts it; the usage screen and
 * the header chip read it with `useUsage()`.
 */
import type { KintsugiClient, UsageState } from "@kintsugi/rt-client";
import { createStore, useStore } from "./store";

export interface UsageInfo extends UsageState {
  /** The last threshold the server warned about in this window (80, 100), or null. */
  warned: number | null;
}

const usageStore = createStore<UsageInfo | null>(null);
const warningListeners = new Set<(threshold: number, usage: UsageState) => void>();

export function useUsage(): UsageInfo | null {
  return useStore(usageStore);
}

/** Called by the shell for each warning (it shows a toast); returns an unsubscribe. */
export function onUsageWarning(fn: (threshold: number, usage: UsageState) => void): () => void {
  warningListeners.add(fn);
  return () => warningListeners.delete(fn);
}

export function refreshUsage(client: KintsugiClient): Promise<void> {
  return client.request("usage.get", {}).then(
    ({ tier, used, limit, reset_at }) => {
      const previous = usageStore.get();
      const sameWindow = previous?.reset_at === reset_at;
      usageStore.set({ tier, used, limit, reset_at, warned: sameWindow ? previous!.warned : null });
    },
    () => undefined,
  );
}

/** Wire the client to the store; returns the teardown. */
export function watchUsage(client: KintsugiClient): () => void {
  usageStore.set(null);
  const offs = [
    client.on("connected", () => void refreshUsage(client)),
    client.on("usage.updated", ({ tier, used, limit, reset_at }) => {
      const previous = usageStore.get();
      usageStore.set({ tier, used, limit, reset_at, warned: previous?.reset_at === reset_at ? previous.warned : null });
    }),
    client.on("usage.warning", ({ threshold, tier, used, limit, reset_at }) => {
      usageStore.set({ tier, used, limit, reset_at, warned: threshold });
      for (const fn of warningListeners) fn(threshold, { tier, used, limit, reset_at });
    }),
    client.on("subscription.updated", () => void refreshUsage(client)),
  ];
  if (client.state === "open") void refreshUsage(client);
  return () => offs.forEach((off) => off());
}
