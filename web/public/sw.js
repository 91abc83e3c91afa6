/*
 * Kintsugi RT service worker (hand-written, no framework).
 *
 * - Offline shell: at install it precaches the built index.html ("/") and every JS/CSS chunk, the
 *   manifest and the icons; `npm run build` writes the list and a version into dist/sw.js (the
 *   placeholders below; see vite.config.ts). Navigations are network-first with the cached shell as
 *   the fallback; hashed /assets/ are cache-first; other static files stale-while-revalidate.
 *   Never touched: /api/, /ws, /openapi.json, /healthz, /readyz, /metrics, and anything not GET.
 * - Web Push: a `push` event's JSON payload {title, body, url, tag} becomes a notification (a `tag`
 *   replaces the previous notification with that tag); `notificationclick` focuses an open window
 *   of the app (navigating it to `url`) or opens one. The subscribe side is src/lib/push.ts.
 */
const VERSION = "__BUILD_VERSION__";
const PRECACHE = ["__PRECACHE__"];
const DEV = VERSION.startsWith("__");
const SHELL_CACHE = `kintsugi-shell-${VERSION}`;
const RUNTIME_CACHE = "kintsugi-runtime";
const SHELL_URL = "/";
const BYPASS = /^\/(api|ws|openapi\.json|healthz|readyz|metrics)(\/|$|\?)/;

self.addEventListener("install", (event) => {
  event.waitUntil(
    (async () => {
      if (!DEV) {
        const cache = await caches.open(SHELL_CACHE);
        // Fresh copies (not the HTTP cache), so the shell matches this build. The shell itself must
        // be cached; a chunk that fails (a deploy racing this install) is fetched later instead.
        await cache.add(new Request(SHELL_URL, { cache: "reload" }));
        await Promise.allSettled(PRECACHE.filter((url) => url !== SHELL_URL).map((url) => cache.add(new Request(url, { cache: "reload" }))));
      }
      await self.skipWaiting();
    })(),
  );
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    (async () => {
      const keys = await caches.keys();
      await Promise.all(keys.filter((key) => key.startsWith("kintsugi-shell-") && key !== SHELL_CACHE).map((key) => caches.delete(key)));
      if (self.registration.navigationPreload) await self.registration.navigationPreload.enable().catch(() => undefined);
      await self.clients.claim();
    })(),
  );
});

self.addEventListener("fetch", (event) => {
  const request = event.request;
  if (request.method !== "GET" || DEV) return;
  const url = new URL(request.url);
  if (url.origin !== self.location.origin || BYPASS.test(url.pathname)) return;

  if (request.mode === "navigate") {
    event.respondWith(
      (async () => {
        try {
          const preloaded = await event.preloadResponse;
          if (preloaded) return preloaded;
          return await fetch(request);
        } catch {
          const cached = (await caches.match(SHELL_URL, { cacheName: SHELL_CACHE, ignoreVary: true })) || (await caches.match(SHELL_URL, { ignoreVary: true }));
          return cached || new Response("<h1>Offline</h1>", { status: 503, headers: { "content-type": "text/html; charset=utf-8" } });
        }
      })(),
    );
    return;
  }

  if (url.pathname.startsWith("/assets/")) {
    // Hashed file names never change: cache first. (ignoreVary: the server varies on Origin, which
    // module scripts send and the precache requests did not.)
    event.respondWith(
      (async () => {
        const cached = await caches.match(request, { ignoreVary: true });
        if (cached) return cached;
        const response = await fetch(request);
        if (response.ok) {
          const cache = await caches.open(RUNTIME_CACHE);
          await cache.put(request, response.clone());
        }
        return response;
      })(),
    );
    return;
  }

  // Icons, manifest, other static files: stale-while-revalidate.
  event.respondWith(
    (async () => {
      const cached = await caches.match(request, { ignoreVary: true });
      const network = fetch(request)
        .then(async (response) => {
          if (response.ok && response.type === "basic") {
            const cache = await caches.open(RUNTIME_CACHE);
            await cache.put(request, response.clone());
          }
          return response;
        })
        .catch(() => undefined);
      if (cached) {
        event.waitUntil(network);
        return cached;
      }
      return (await network) || new Response("", { status: 504 });
    })(),
  );
});

// --- Web Push ------------------------------------------------------------------------------------

self.addEventListener("push", (event) => {
  let payload = {};
  try {
    payload = event.data ? event.data.json() : {};
  } catch {
    payload = { body: event.data ? event.data.text() : "" };
  }
  const title = typeof payload.title === "string" && payload.title ? payload.title : "Kintsugi";
  const options = {
    body: typeof payload.body === "string" ? payload.body : "",
    icon: "/icons/icon-192.png",
    badge: "/icons/maskable-192.png",
    data: { url: typeof payload.url === "string" ? payload.url : "/" },
  };
  if (typeof payload.tag === "string" && payload.tag) {
    options.tag = payload.tag; // a newer notification with the same tag replaces the older one
    options.renotify = true;
  }
  event.waitUntil(self.registration.showNotification(title, options));
});

self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  const raw = (event.notification.data && event.notification.data.url) || "/";
  const target = new URL(raw, self.location.origin);
  // Only ever open our own origin.
  const url = target.origin === self.location.origin ? target.href : self.location.origin + "/";
  event.waitUntil(
    (async () => {
      const windows = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
      const same = windows.find((client) => client.url === url) || windows.find((client) => new URL(client.url).origin === self.location.origin);
      if (same) {
        // The app routes in place (src/lib/sw.ts listens), without reloading the page.
        same.postMessage({ type: "kintsugi:navigate", url: target.pathname + target.search + target.hash });
        return same.focus();
      }
      return self.clients.openWindow(url);
    })(),
  );
});
