/**
 * Answers being streamed, for every chat of the user, from the socket's chat.* events — wired once
 * per client (from the moment the chat screen first loads), so an answer started by this tab,
 * another tab or another device is followed from its first delta. Also the chat list and the model
 * catalogue, shared by the list pane and the thread.
 */
import type { ChatInfo, KintsugiClient, MessageInfo, ModelInfo, Usage } from "@kintsugi/rt-client";
import { createStore } from "../../lib/store";

export interface StreamEntry {
  chatId: string;
  messageId: string;
  parentId: string | null;
  /** The text so far (valid when `lastIndex` is not null). */
  text: string;
  /** The last delta index applied; null when we joined mid-answer without a snapshot (text unknown). */
  lastIndex: number | null;
  status: "streaming" | "complete" | "stopped" | "error";
  usage?: Usage;
  finishReason?: string;
  errorCode?: string;
  errorMessage?: string;
  userMessage?: MessageInfo | null;
  startedAt: number;
}

export const streams = createStore<ReadonlyMap<string, StreamEntry>>(new Map());

/** Per-answer token usage (chat.done), kept across reloads (the history API has none per message). */
const USAGE_KEY = "kintsugi.chat.usage";
function loadUsage(): Record<string, [number, number, string]> {
  try {
    return JSON.parse(localStorage.getItem(USAGE_KEY) ?? "{}") as Record<string, [number, number, string]>;
  } catch {
    return {};
  }
}
let usageCache = loadUsage();
export function answerUsage(messageId: string): Usage | null {
  const row = usageCache[messageId];
  return row ? { prompt_tokens: row[0], completion_tokens: row[1], source: row[2] as Usage["source"] } : null;
}
function saveUsage(messageId: string, usage: Usage): void {
  usageCache[messageId] = [usage.prompt_tokens, usage.completion_tokens, usage.source];
  const keys = Object.keys(usageCache);
  if (keys.length > 500) for (const key of keys.slice(0, keys.length - 500)) delete usageCache[key];
  try {
    localStorage.setItem(USAGE_KEY, JSON.stringify(usageCache));
  } catch {
    usageCache = { ...usageCache };
  }
}

function update(messageId: string, fn: (entry: StreamEntry | undefined) => StreamEntry | undefined): void {
  const map = new Map(streams.get());
  const next = fn(map.get(messageId));
  if (next) map.set(messageId, next);
  else map.delete(messageId);
  streams.set(map);
}

// --- the chat list -----------------------------------------------------------------------------------

export interface ChatListState {
  chats: ChatInfo[];
  nextCursor: string | null;
  loaded: boolean;
  loading: boolean;
}

export const chatList = createStore<ChatListState>({ chats: [], nextCursor: null, loaded: false, loading: false });

function sortChats(chats: ChatInfo[]): ChatInfo[] {
  return [...chats].sort((a, b) => (a.updated_at < b.updated_at ? 1 : a.updated_at > b.updated_at ? -1 : 0));
}

export function upsertChat(chat: ChatInfo): void {
  chatList.set((state) => ({ ...state, chats: sortChats([chat, ...state.chats.filter((c) => c.id !== chat.id)]) }));
}

export async function loadChats(client: KintsugiClient, more = false): Promise<void> {
  const state = chatList.get();
  if (state.loading) return;
  chatList.set({ ...state, loading: true });
  try {
    const { chats, next_cursor } = await client.request("chat.list", { before: more ? state.nextCursor : null, limit: 30 });
    chatList.set((s) => ({
      chats: more ? sortChats([...s.chats, ...chats.filter((c) => !s.chats.some((x) => x.id === c.id))]) : chats,
      nextCursor: next_cursor,
      loaded: true,
      loading: false,
    }));
  } catch (error) {
    chatList.set((s) => ({ ...s, loading: false }));
    throw error;
  }
}

// --- models --------------------------------------------------------------------------------------------

export interface ModelsState {
  models: ModelInfo[];
  defaultModel: string | null;
  provider: string;
  loaded: boolean;
}

export const models = createStore<ModelsState>({ models: [], defaultModel: null, provider: "", loaded: false });

export async function loadModels(client: KintsugiClient): Promise<void> {
  const reply = await client.request("chat.models", {});
  models.set({ models: reply.models, defaultModel: reply.default, provider: reply.provider, loaded: true });
}

/** The model picked for new chats (remembered). */
export const newChatModel = createStore<string | null>(localStorage.getItem("kintsugi.chat.model"));
newChatModel.subscribe((value) => {
  if (value) localStorage.setItem("kintsugi.chat.model", value);
});

// --- wiring ----------------------------------------------------------------------------------------------

const wired = new WeakSet<KintsugiClient>();

export function wireChat(client: KintsugiClient): void {
  if (wired.has(client)) return;
  wired.add(client);
  client.on("chat.started", (e) => {
    update(e.message_id, () => ({
      chatId: e.chat_id,
      messageId: e.message_id,
      parentId: e.parent_id,
      text: "",
      lastIndex: -1,
      status: "streaming",
      userMessage: e.user_message ?? null,
      startedAt: Date.now(),
    }));
  });
  client.on("chat.delta", (e) => {
    update(e.message_id, (entry) => {
      if (!entry) {
        // Joined mid-answer without its start: the text so far is unknown until a snapshot or done.
        return { chatId: e.chat_id, messageId: e.message_id, parentId: null, text: "", lastIndex: null, status: "streaming", startedAt: Date.now() };
      }
      if (entry.lastIndex === null || e.index <= entry.lastIndex || entry.status !== "streaming") return entry;
      return { ...entry, text: entry.text + e.text, lastIndex: e.index };
    });
  });
  client.on("chat.snapshot", (e) => {
    update(e.message_id, (entry) => {
      if (entry && entry.lastIndex !== null && e.index <= entry.lastIndex) return entry;
      return {
        ...(entry ?? { chatId: e.chat_id, messageId: e.message_id, parentId: null, status: "streaming" as const, startedAt: Date.now() }),
        text: e.text,
        lastIndex: e.index,
      };
    });
  });
  client.on("chat.done", (e) => {
    saveUsage(e.message_id, e.usage);
    update(e.message_id, (entry) => ({
      ...(entry ?? { chatId: e.chat_id, messageId: e.message_id, parentId: null, startedAt: Date.now() }),
      text: e.content,
      lastIndex: entry?.lastIndex ?? 0,
      status: e.finish_reason === "stopped" ? "stopped" : "complete",
      finishReason: e.finish_reason,
      usage: e.usage,
    }));
  });
  client.on("chat.error", (e) => {
    update(e.message_id, (entry) => ({
      ...(entry ?? { chatId: e.chat_id, messageId: e.message_id, parentId: null, startedAt: Date.now() }),
      text: e.content,
      lastIndex: entry?.lastIndex ?? 0,
      status: "error",
      errorCode: e.code,
      errorMessage: e.message,
    }));
  });
  client.on("chat.created", ({ chat }) => upsertChat(chat));
  client.on("chat.updated", ({ chat }) => upsertChat(chat));
  client.on("chat.deleted", ({ chat_id }) => chatList.set((s) => ({ ...s, chats: s.chats.filter((c) => c.id !== chat_id) })));
  client.on("subscription.updated", () => void loadModels(client).catch(() => undefined));
  client.on("connected", () => void loadModels(client).catch(() => undefined));
}
