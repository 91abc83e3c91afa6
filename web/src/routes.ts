/**
 * The route table. Every screen is a lazy chunk (`load`), so the initial bundle holds only the
 * shell, the session and the design system. A screen module's DEFAULT export is a component that
 * receives `RouteProps`. Order matters: the first match wins.
 *
 * W2 owns ./screens/messenger/** and ./screens/calls/** (including the incoming-call modal, which
 * the shell keeps mounted whenever the user is signed in).
 */
import type { ComponentType } from "preact";

export interface RouteProps {
  /** `:name` segments of the pattern, decoded. */
  params: Record<string, string>;
  /** The query string. */
  query: URLSearchParams;
  /** The path as matched. */
  path: string;
}

export type ScreenModule = { default: ComponentType<RouteProps> };

export interface NavItem {
  label: string;
  /** A short glyph shown in the bottom navigation on phones. */
  icon: string;
  /** Shown in the bottom navigation on phones (at most five are). */
  mobile?: boolean;
}

export interface RouteDef {
  /** "/messenger/:conversationId"; a trailing "*" matches the rest. */
  path: string;
  load: () => Promise<ScreenModule>;
  /** The document title ("… · KINTSUGI"). */
  title: string;
  /** "user": signed-in only (else → /login?next=…); "guest": signed-out only (else → /chat); "any". */
  access: "user" | "guest" | "any";
  /** In the navigation (the first route with a given `nav.label` is the link target). */
  nav?: NavItem;
}

const auth = () => import("./screens/auth/index.tsx");
const chat = () => import("./screens/chat/index.tsx");
const messenger = () => import("./screens/messenger/index.tsx");
const calls = () => import("./screens/calls/index.tsx");
const usage = () => import("./screens/usage/index.tsx");
const billing = () => import("./screens/billing/index.tsx");
const profile = () => import("./screens/profile/index.tsx");
const coming = () => import("./screens/coming/index.tsx");
const agents = () => import("./screens/agents/index.tsx");
const notFound = () => import("./screens/not-found.tsx");

export const routes: RouteDef[] = [
  { path: "/login", load: auth, title: "Log in", access: "guest" },
  { path: "/signup", load: auth, title: "Sign up", access: "guest" },
  { path: "/chat", load: chat, title: "AI chat", access: "user", nav: { label: "AI Chat", icon: "◆", mobile: true } },
  { path: "/chat/:chatId", load: chat, title: "AI chat", access: "user" },
  { path: "/messenger", load: messenger, title: "Messenger", access: "user", nav: { label: "Messenger", icon: "✉", mobile: true } },
  { path: "/messenger/:conversationId", load: messenger, title: "Messenger", access: "user" },
  { path: "/calls", load: calls, title: "Calls", access: "user", nav: { label: "Calls", icon: "☎", mobile: true } },
  { path: "/usage", load: usage, title: "Usage", access: "user", nav: { label: "Usage", icon: "▮", mobile: true } },
  { path: "/pricing", load: billing, title: "Pricing", access: "any", nav: { label: "Pricing", icon: "$" } },
  { path: "/billing/:result", load: billing, title: "Billing", access: "user" },
  { path: "/settings/billing", load: billing, title: "Billing", access: "user" },
  { path: "/translator", load: coming, title: "Translator", access: "user", nav: { label: "Translator", icon: "⇄" } },
  { path: "/agents", load: agents, title: "Agents", access: "user", nav: { label: "Agents", icon: "⚙" } },
  { path: "/agents/:agentId/chat", load: agents, title: "Agent chat", access: "user" },
  { path: "/agents/:agentId", load: agents, title: "Agent builder", access: "user" },
  { path: "/profile", load: profile, title: "Profile", access: "user", nav: { label: "Profile", icon: "☺" } },
  { path: "/*", load: notFound, title: "Not found", access: "any" },
];

/** Where "/" goes. */
export const HOME_SIGNED_IN = "/chat";
export const HOME_SIGNED_OUT = "/login";

/**
 * Always mounted while signed in (outside the routes): the incoming-call modal. Its default export
 * takes no props; it renders nothing until a `call.ringing` arrives.
 */
export const loadIncomingCall = (): Promise<{ default: ComponentType }> => import("./screens/calls/incoming.tsx");

/** Warm a route's chunk (on hover/focus of a link). */
export function preload(path: string): void {
  const route = routes.find((r) => r.path === path);
  void route?.load().catch(() => undefined);
}
