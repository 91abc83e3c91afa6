import type { ServerErrorCode } from "./generated/protocol.js";

export type { ServerErrorCode };

/** Errors the client raises itself. */
export type ClientErrorCode =
  /** The socket dropped while the request was in flight: it may or may not have been applied. */
  | "disconnected"
  /** No reply within the request's timeout: it may or may not have been applied. */
  | "timeout"
  /** The client was closed (`close()`, 4409, or no token could be had). */
  | "closed"
  /** The encoded frame is larger than the server accepts (`maxFrameBytes`); it was not sent. */
  | "frame_too_large"
  /** A REST call failed at the network level (no HTTP response). */
  | "network_error";

/** Any error code; unknown codes from newer servers are kept as they are. */
export type ErrorCode = ServerErrorCode | ClientErrorCode | (string & {});

/** Codes after which sending the same request again may succeed. */
const RETRYABLE: ReadonlySet<string> = new Set([
  "unavailable",
  "rate_limited",
  "disconnected",
  "timeout",
  "network_error",
]);

export interface KintsugiErrorInit {
  code: ErrorCode;
  message: string;
  details?: Record<string, unknown> | null;
  /** Field path → what is wrong with it (validation errors). */
  fields?: Record<string, string> | null;
  retryAfterMs?: number | null;
  /** The request's `type` (socket) or path (REST), when the error answers one. */
  request?: string;
  /** HTTP status of a REST error. */
  status?: number;
}

/** A typed error: a server `error` reply, a REST error body, or one of the client's own codes. */
export class KintsugiError extends Error {
  override readonly name = "KintsugiError";
  readonly code: ErrorCode;
  readonly details: Record<string, unknown> | null;
  readonly fields: Record<string, string> | null;
  readonly retryAfterMs: number | null;
  readonly request: string | undefined;
  readonly status: number | undefined;

  constructor(init: KintsugiErrorInit) {
    super(init.message);
    this.code = init.code;
    this.details = init.details ?? null;
    this.fields = init.fields ?? null;
    this.retryAfterMs = init.retryAfterMs ?? null;
    this.request = init.request;
    this.status = init.status;
  }

  /** Whether the same request may succeed if sent again (after `retryAfterMs` when set). */
  get retryable(): boolean {
    return RETRYABLE.has(this.code) || (this.status !== undefined && this.status >= 500);
  }

  /** From an `error` frame. */
  static fromFrame(
    frame: {
      code: string;
      message: string;
      details?: Record<string, unknown> | null;
      fields?: Record<string, string> | null;
      retry_after_ms?: number | null;
    },
    request?: string,
  ): KintsugiError {
    return new KintsugiError({
      code: frame.code,
      message: frame.message,
      details: frame.details ?? null,
      fields: frame.fields ?? null,
      retryAfterMs: frame.retry_after_ms ?? null,
      ...(request !== undefined ? { request } : {}),
    });
  }
}

export function isKintsugiError(value: unknown, code?: ErrorCode): value is KintsugiError {
  return value instanceof KintsugiError && (code === undefined || value.code === code);
}
