import { createHash } from "node:crypto";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { defineConfig, type Plugin } from "vite";
import preact from "@preact/preset-vite";

// `npm run dev` talks to a running Kintsugi RT server (KINTSUGI_SERVER, default :8080):
// REST, the socket and the OpenAPI description go through Vite's proxy, so the app uses
// same-origin URLs in development exactly as it does when the server serves web/dist.
const server = process.env.KINTSUGI_SERVER ?? "http://localhost:8080";
const proxy = {
  "/api": { target: server, changeOrigin: true },
  "/openapi.json": { target: server, changeOrigin: true },
  "/healthz": { target: server, changeOrigin: true },
  "/readyz": { target: server, changeOrigin: true },
  "/ws": { target: server, ws: true, changeOrigin: true },
};

/**
 * Fills dist/sw.js (copied from public/) with this build's precache list (index.html as "/", every
 * emitted JS/CSS file, the manifest, the icons) and a version derived from it, so a new build
 * installs a new service worker and the offline shell always matches the deployed files.
 */
function serviceWorkerManifest(): Plugin {
  let emitted: string[] = [];
  return {
    name: "kintsugi-sw-manifest",
    apply: "build",
    generateBundle(_options, bundle) {
      emitted = Object.keys(bundle).filter((file) => !file.endsWith(".map") && file !== "index.html" && file !== "sw.js");
    },
    writeBundle(options) {
      const dir = options.dir ?? "dist";
      const file = join(dir, "sw.js");
      // generateBundle can list a chunk that is dropped later (a CSS-only chunk): precache only
      // what was really written, or the worker would ask for a file that 404s.
      emitted = emitted.filter((f) => existsSync(join(dir, f)));
      const statics = [
        "/manifest.webmanifest",
        "/icons/favicon.svg",
        "/icons/icon-192.png",
        "/icons/icon-512.png",
        "/icons/maskable-192.png",
        "/icons/maskable-512.png",
        "/icons/apple-touch-icon.png",
      ];
      const precache = ["/", ...emitted.filter((f) => !statics.includes(`/${f}`)).map((f) => `/${f}`), ...statics];
      const version = createHash("sha256").update(readFileSync(join(dir, "index.html"))).update(emitted.sort().join("\n")).digest("hex").slice(0, 12);
      const source = readFileSync(file, "utf8");
      if (!source.includes('"__BUILD_VERSION__"') || !source.includes('["__PRECACHE__"]')) throw new Error("public/sw.js lost its placeholders");
      writeFileSync(file, source.replace('"__BUILD_VERSION__"', JSON.stringify(version)).replace('["__PRECACHE__"]', JSON.stringify(precache)));
    },
  };
}

export default defineConfig({
  plugins: [preact({ prerender: { enabled: false } }), serviceWorkerManifest()],
  resolve: {
    // @kintsugi/rt-client is a symlink (file:../clients/typescript): take its runtime
    // dependency from here, so one copy is bundled whether or not it has node_modules.
    dedupe: ["@msgpack/msgpack", "preact"],
  },
  server: {
    port: 5173,
    proxy,
    // Browser-test output (screenshots, traces) must not reload pages under a running dev server.
    watch: { ignored: ["**/tests/**", "**/test-results/**", "**/playwright-report/**", "**/lighthouse/**"] },
  },
  preview: {
    port: 4173,
    proxy,
  },
  build: {
    target: "es2022",
    sourcemap: true,
    // Initial JS budget: 150 KB gzip (docs/web.md); screens are lazy chunks.
    chunkSizeWarningLimit: 200,
  },
});
