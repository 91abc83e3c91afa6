/** Typed errors → what to tell people. `describeError(e)` for toasts and inline messages. */
import { isKintsugiError } from "@kintsugi/rt-client";
import { formatDuration, formatNumber } from "./format";

const MESSAGES: Record<string, string> = {
  disconnected: "The connection dropped before the server answered. Try again.",
  timeout: "The server took too long to answer. Try again.",
  closed: "The connection is closed. Reload the page.",
  network_error: "Network error: you may be offline.",
  frame_too_large: "That is too large to send.",
  unauthorized: "Please log in again.",
  invalid_token: "Your session is not valid any more. Please log in again.",
  token_expired: "Your session expired. Please log in again.",
  session_revoked: "You were signed out.",
  invalid_credentials: "Wrong email or password.",
  email_taken: "An account with this email already exists.",
  rate_limited: "Too many requests. Slow down a little.",
  not_found: "Not found (or not yours).",
  forbidden: "That is not allowed.",
  internal_error: "Something failed on the server.",
  unavailable: "The service is temporarily unavailable. Try again shortly.",
  too_many_connections: "Too many open tabs or devices. Close one and reconnect.",
  tier_required: "Your plan does not include this.",
  provider_unavailable: "AI chat is not configured on this server.",
  unknown_model: "That model is not available.",
  generation_in_progress: "An answer is still streaming in this chat: stop it or wait.",
  context_too_long: "That message is longer than the model can read.",
  content_too_long: "That message is too long.",
  provider_rate_limited: "The AI provider is busy. Try again in a moment.",
  provider_error: "The AI provider failed.",
  provider_unreachable: "The AI provider could not be reached.",
  provider_rejected: "The AI provider refused the request.",
  server_shutdown: "The server restarted mid-answer; the text so far is kept.",
  text_too_long: "That message is too long.",
  handle_taken: "That handle is taken.",
  payload_too_large: "That file is too large for your plan.",
  unsupported_media_type: "That file type is not supported.",
  validation_failed: "Some fields are not valid.",
  billing_disabled: "Billing is not enabled on this server.",
  billing_provider_error: "The payment provider failed. Try again.",
  already_subscribed: "You already have a subscription: manage it in the billing portal.",
  no_customer: "No billing account yet: subscribe to a plan first.",
};

export function describeError(error: unknown): { title: string; message: string; code: string | null } {
  if (isKintsugiError(error)) {
    const code = String(error.code);
    let message = MESSAGES[code] ?? error.message ?? "Something went wrong.";
    const d = error.details ?? {};
    if (code === "token_limit_exceeded") {
      const reset = typeof d.reset_at === "string" ? Date.parse(d.reset_at) - Date.now() : NaN;
      message = `Token limit reached (${formatNumber(Number(d.used ?? 0))} of ${formatNumber(Number(d.limit ?? 0))}).${Number.isFinite(reset) ? ` Resets in ${formatDuration(reset)}.` : ""}`;
    } else if (code === "tier_required" && d.tier) {
      message = `This needs the ${tierLabel(String(d.tier))} plan.`;
    } else if (code === "payload_too_large" && d.max_bytes) {
      message = `That file is larger than your plan allows (${formatBytes(Number(d.max_bytes))}).`;
    } else if (code === "validation_failed" && error.fields) {
      message = Object.entries(error.fields)
        .map(([field, why]) => `${field}: ${why}`)
        .join(" ");
    } else if ((code === "rate_limited" || code === "unavailable") && error.retryAfterMs) {
      message += ` (retry in ${Math.ceil(error.retryAfterMs / 1000)} s)`;
    }
    return { title: code.replace(/_/g, " "), message, code };
  }
  if (error instanceof Error) return { title: "Error", message: error.message, code: null };
  return { title: "Error", message: String(error), code: null };
}

export function tierLabel(tier: string): string {
  return tier.replace(/_/g, " ").toUpperCase();
}

export function formatBytes(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(0)} KB`;
  return `${(bytes / 1024 / 1024).toFixed(bytes < 10 * 1024 * 1024 ? 1 : 0)} MB`;
}
