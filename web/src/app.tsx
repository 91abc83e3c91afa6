/**
 * The shell: header + navigation, the connection banner, the toaster, the always-mounted
 * incoming-call modal, and the lazily loaded screen of the current route (src/routes.ts).
 */
import type { ComponentType } from "preact";
import { useEffect, useMemo, useRef, useState } from "preact/hooks";
import { HOME_SIGNED_IN, HOME_SIGNED_OUT, loadIncomingCall, preload, routes, type RouteDef, type RouteProps } from "./routes";
import { Link, matchPath, navigate, useLocation } from "./lib/router";
import {
  getClient,
  onSessionEnded,
  restartConnection,
  useAuth,
  useConnectionState,
  useMe,
  useOptionalClient,
} from "./lib/session";
import { onUsageWarning, useUsage, watchUsage } from "./lib/usage";
import { describeError } from "./lib/errors";
import { formatDuration, formatNumber } from "./lib/format";
import { Avatar, Button, Cursor, GlitchText, Marquee, Modal, Spinner, Toaster, toast } from "./ui";

// --- lazy screens ---------------------------------------------------------------------------------

const loaded = new Map<() => Promise<unknown>, ComponentType<any>>();

function useLazy<P>(load: () => Promise<{ default: ComponentType<P> }>): { Component: ComponentType<P> | null; error: unknown; retry: () => void } {
  const [state, setState] = useState<{ load: unknown; Component: ComponentType<P> | null; error: unknown }>(() => ({
    load,
    Component: (loaded.get(load) as ComponentType<P> | undefined) ?? null,
    error: null,
  }));
  const [attempt, setAttempt] = useState(0);
  useEffect(() => {
    const cached = loaded.get(load) as ComponentType<P> | undefined;
    if (cached) {
      setState({ load, Component: cached, error: null });
      return;
    }
    let alive = true;
    setState({ load, Component: null, error: null });
    load().then(
      (mod) => {
        loaded.set(load, mod.default);
        if (alive) setState({ load, Component: mod.default, error: null });
      },
      (error: unknown) => alive && setState({ load, Component: null, error }),
    );
    return () => {
      alive = false;
    };
  }, [load, attempt]);
  const current = state.load === load ? state : { Component: (loaded.get(load) as ComponentType<P> | undefined) ?? null, error: null };
  return { Component: current.Component, error: current.error, retry: () => setAttempt((n) => n + 1) };
}

function Screen({ route, props }: { route: RouteDef; props: RouteProps }) {
  const { Component, error, retry } = useLazy(route.load);
  if (error) {
    return (
      <section class="screen screen--narrow" aria-labelledby="load-error">
        <h1 id="load-error" class="screen-title">Could not load this screen</h1>
        <p class="screen-lead">{navigator.onLine ? "The app may have been updated." : "You are offline."}</p>
        <div class="row">
          <Button onClick={retry}>Try again</Button>
          <Button variant="secondary" onClick={() => location.reload()}>
            Reload
          </Button>
        </div>
      </section>
    );
  }
  if (!Component) {
    return (
      <div class="page-loading">
        <Spinner size="lg" label={`Loading ${route.title}`} />
      </div>
    );
  }
  return <Component {...props} />;
}

function IncomingCallMount() {
  const { Component } = useLazy(loadIncomingCall);
  return Component ? <Component /> : null;
}

// --- routing --------------------------------------------------------------------------------------

function resolve(path: string): { route: RouteDef; params: Record<string, string> } {
  for (const route of routes) {
    const params = matchPath(route.path, path);
    if (params) return { route, params };
  }
  return { route: routes[routes.length - 1]!, params: {} };
}

function safeNext(next: string | null): string | null {
  return next && next.startsWith("/") && !next.startsWith("//") ? next : null;
}

// --- shell pieces ---------------------------------------------------------------------------------

const TICKER = ["Kintsugi RT", "One socket", "AI chat", "Messenger", "Calls", "Golden repairs", "Stream everything"];

function navItems(signedIn: boolean) {
  const seen = new Set<string>();
  return routes.filter((r) => {
    if (!r.nav || seen.has(r.nav.label)) return false;
    if (r.access === "user" && !signedIn) return false;
    seen.add(r.nav.label);
    return true;
  });
}

function isCurrent(route: RouteDef, path: string): boolean {
  return path === route.path || path.startsWith(`${route.path}/`);
}

function ConnectionBanner() {
  const conn = useConnectionState();
  const client = useOptionalClient();
  const [online, setOnline] = useState(() => navigator.onLine);
  const [showConnecting, setShowConnecting] = useState(false);
  const [resynced, setResynced] = useState(false);
  const firstResync = useRef(conn.resyncs);

  useEffect(() => {
    const on = () => {
      setOnline(true);
      getClient()?.reconnectNow();
    };
    const off = () => setOnline(false);
    const visible = () => {
      const c = getClient();
      if (document.visibilityState === "visible" && c && c.state === "reconnecting") c.reconnectNow();
    };
    window.addEventListener("online", on);
    window.addEventListener("offline", off);
    document.addEventListener("visibilitychange", visible);
    return () => {
      window.removeEventListener("online", on);
      window.removeEventListener("offline", off);
      document.removeEventListener("visibilitychange", visible);
    };
  }, []);
  // "Connecting…" only if it takes a while (no flash on every load).
  useEffect(() => {
    if (conn.state !== "connecting" && conn.state !== "idle") {
      setShowConnecting(false);
      return;
    }
    const timer = setTimeout(() => setShowConnecting(true), 2500);
    return () => clearTimeout(timer);
  }, [conn.state]);
  useEffect(() => {
    if (conn.resyncs === firstResync.current) return;
    setResynced(true);
    const timer = setTimeout(() => setResynced(false), 5000);
    return () => clearTimeout(timer);
  }, [conn.resyncs]);

  if (!client) return null;
  let tone = "";
  let text = "";
  let action: { label: string; run: () => void } | null = null;
  if (conn.stopped) {
    tone = "closed";
    text = describeError(conn.stopped).message;
    action = { label: "Reconnect", run: restartConnection };
  } else if (!online) {
    tone = "offline";
    text = "Offline — messages wait in the outbox and go out when you are back";
  } else if (conn.state === "reconnecting" || (conn.state === "connecting" && conn.connectedAt > 0)) {
    tone = "reconnecting";
    text = "Connection lost — reconnecting…";
    action = { label: "Retry now", run: () => client.reconnectNow() };
  } else if ((conn.state === "connecting" || conn.state === "idle") && showConnecting) {
    tone = "reconnecting";
    text = "Connecting…";
  } else if (resynced) {
    tone = "resync";
    text = "Back online — missed too much to replay, views were refreshed";
  }
  return (
    <div role="status" aria-live="polite" class={tone ? `conn-banner conn-banner--${tone}` : "sr-only"}>
      {text && <span>{text}</span>}
      {action && (
        <Button size="sm" variant="secondary" onClick={action.run}>
          {action.label}
        </Button>
      )}
    </div>
  );
}

function UsageChip() {
  const usage = useUsage();
  if (!usage) return null;
  const pct = usage.limit > 0 ? Math.round((usage.used / usage.limit) * 100) : 0;
  const tone = usage.limit < 0 ? "cyan" : pct >= 100 ? "danger" : pct >= 80 ? "pink" : "gold";
  return (
    <Link href="/usage" class={`usage-chip badge badge--${tone}`} aria-label={`Token usage: ${usage.limit < 0 ? "unlimited" : `${pct}% of this window`}`}>
      {usage.limit < 0 ? "∞ tokens" : `${pct}% tokens`}
    </Link>
  );
}

function Header({ signedIn, path }: { signedIn: boolean; path: string }) {
  const me = useMe();
  const conn = useConnectionState();
  const items = navItems(signedIn);
  const stateLabel: Record<string, string> = {
    open: "Connected",
    connecting: "Connecting",
    reconnecting: "Reconnecting",
    closed: "Disconnected",
    idle: "Not connected",
  };
  return (
    <header class="header">
      <Link href={signedIn ? HOME_SIGNED_IN : "/"} class="brand" aria-label="Kintsugi — home">
        <span class="brand__mark" aria-hidden="true">
          K
        </span>
        <GlitchText text="Kintsugi" />
      </Link>
      <nav class="topnav" aria-label="Main">
        <ul>
          {items.map((r) => (
            <li key={r.path}>
              <Link
                href={r.path}
                class="nav-link"
                aria-current={isCurrent(r, path) ? "page" : undefined}
                onMouseEnter={() => preload(r.path)}
                onFocus={() => preload(r.path)}
              >
                {r.nav!.label}
              </Link>
            </li>
          ))}
        </ul>
      </nav>
      <div class="header__end">
        {signedIn ? (
          <>
            <UsageChip />
            <span class={`conn-dot conn-dot--${conn.state}`} role="img" aria-label={`Connection: ${stateLabel[conn.state] ?? conn.state}`} title={stateLabel[conn.state]} />
            <Link href="/profile" class="user-link" aria-label={`Profile${me ? `: ${me.display_name}` : ""}`}>
              <Avatar name={me?.display_name ?? "?"} src={me?.avatar?.thumbnail_url ?? me?.avatar?.url ?? null} size="sm" decorative />
            </Link>
          </>
        ) : (
          <>
            <Link href="/login" class="nav-link" aria-current={path === "/login" ? "page" : undefined}>
              Log in
            </Link>
            <Link href="/signup" class="btn btn--primary btn--sm">
              Sign up
            </Link>
          </>
        )}
      </div>
    </header>
  );
}

/** Phones: the first four mobile items, and "More" with everything else (a sheet). */
function BottomNav({ path }: { path: string }) {
  const all = navItems(true);
  const items = all.filter((r) => r.nav?.mobile).slice(0, 4);
  const rest = all.filter((r) => !items.includes(r));
  const [open, setOpen] = useState(false);
  const moreCurrent = rest.some((r) => isCurrent(r, path));
  useEffect(() => setOpen(false), [path]);
  return (
    <>
      <nav class="bottomnav" aria-label="Main (mobile)">
        <ul>
          {items.map((r) => (
            <li key={r.path}>
              <Link href={r.path} aria-current={isCurrent(r, path) ? "page" : undefined}>
                <span class="bottomnav__icon" aria-hidden="true">
                  {r.nav!.icon}
                </span>
                <span>{r.nav!.label}</span>
              </Link>
            </li>
          ))}
          <li>
            <button type="button" class={`bottomnav__more ${moreCurrent ? "bottomnav__more--current" : ""}`} aria-haspopup="dialog" aria-expanded={open} onClick={() => setOpen(true)}>
              <span class="bottomnav__icon" aria-hidden="true">
                ≡
              </span>
              <span>More</span>
            </button>
          </li>
        </ul>
      </nav>
      <Modal open={open} onClose={() => setOpen(false)} title="More">
        <ul class="more-list">
          {rest.map((r) => (
            <li key={r.path}>
              <Link href={r.path} class="more-list__link" aria-current={isCurrent(r, path) ? "page" : undefined}>
                <span aria-hidden="true">{r.nav!.icon}</span> {r.nav!.label}
              </Link>
            </li>
          ))}
        </ul>
      </Modal>
    </>
  );
}

/** Session-wide watchers: usage store + warnings, session-ended toasts. */
function useSessionEffects(signedIn: boolean) {
  const client = useOptionalClient();
  useEffect(() => (client ? watchUsage(client) : undefined), [client]);
  // Web Push: re-register this browser's subscription with a new login (never prompts).
  useEffect(() => {
    if (!client || !("Notification" in window) || Notification.permission !== "granted") return;
    return client.once("connected", () => {
      import("./lib/push").then((push) => push.syncPush(client)).catch(() => undefined);
    });
  }, [client]);
  useEffect(
    () =>
      onUsageWarning((threshold, usage) => {
        const reset = formatDuration(Date.parse(usage.reset_at) - Date.now());
        toast.warning(
          threshold >= 100
            ? `You have used all ${formatNumber(usage.limit)} tokens of this window. It resets in ${reset}.`
            : `You have used ${threshold}% of this window's tokens (${formatNumber(usage.used)} of ${formatNumber(usage.limit)}). Resets in ${reset}.`,
          { title: `Usage ${threshold}%`, key: "usage-warning", timeoutMs: 10000, action: { label: "Plans", onClick: () => navigate("/pricing") } },
        );
      }),
    [],
  );
  useEffect(
    () =>
      onSessionEnded((error) => {
        if (error) toast.error(error, { title: "Signed out" });
      }),
    [],
  );
  void signedIn;
}

// --- the app ------------------------------------------------------------------------------------------

export function App() {
  const auth = useAuth();
  const location = useLocation();
  const signedIn = auth.status === "signed-in";
  const path = location.path.length > 1 ? location.path.replace(/\/+$/, "") : location.path;
  const { route, params } = useMemo(() => resolve(path), [path]);
  const mainRef = useRef<HTMLElement>(null);
  const firstRender = useRef(true);
  useSessionEffects(signedIn);

  // Redirects: "/" and access rules.
  let redirect: string | null = null;
  if (auth.status !== "restoring") {
    if (path === "/") redirect = signedIn ? HOME_SIGNED_IN : HOME_SIGNED_OUT;
    else if (route.access === "user" && !signedIn) redirect = `/login?next=${encodeURIComponent(path + (location.query.toString() ? `?${location.query}` : ""))}`;
    else if (route.access === "guest" && signedIn) redirect = safeNext(location.query.get("next")) ?? HOME_SIGNED_IN;
  }
  useEffect(() => {
    if (redirect) navigate(redirect, { replace: true });
  }, [redirect]);

  useEffect(() => {
    document.title = `${route.title} · KINTSUGI`;
    if (firstRender.current) {
      firstRender.current = false;
      return;
    }
    // Move focus to the new content for keyboard and screen-reader users.
    mainRef.current?.focus({ preventScroll: true });
  }, [route, path]);

  const guestScreen = !signedIn;
  return (
    <div class={`app ${guestScreen ? "app--guest" : ""}`}>
      <a class="skip-link" href="#main">
        Skip to content
      </a>
      <div class="ticker">
        <Marquee items={TICKER} duration={40} />
      </div>
      <Header signedIn={signedIn} path={path} />
      <ConnectionBanner />
      <main id="main" class="main" ref={mainRef} tabIndex={-1}>
        {auth.status === "restoring" || redirect ? (
          <div class="page-loading">
            <Spinner size="lg" label="Loading" />
          </div>
        ) : (
          <Screen route={route} props={{ params, query: location.query, path }} />
        )}
      </main>
      {signedIn && <BottomNav path={path} />}
      {signedIn && <IncomingCallMount />}
      <Toaster />
      <Cursor />
      <div class="crt-overlay" aria-hidden="true" />
    </div>
  );
}
