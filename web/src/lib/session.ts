/**
 * The session: ONE `AuthSession` (the token pair) and ONE `KintsugiClient` (the socket) for the
 * whole app. Screens never create their own client, never call `fetch` with a token by hand, and
 * never open another WebSocket: they use the hooks and helpers below (see web/CONVENTIONS.md).
 *
 * - `useAuth()`             → `{status, user}`: "restoring" | "signed-out" | "signed-in".
 * - `useClient()`           → the connected `KintsugiClient` (only inside the signed-in shell).
 * - `useMe()`               → own `Profile` (`profile.get`, kept fresh by `profile.updated`), or null.
 * - `useEvent(type, fn)`    → subscribe to a server frame or client event for the component's life.
 * - `useConnectionState()`  → `{state, resyncs, lastDisconnect, stopped}` for banners.
 * - `useFeatures()`         → `hello.features` (chat provider, billing on/off, calls mode…).
 * - `apiFetch(path, init)`  → `fetch` with `Authorization: Bearer`, renewing the token (once more after a 401).
 * - `apiJson(method, path, body?)` → parsed JSON, or throws a `KintsugiError` with the body's code.
 * - `uploadMedia(file, {kind, durationMs, onProgress, signal})` → `POST /api/media` (multipart).
 * - `signIn`, `signUp`, `signOut` for the auth screens.
 *
 * Tokens: the pair is kept in localStorage ("kintsugi.session") so a reload stays signed in. Refresh
 * tokens rotate and the server revokes a login whose refresh token is used twice, so every refresh
 * runs under a Web Lock shared by all tabs, and a tab whose token another tab already rotated just
 * adopts the stored pair instead of refreshing again.
 */
import {
  AuthApi,
  AuthSession,
  KeyValueOutboxStorage,
  KintsugiClient,
  KintsugiError,
  isKintsugiError,
  tokenExpiry,
  type ClientEvents,
  type ConnectionState,
  type DisconnectInfo,
  type Profile,
  type TokenResponse,
  type User,
} from "@kintsugi/rt-client";
import { useEffect, useRef } from "preact/hooks";
import { createStore, useStore } from "./store";

const ORIGIN = typeof location !== "undefined" ? location.origin : "http://localhost:8080";
const STORAGE_KEY = "kintsugi.session";

// --- persisted token pair, shared by tabs ---------------------------------------------------------

function readStored(): TokenResponse | null {
  try {
    const raw = localStorage.getItem(STORAGE_KEY);
    return raw ? (JSON.parse(raw) as TokenResponse) : null;
  } catch {
    return null;
  }
}

function writeStored(tokens: TokenResponse | null): void {
  try {
    if (tokens) localStorage.setItem(STORAGE_KEY, JSON.stringify(tokens));
    else localStorage.removeItem(STORAGE_KEY);
  } catch {
    /* private mode: the session lives in memory only */
  }
}

async function withLock<T>(name: string, fn: () => Promise<T>): Promise<T> {
  const locks = (navigator as Navigator & { locks?: LockManager }).locks;
  if (!locks) return fn();
  return locks.request(name, fn) as Promise<T>;
}

function accessValid(tokens: TokenResponse, marginMs = 30_000): boolean {
  const exp = tokenExpiry(tokens.access_token);
  return exp !== null && exp - Date.now() > marginMs;
}

/** `AuthApi` whose refresh is coordinated across tabs (one rotation of a refresh token, ever). */
class SharedAuthApi extends AuthApi {
  override refresh(refreshToken: string): Promise<TokenResponse> {
    return withLock("kintsugi.refresh", async () => {
      const stored = readStored();
      if (!stored) {
        throw new KintsugiError({ code: "session_revoked", message: "Signed out (in another tab?)." });
      }
      if (stored.refresh_token !== refreshToken) {
        // Another tab rotated it already: take its pair (or refresh with the newer token).
        if (accessValid(stored)) return stored;
        refreshToken = stored.refresh_token;
      }
      const fresh = await super.refresh(refreshToken);
      const tokens = { ...fresh, user: fresh.user ?? stored.user } as TokenResponse;
      writeStored(tokens);
      return tokens;
    });
  }
}

// The library calls `this.fetchImpl(...)`: a bare `fetch` invoked with another `this` throws
// "Illegal invocation" in browsers, so hand it a wrapper.
export const authApi = new SharedAuthApi(ORIGIN, { fetch: (input, init) => fetch(input, init) });

// --- state ----------------------------------------------------------------------------------------

export type AuthStatus = "restoring" | "signed-out" | "signed-in";

export interface AuthState {
  status: AuthStatus;
  user: User | null;
}

export interface ConnectionInfo {
  state: ConnectionState;
  /** How many times the server said the stream could not be replayed (`resync`): screens refetch. */
  resyncs: number;
  /** The last drop, for the banner ("reconnecting in 3 s"). */
  lastDisconnect: DisconnectInfo | null;
  /** The client stopped for good with this error (4409 too many tabs…); null while it runs. */
  stopped: KintsugiError | null;
  /** When the first `hello` of this session arrived (0 before). */
  connectedAt: number;
}

const authStore = createStore<AuthState>({ status: "restoring", user: null });
const meStore = createStore<Profile | null>(null);
const featuresStore = createStore<Record<string, string>>({});
const connectionStore = createStore<ConnectionInfo>({
  state: "idle",
  resyncs: 0,
  lastDisconnect: null,
  stopped: null,
  connectedAt: 0,
});

let session: AuthSession | null = null;
let client: KintsugiClient | null = null;
const clientStore = createStore<KintsugiClient | null>(null);
let teardown: (() => void) | null = null;

/** Listeners for "signed out because the server ended the login" (the shell shows a toast). */
const endedListeners = new Set<(error: KintsugiError | null) => void>();
export function onSessionEnded(fn: (error: KintsugiError | null) => void): () => void {
  endedListeners.add(fn);
  return () => endedListeners.delete(fn);
}

const AUTH_END_CODES = new Set(["session_revoked", "invalid_token", "unauthorized", "token_expired", "refresh_reused", "invalid_refresh_token"]);

function start(tokens: TokenResponse): void {
  stop();
  writeStored(tokens);
  session = new AuthSession(authApi, tokens, { onTokens: (fresh) => writeStored(fresh) });
  const c = new KintsugiClient({
    url: ORIGIN,
    token: tokens.access_token,
    getToken: session.getToken,
    outbox: { storage: new KeyValueOutboxStorage(localStorage, `kintsugi.outbox.${tokens.user?.id ?? "me"}`) },
  });
  client = c;
  const offs: Array<() => void> = [];
  offs.push(
    c.on("state", ({ state }) => connectionStore.set((info) => ({ ...info, state }))),
    c.on("connected", ({ hello }) => {
      featuresStore.set(hello.features ?? {});
      connectionStore.set((info) => ({ ...info, connectedAt: info.connectedAt || Date.now(), lastDisconnect: null }));
      // Own profile: fetched on every (re)connect, since profile.updated may have been missed.
      c.request("profile.get", {}).then(({ profile }) => meStore.set(profile), () => undefined);
    }),
    c.on("disconnected", (info) => connectionStore.set((prev) => ({ ...prev, lastDisconnect: info }))),
    c.on("resync", () => connectionStore.set((info) => ({ ...info, resyncs: info.resyncs + 1 }))),
    c.on("profile.updated", ({ profile }) => meStore.set(profile)),
    c.on("closed", ({ error }) => {
      if (client !== c) return;
      if (error && AUTH_END_CODES.has(String(error.code))) {
        endSession(error);
      } else {
        connectionStore.set((info) => ({ ...info, state: "closed", stopped: error }));
      }
    }),
  );
  teardown = () => offs.forEach((off) => off());
  connectionStore.set({ state: "idle", resyncs: 0, lastDisconnect: null, stopped: null, connectedAt: 0 });
  clientStore.set(c);
  authStore.set({ status: "signed-in", user: tokens.user ?? null });
  void c.connect();
}

function stop(): void {
  teardown?.();
  teardown = null;
  client?.close();
  client = null;
  session = null;
  clientStore.set(null);
  meStore.set(null);
  featuresStore.set({});
}

function endSession(error: KintsugiError | null): void {
  stop();
  writeStored(null);
  authStore.set({ status: "signed-out", user: null });
  for (const fn of endedListeners) fn(error);
}

/** Restore a stored login at start-up (called once by main.tsx). */
export function restoreSession(): void {
  const stored = readStored();
  if (!stored) {
    authStore.set({ status: "signed-out", user: null });
    return;
  }
  start(stored);
  // Another tab signing out (the pair removed) signs this one out too.
  window.addEventListener("storage", (event) => {
    if (event.key !== STORAGE_KEY) return;
    if (event.newValue === null && client) endSession(null);
    else if (event.newValue && !client) start(JSON.parse(event.newValue) as TokenResponse);
  });
}

export async function signIn(email: string, password: string): Promise<void> {
  start(await authApi.login({ email, password }));
}

export async function signUp(email: string, password: string, displayName: string): Promise<void> {
  start(await authApi.register({ email, password, display_name: displayName }));
}

/** Log out on the server (best effort), forget the tokens, close the socket. */
export async function signOut(): Promise<void> {
  const current = session;
  if (current) {
    try {
      await current.logout();
    } catch {
      /* offline or already revoked: forget it locally anyway */
    }
  }
  endSession(null);
}

/** Drop a stopped client (e.g. 4409 too many connections) and connect again. */
export function restartConnection(): void {
  const stored = readStored();
  if (stored) start(stored);
}

// --- hooks --------------------------------------------------------------------------------------

export function useAuth(): AuthState {
  return useStore(authStore);
}

/** The one client. Only call inside the signed-in shell (it throws when signed out). */
export function useClient(): KintsugiClient {
  const c = useStore(clientStore);
  if (!c) throw new Error("useClient() outside the signed-in shell");
  return c;
}

/** The client, or null when signed out (for components that render either way). */
export function useOptionalClient(): KintsugiClient | null {
  return useStore(clientStore);
}

/** The client outside components (null when signed out). */
export function getClient(): KintsugiClient | null {
  return client;
}

export function useMe(): Profile | null {
  return useStore(meStore);
}

export function setMe(profile: Profile): void {
  meStore.set(profile);
}

export function useFeatures(): Record<string, string> {
  return useStore(featuresStore);
}

export function useConnectionState(): ConnectionInfo {
  return useStore(connectionStore);
}

/**
 * Run `handler` for every `type` frame/event while the component is mounted. The latest handler is
 * always called (no stale closures), and it re-subscribes when the client changes (re-login).
 */
export function useEvent<K extends keyof ClientEvents>(type: K, handler: (payload: ClientEvents[K]) => void): void {
  const ref = useRef(handler);
  ref.current = handler;
  const c = useStore(clientStore);
  useEffect(() => {
    if (!c) return;
    return c.on(type, (payload) => ref.current(payload));
  }, [c, type]);
}

/**
 * Run `fn` now and again after every `resync` (the server could not replay what was missed: refetch
 * lists and open views). For non-durable state (usage, presence) use `useEvent("connected", …)` too.
 */
export function useOnResync(fn: () => void): void {
  const { resyncs } = useConnectionState();
  const ref = useRef(fn);
  ref.current = fn;
  useEffect(() => {
    ref.current();
  }, [resyncs]);
}

// --- REST with the token ----------------------------------------------------------------------------

async function currentToken(force = false): Promise<string> {
  if (!session) throw new KintsugiError({ code: "unauthorized", message: "Not signed in." });
  return force ? session.refresh() : session.getToken({ reason: "connect", current: null });
}

/**
 * `fetch(path)` on the server with `Authorization: Bearer <access token>`; the token is renewed
 * before it expires, and once more after a 401 `token_expired`/`invalid_token`. Returns the raw
 * `Response` (check `ok` yourself, or use `apiJson`).
 */
export async function apiFetch(path: string, init: RequestInit = {}): Promise<Response> {
  const attempt = async (force: boolean) => {
    const headers = new Headers(init.headers);
    headers.set("authorization", `Bearer ${await currentToken(force)}`);
    try {
      return await fetch(ORIGIN + path, { ...init, headers });
    } catch (error) {
      if ((error as Error)?.name === "AbortError") throw error;
      throw new KintsugiError({ code: "network_error", message: `${path}: ${String(error)}`, request: path });
    }
  };
  let response = await attempt(false);
  if (response.status === 401) {
    const code = await errorCodeOf(response.clone());
    if (code === "token_expired" || code === "invalid_token") response = await attempt(true);
  }
  return response;
}

async function errorCodeOf(response: Response): Promise<string | null> {
  try {
    return ((await response.json()) as { error?: { code?: string } }).error?.code ?? null;
  } catch {
    return null;
  }
}

/** A REST error body → `KintsugiError` (same shape as socket errors). */
export async function errorFromResponse(response: Response, path: string): Promise<KintsugiError> {
  let body: { error?: { code?: string; message?: string; details?: Record<string, unknown>; fields?: Record<string, string>; retry_after_ms?: number } } | null = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  const error = body?.error;
  const retryAfter = response.headers.get("retry-after");
  return new KintsugiError({
    code: error?.code ?? `http_${response.status}`,
    message: error?.message ?? `${path} answered ${response.status}`,
    details: error?.details ?? null,
    fields: error?.fields ?? null,
    retryAfterMs: error?.retry_after_ms ?? (retryAfter ? Number(retryAfter) * 1000 : null),
    request: path,
    status: response.status,
  });
}

/** JSON REST call with the token: the parsed body, or a thrown `KintsugiError`. */
export async function apiJson<T>(method: string, path: string, body?: unknown, init: RequestInit = {}): Promise<T> {
  const headers = new Headers(init.headers);
  headers.set("accept", "application/json");
  if (body !== undefined) headers.set("content-type", "application/json");
  const response = await apiFetch(path, {
    ...init,
    method,
    headers,
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  if (!response.ok) throw await errorFromResponse(response, path);
  const text = await response.text();
  return (text ? JSON.parse(text) : null) as T;
}

/** JSON REST call without a token (public routes such as GET /api/billing/plans). */
export async function publicJson<T>(path: string): Promise<T> {
  let response: Response;
  try {
    response = await fetch(ORIGIN + path, { headers: { accept: "application/json" } });
  } catch (error) {
    throw new KintsugiError({ code: "network_error", message: `${path}: ${String(error)}`, request: path });
  }
  if (!response.ok) throw await errorFromResponse(response, path);
  return (await response.json()) as T;
}

// --- media upload -----------------------------------------------------------------------------------

/** What `POST /api/media` answers (docs/media.md). */
export interface UploadedMedia {
  id: string;
  kind: "file" | "image" | "voice";
  content_type: string;
  size: number;
  sha256: string;
  created_at: string;
  filename?: string;
  width?: number;
  height?: number;
  duration_ms?: number;
}

export interface UploadOptions {
  /** `file` (default), `image` (JPEG/PNG/GIF/WebP only) or `voice` (audio). */
  kind?: "file" | "image" | "voice";
  /** Length of a voice message when the container does not say (1 – 3,600,000 ms). */
  durationMs?: number;
  /** File name to send (defaults to the File's name). */
  filename?: string;
  /** Upload progress, 0..1. */
  onProgress?: (fraction: number) => void;
  signal?: AbortSignal;
}

/**
 * Upload a file to `POST /api/media` (multipart; the fields go before the `file` part, so the server
 * checks them before storing). Resolves with the stored media (use `id` in `message.send`
 * attachments or `profile.update`'s `avatar_media_id`); rejects with a `KintsugiError`
 * (`payload_too_large` with `details.max_bytes`, `unsupported_media_type`, `validation_failed`…).
 * Uses XMLHttpRequest for upload progress; retried once with a fresh token after a 401.
 */
export async function uploadMedia(file: Blob, options: UploadOptions = {}): Promise<UploadedMedia> {
  const send = (token: string) =>
    new Promise<{ status: number; text: string; retryAfter: string | null }>((resolve, reject) => {
      const form = new FormData();
      if (options.kind) form.append("kind", options.kind);
      if (options.durationMs != null) form.append("duration_ms", String(Math.round(options.durationMs)));
      const name = options.filename ?? (file instanceof File ? file.name : "upload");
      form.append("file", file, name);
      const xhr = new XMLHttpRequest();
      xhr.open("POST", `${ORIGIN}/api/media`);
      xhr.setRequestHeader("authorization", `Bearer ${token}`);
      xhr.setRequestHeader("accept", "application/json");
      xhr.upload.onprogress = (event) => {
        if (event.lengthComputable) options.onProgress?.(event.loaded / event.total);
      };
      xhr.onload = () => resolve({ status: xhr.status, text: xhr.responseText, retryAfter: xhr.getResponseHeader("retry-after") });
      xhr.onerror = () => reject(new KintsugiError({ code: "network_error", message: "Upload failed: network error.", request: "/api/media" }));
      xhr.onabort = () => reject(new DOMException("Upload aborted", "AbortError"));
      options.signal?.addEventListener("abort", () => xhr.abort(), { once: true });
      xhr.send(form);
    });
  let result = await send(await currentToken());
  if (result.status === 401) result = await send(await currentToken(true));
  if (result.status >= 200 && result.status < 300) {
    options.onProgress?.(1);
    return JSON.parse(result.text) as UploadedMedia;
  }
  const headers = new Headers(result.retryAfter ? { "retry-after": result.retryAfter } : {});
  throw await errorFromResponse(new Response(result.text || null, { status: result.status, headers }), "/api/media");
}

export { isKintsugiError, KintsugiError };
