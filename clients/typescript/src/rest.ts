/**
 * The auth REST API (docs/auth.md): register, login, refresh, logout, me, over `fetch`; and
 * `AuthSession`, which holds a token pair and is the socket client's `getToken` (one refresh at a
 * time: the server treats two concurrent refreshes with one token as theft and revokes the login).
 */
import type { GetToken, TokenRequest } from "./client.js";
import { KintsugiError } from "./errors.js";
import { tokenExpiry } from "./token.js";

export interface User {
  id: string;
  email: string;
  display_name: string;
  tier: string;
  created_at: string;
  [key: string]: unknown;
}

/** What register, login and refresh answer. */
export interface TokenResponse {
  user?: User;
  access_token: string;
  refresh_token: string;
  /** Seconds. */
  expires_in: number;
  refresh_expires_in: number;
  token_type: "Bearer";
}

type FetchLike = (input: string, init?: { method?: string; headers?: Record<string, string>; body?: string }) => Promise<{
  status: number;
  ok: boolean;
  headers: { get(name: string): string | null };
  text(): Promise<string>;
}>;

export interface AuthApiOptions {
  /** `fetch` (default: the global one). */
  fetch?: FetchLike;
}

export class AuthApi {
  readonly baseUrl: string;
  private readonly fetchImpl: FetchLike;

  /** `baseUrl`: the server's HTTP origin, e.g. `https://api.example.com`. */
  constructor(baseUrl: string, options: AuthApiOptions = {}) {
    this.baseUrl = baseUrl.replace(/\/+$/, "");
    const impl = options.fetch ?? (globalThis as { fetch?: FetchLike }).fetch;
    if (!impl) throw new TypeError("No fetch: pass the `fetch` option.");
    // Called as a plain function: a browser's fetch invoked as a method of another object (this
    // instance) throws "Illegal invocation".
    this.fetchImpl = (input, init) => impl(input, init);
  }

  register(body: { email: string; password: string; display_name: string }): Promise<TokenResponse> {
    return this.call("POST", "/api/auth/register", body);
  }

  login(body: { email: string; password: string }): Promise<TokenResponse> {
    return this.call("POST", "/api/auth/login", body);
  }

  refresh(refreshToken: string): Promise<TokenResponse> {
    return this.call("POST", "/api/auth/refresh", { refresh_token: refreshToken });
  }

  async logout(accessToken: string): Promise<void> {
    await this.call("POST", "/api/auth/logout", undefined, accessToken);
  }

  me(accessToken: string): Promise<User> {
    return this.call("GET", "/api/auth/me", undefined, accessToken);
  }

  /** One JSON call; errors become `KintsugiError` with the body's code (and `status`, `retryAfterMs`). */
  async call<T>(method: string, path: string, body?: unknown, accessToken?: string): Promise<T> {
    const headers: Record<string, string> = { accept: "application/json" };
    if (body !== undefined) headers["content-type"] = "application/json";
    if (accessToken) headers.authorization = `Bearer ${accessToken}`;
    let response: Awaited<ReturnType<FetchLike>>;
    try {
      response = await this.fetchImpl(this.baseUrl + path, {
        method,
        headers,
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
      });
    } catch (error) {
      throw new KintsugiError({ code: "network_error", message: `${method} ${path}: ${String(error)}`, request: path });
    }
    const text = await response.text();
    let data: unknown = null;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch {
        data = null;
      }
    }
    if (!response.ok) {
      const error = (data as { error?: { code?: string; message?: string; fields?: unknown; retry_after_ms?: number } } | null)?.error;
      const retryAfter = response.headers.get("retry-after");
      throw new KintsugiError({
        code: error?.code ?? `http_${response.status}`,
        message: error?.message ?? `${method} ${path} answered ${response.status}`,
        details: (error as { details?: Record<string, unknown> } | undefined)?.details ?? null,
        fields: (error?.fields as Record<string, string> | undefined) ?? null,
        retryAfterMs: error?.retry_after_ms ?? (retryAfter ? Number(retryAfter) * 1000 : null),
        request: path,
        status: response.status,
      });
    }
    return data as T;
  }
}

export interface AuthSessionOptions {
  /** Called with every new pair (to persist the refresh token). */
  onTokens?: (tokens: TokenResponse) => void;
  /** Refresh when the access token has less than this left (default 30 s). */
  minValidityMs?: number;
}

/** A login: the current token pair, refreshed one call at a time. Pass `session.getToken` to the client. */
export class AuthSession {
  private tokens: TokenResponse;
  private accessExpiresAt: number;
  private refreshing: Promise<string> | null = null;

  constructor(
    readonly api: AuthApi,
    tokens: TokenResponse,
    private readonly options: AuthSessionOptions = {},
  ) {
    this.tokens = tokens;
    this.accessExpiresAt = expiryOf(tokens);
  }

  get accessToken(): string {
    return this.tokens.access_token;
  }

  get refreshToken(): string {
    return this.tokens.refresh_token;
  }

  get user(): User | undefined {
    return this.tokens.user;
  }

  /**
   * A token for the socket client. For renewal or after a 4401 a fresh one is fetched — unless the
   * session already holds a newer token than the client's (another caller refreshed it).
   */
  getToken: GetToken = async (request?: TokenRequest): Promise<string> => {
    const fresh = this.accessExpiresAt - Date.now() > (this.options.minValidityMs ?? 30_000);
    const newerThanClients = request?.current != null && request.current !== this.tokens.access_token;
    if (fresh && (!request || request.reason === "connect" || newerThanClients)) return this.tokens.access_token;
    return this.refresh();
  };

  /** Refresh now (concurrent callers share the one call). */
  refresh(): Promise<string> {
    if (!this.refreshing) {
      this.refreshing = this.api
        .refresh(this.tokens.refresh_token)
        .then((tokens) => {
          this.tokens = { ...tokens, user: tokens.user ?? this.tokens.user } as TokenResponse;
          this.accessExpiresAt = expiryOf(tokens);
          this.options.onTokens?.(this.tokens);
          return tokens.access_token;
        })
        .finally(() => {
          this.refreshing = null;
        });
    }
    return this.refreshing;
  }

  logout(): Promise<void> {
    return this.api.logout(this.tokens.access_token);
  }
}

function expiryOf(tokens: TokenResponse): number {
  return tokenExpiry(tokens.access_token) ?? Date.now() + tokens.expires_in * 1000;
}
