/**
 * Path-based routing on the History API (the server falls back to index.html for unknown
 * non-/api paths). `navigate(path)`, `useRoute()`, `<Link href>`; the route table is src/routes.ts.
 */
import type { ComponentChildren, LooseAnchorHTMLAttributes } from "preact";
import { createStore, useStore } from "./store";

export interface Location {
  path: string;
  query: URLSearchParams;
}

function current(): Location {
  return { path: location.pathname, query: new URLSearchParams(location.search) };
}

const locationStore = createStore<Location>(typeof location !== "undefined" ? current() : { path: "/", query: new URLSearchParams() });

if (typeof window !== "undefined") {
  window.addEventListener("popstate", () => locationStore.set(current()));
}

/** Go to `to` (a path with an optional query); `replace` does not add a history entry. */
export function navigate(to: string, options: { replace?: boolean } = {}): void {
  const url = new URL(to, location.origin);
  if (url.origin !== location.origin) {
    location.assign(url.href);
    return;
  }
  const target = url.pathname + url.search + url.hash;
  if (target === location.pathname + location.search + location.hash) return;
  if (options.replace) history.replaceState(null, "", target);
  else history.pushState(null, "", target);
  locationStore.set(current());
  if (!url.hash) window.scrollTo({ top: 0 });
}

export function useLocation(): Location {
  return useStore(locationStore);
}

/** Match `pattern` ("/messenger/:conversationId") against `path`; params or null. */
export function matchPath(pattern: string, path: string): Record<string, string> | null {
  const a = pattern.split("/").filter(Boolean);
  const b = path.split("/").filter(Boolean);
  const rest = a[a.length - 1] === "*";
  if (rest ? b.length < a.length - 1 : a.length !== b.length) return null;
  const params: Record<string, string> = {};
  for (let i = 0; i < a.length; i++) {
    const part = a[i]!;
    if (part === "*") break;
    const value = b[i];
    if (value === undefined) return null;
    if (part.startsWith(":")) params[part.slice(1)] = decodeURIComponent(value);
    else if (part !== value) return null;
  }
  return params;
}

type AnchorProps = Omit<LooseAnchorHTMLAttributes<HTMLAnchorElement>, "href" | "role"> & { href: string; children?: ComponentChildren; replace?: boolean };

/** An `<a>` that navigates without reloading (modifier-clicks and new tabs work as usual). */
export function Link({ href, replace, onClick, ...rest }: AnchorProps) {
  return (
    <a
      href={href}
      {...rest}
      onClick={(event) => {
        (onClick as ((e: MouseEvent) => void) | undefined)?.(event as unknown as MouseEvent);
        if (event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
        if ((rest as { target?: string }).target === "_blank") return;
        event.preventDefault();
        navigate(href, { replace: !!replace });
      }}
    />
  );
}
