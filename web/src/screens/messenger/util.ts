/** Small helpers of the messenger screens: selectors, names, previews, gestures. */
import type { CallEntry, Conversation, Message } from "@kintsugi/rt-client";
import { useEffect, useReducer, useRef, useState } from "preact/hooks";
import type { Store } from "../../lib/store";
import { formatDuration } from "../../lib/format";

/**
 * Read part of a store; re-renders only when the selected value changes (by identity). The
 * selector may use props: it runs on every render too.
 */
export function useSelect<T, R>(store: Store<T>, select: (state: T) => R): R {
  const [, force] = useReducer((n: number) => n + 1, 0);
  const selectRef = useRef(select);
  selectRef.current = select;
  const value = select(store.get());
  const valueRef = useRef(value);
  valueRef.current = value;
  useEffect(
    () =>
      store.subscribe((state) => {
        if (!Object.is(selectRef.current(state), valueRef.current)) force(0);
      }),
    [store],
  );
  return value;
}

/** Whether a media query matches (updates on change). */
export function useMedia(query: string): boolean {
  const [matches, setMatches] = useState(() => typeof matchMedia !== "undefined" && matchMedia(query).matches);
  useEffect(() => {
    const mql = matchMedia(query);
    const on = () => setMatches(mql.matches);
    on();
    mql.addEventListener("change", on);
    return () => mql.removeEventListener("change", on);
  }, [query]);
  return matches;
}

export function conversationTitle(conv: Conversation | undefined | null, me: string | null): string {
  if (!conv) return "Conversation";
  if (conv.kind === "group") {
    if (conv.title) return conv.title;
    const names = conv.members.filter((m) => m.user_id !== me).map((m) => m.display_name);
    return names.slice(0, 3).join(", ") + (names.length > 3 ? ` +${names.length - 3}` : "") || "Group";
  }
  const other = conv.members.find((m) => m.user_id !== me) ?? conv.members[0];
  return other?.display_name ?? "Direct chat";
}

/** The other member of a direct conversation. */
export function otherMember(conv: Conversation | undefined | null, me: string | null) {
  if (!conv || conv.kind !== "direct") return null;
  return conv.members.find((m) => m.user_id !== me) ?? null;
}

export function memberName(conv: Conversation | undefined | null, userId: string | null | undefined): string {
  if (!userId) return "Someone";
  return conv?.members.find((m) => m.user_id === userId)?.display_name ?? "Someone";
}

export function callText(call: CallEntry, mine: boolean): string {
  const media = call.media === "video" ? "video call" : "audio call";
  switch (call.outcome) {
    case "completed":
      return `${mine ? "Outgoing" : "Incoming"} ${media}${call.duration_s != null ? ` · ${formatCallDuration(call.duration_s)}` : ""}`;
    case "missed":
      return mine ? `Unanswered ${media}` : `Missed ${media}`;
    case "declined":
      return `Declined ${media}`;
    case "busy":
      return `Busy · ${media}`;
    case "cancelled":
      return `Cancelled ${media}`;
    case "failed":
      return `Failed ${media}`;
    default:
      return media;
  }
}

export function formatCallDuration(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = String(s % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${sec}` : `${m}:${sec}`;
}

/** One line of a message for lists and reply quotes. */
export function previewText(message: Message | null | undefined, me: string | null, conv?: Conversation | null): string {
  if (!message) return "No messages yet";
  if (message.deleted) return "Message deleted";
  if (message.call) return `☎ ${callText(message.call, message.sender_id === me)}`;
  const prefix = conv?.kind === "group" && message.sender_id ? `${message.sender_id === me ? "You" : memberName(conv, message.sender_id)}: ` : message.sender_id === me ? "You: " : "";
  if (message.text) return prefix + message.text.replace(/\s+/g, " ").slice(0, 140);
  const a = message.attachments?.[0];
  if (a) return prefix + attachmentLabel(a.kind, a.content_type);
  return `${prefix}Attachment`;
}

export function attachmentLabel(kind: string, contentType: string): string {
  if (kind === "voice") return "🎤 Voice message";
  if (kind === "image" || contentType.startsWith("image/")) return "📷 Photo";
  if (contentType.startsWith("video/")) return "🎬 Video";
  if (contentType.startsWith("audio/")) return "🎵 Audio";
  return "📎 File";
}

export function shortTime(iso: string): string {
  return new Date(iso).toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" });
}

export function dayLabel(iso: string): string {
  const d = new Date(iso);
  const now = new Date();
  if (d.toDateString() === now.toDateString()) return "Today";
  const y = new Date(now);
  y.setDate(now.getDate() - 1);
  if (d.toDateString() === y.toDateString()) return "Yesterday";
  return d.toLocaleDateString(undefined, { weekday: "short", month: "short", day: "numeric", ...(d.getFullYear() !== now.getFullYear() ? { year: "numeric" } : {}) });
}

export function listTime(iso: string | undefined): string {
  if (!iso) return "";
  const d = new Date(iso);
  const now = new Date();
  if (d.toDateString() === now.toDateString()) return shortTime(iso);
  if (now.getTime() - d.getTime() < 6 * 864e5) return d.toLocaleDateString(undefined, { weekday: "short" });
  return d.toLocaleDateString(undefined, { month: "short", day: "numeric" });
}

export { formatDuration };

export const REACTIONS = ["👍", "❤️", "😂", "😮", "😢", "🔥"];

export function prefersReducedMotion(): boolean {
  return typeof matchMedia !== "undefined" && matchMedia("(prefers-reduced-motion: reduce)").matches;
}

/** Pick the upload kind of a file the user chose. */
export function uploadKind(file: File): "image" | "file" {
  return /^image\/(jpeg|png|gif|webp)$/.test(file.type) ? "image" : "file";
}
