import { navigate } from "./router";

/**
 * Registers public/sw.js (offline shell, push notifications) in production builds. In `npm run dev`
 * it is skipped (Vite serves modules that must not be cached), unless `?sw=1` is in the URL.
 */
export function registerServiceWorker(): void {
  if (!("serviceWorker" in navigator)) return;
  // A notification click in the service worker asks the open window to go somewhere.
  navigator.serviceWorker.addEventListener("message", (event: MessageEvent) => {
    const data = event.data as { type?: string; url?: string } | null;
    if (data?.type === "kintsugi:navigate" && typeof data.url === "string" && data.url.startsWith("/")) navigate(data.url);
  });
  const wanted = import.meta.env.PROD || new URLSearchParams(location.search).has("sw");
  if (!wanted) return;
  const register = () => navigator.serviceWorker.register("/sw.js", { scope: "/" }).catch((error: unknown) => console.warn("service worker", error));
  if (document.readyState === "complete") void register();
  else window.addEventListener("load", () => void register(), { once: true });
}

/** The active registration (for push subscription), once ready. */
export function serviceWorkerReady(): Promise<ServiceWorkerRegistration> | null {
  return "serviceWorker" in navigator ? navigator.serviceWorker.ready : null;
}
