/**
 * The messenger's state for one client: conversations (with unread counts and last messages),
 * the loaded part of each conversation's timeline, the outbox's pending messages, presence and
 * typing. One instance per `KintsugiClient` (see `messengerFor`), created on first use and kept
 * for the session, so switching screens keeps what was loaded and events keep applying.
 *
 * Every server change is applied by id (messages by `id`, pending ones by `client_msg_id`), so a
 * frame seen twice (a reply and its `message.new`) is harmless.
 */
import {
  newClientMsgId,
  type Attachment,
  type Conversation,
  type KintsugiClient,
  type Message,
  type OutboxEntry,
} from "@kintsugi/rt-client";
import { uploadMedia } from "../../lib/session";
import { createStore, type Store } from "../../lib/store";

export type PresenceStatus = "online" | "offline" | "unknown";

export interface Thread {
  /** Loaded messages, ascending by seq. */
  messages: Message[];
  /** Older messages exist before the first loaded one. */
  hasMore: boolean;
  loading: boolean;
  /** The first page arrived. */
  loaded: boolean;
  error: string | null;
}

export interface LocalAttachment {
  name: string;
  kind: "image" | "voice" | "file" | "video";
  contentType: string;
  size: number;
  /** An object URL for a preview while the message is pending. */
  previewUrl: string | null;
  durationMs?: number;
}

export type PendingState = "uploading" | "sending" | "waiting" | "retrying" | "failed";

export interface PendingMessage {
  client_msg_id: string;
  conversation_id: string;
  text: string | null;
  reply_to: string | null;
  attachments: LocalAttachment[];
  /** The files not uploaded yet (kept for a retry after a failed upload). */
  files: { blob: Blob; kind: "image" | "voice" | "file"; name: string; durationMs?: number }[];
  /** Ids of the files already uploaded. */
  mediaIds: string[];
  state: PendingState;
  error: string | null;
  queuedAt: number;
  progress: number;
}

export interface MessengerState {
  conversations: Record<string, Conversation>;
  listLoaded: boolean;
  listError: string | null;
  threads: Record<string, Thread>;
  pending: Record<string, PendingMessage[]>;
  presence: Record<string, PresenceStatus>;
  /** conversation id → user id → expiry (ms since epoch). */
  typing: Record<string, Record<string, number>>;
}

const EMPTY_THREAD: Thread = { messages: [], hasMore: true, loading: false, loaded: false, error: null };
const PAGE = 40;

export interface Draft {
  text: string;
  replyTo: string | null;
  files: { blob: Blob; kind: "image" | "voice" | "file"; name: string; durationMs?: number }[];
}

export class Messenger {
  readonly store: Store<MessengerState>;
  /** The conversation on screen (its new messages are read at once while the page is visible). */
  visible: string | null = null;
  private readonly offs: Array<() => void> = [];
  private typingTimer: ReturnType<typeof setTimeout> | null = null;
  private lastTypingSent = new Map<string, number>();
  private readSent = new Map<string, number>();
  private fetching = new Set<string>();
  private listPromise: Promise<void> | null = null;

  constructor(readonly client: KintsugiClient) {
    this.store = createStore<MessengerState>({
      conversations: {},
      listLoaded: false,
      listError: null,
      threads: {},
      pending: {},
      presence: {},
      typing: {},
    });
    const c = client;
    this.offs.push(
      c.on("message.new", ({ message }) => this.applyMessage(message, true)),
      c.on("message.updated", ({ message }) => this.applyMessage(message, false)),
      c.on("message.read", (receipt) => this.applyRead(receipt.conversation_id, receipt.user_id, receipt.seq)),
      c.on("conversation.updated", ({ conversation }) => this.applyConversation(conversation, true)),
      c.on("conversation.removed", ({ conversation_id }) => this.removeConversation(conversation_id)),
      c.on("typing", (event) => this.applyTyping(event.conversation_id, event.user_id, event.expires_in_ms)),
      c.on("presence", ({ user_id, status }) => this.setPresence({ [user_id]: status })),
      c.on("connected", () => {
        // Presence is not replayed: ask again on every (re)connect.
        if (this.store.get().listLoaded) void this.watchPresence(Object.values(this.store.get().conversations), true);
      }),
      c.on("resync", () => void this.resync()),
      c.on("outbox", (event) => {
        const id = event.entry.client_msg_id;
        if (event.kind === "retrying") this.patchPending(event.entry.conversation_id, id, { state: "retrying", error: event.error.message });
        else if (event.kind === "queued") this.patchPending(event.entry.conversation_id, id, { state: c.state === "open" ? "sending" : "waiting" });
      }),
      c.on("state", ({ state }) => {
        // Pending messages say whether they wait for the network or are on their way.
        const waiting = state !== "open";
        this.store.set((s) => {
          let changed = false;
          const pending: Record<string, PendingMessage[]> = {};
          for (const [cid, list] of Object.entries(s.pending)) {
            pending[cid] = list.map((p) => {
              if (p.state === "sending" && waiting) return (changed = true), { ...p, state: "waiting" as const };
              if ((p.state === "waiting" || p.state === "retrying") && !waiting) return (changed = true), { ...p, state: "sending" as const };
              return p;
            });
          }
          return changed ? { ...s, pending } : s;
        });
      }),
    );
    this.restoreOutbox();
  }

  dispose(): void {
    this.offs.forEach((off) => off());
    if (this.typingTimer) clearTimeout(this.typingTimer);
  }

  get me(): string | null {
    return this.client.hello?.user_id ?? null;
  }

  // --- conversations --------------------------------------------------------------------------

  /** Load the conversation list (once; again with `force`). */
  loadList(force = false): Promise<void> {
    if (this.listPromise && !force) return this.listPromise;
    this.listPromise = (async () => {
      try {
        const { conversations } = await this.client.request("conversation.list", {}, { retry: true });
        this.store.set((s) => {
          const map: Record<string, Conversation> = {};
          for (const conv of conversations) map[conv.id] = conv;
          return { ...s, conversations: map, listLoaded: true, listError: null };
        });
        void this.watchPresence(conversations, force);
      } catch (error) {
        this.listPromise = null;
        this.store.set((s) => ({ ...s, listError: messageOf(error) }));
      }
    })();
    return this.listPromise;
  }

  /** A conversation that is not in the list yet (a link, a new one). */
  async fetchConversation(id: string): Promise<Conversation | null> {
    const known = this.store.get().conversations[id];
    if (known) return known;
    if (this.fetching.has(id)) return null;
    this.fetching.add(id);
    try {
      const { conversation } = await this.client.request("conversation.get", { conversation_id: id });
      this.applyConversation(conversation, false);
      return conversation;
    } catch {
      return null;
    } finally {
      this.fetching.delete(id);
    }
  }

  async createDirect(userId: string): Promise<Conversation> {
    const { conversation } = await this.client.request("conversation.create", { kind: "direct", user_ids: [userId] });
    this.applyConversation(conversation, false);
    return conversation;
  }

  async createGroup(title: string, userIds: string[]): Promise<Conversation> {
    const { conversation } = await this.client.request("conversation.create", { kind: "group", user_ids: userIds, title });
    this.applyConversation(conversation, false);
    return conversation;
  }

  async addMembers(conversationId: string, userIds: string[]): Promise<void> {
    const { conversation } = await this.client.request("conversation.add_members", { conversation_id: conversationId, user_ids: userIds });
    this.applyConversation(conversation, false);
  }

  async leave(conversationId: string): Promise<void> {
    await this.client.request("conversation.leave", { conversation_id: conversationId });
    this.removeConversation(conversationId);
  }

  private applyConversation(conversation: Conversation, fromEvent: boolean): void {
    this.store.set((s) => {
      const previous = s.conversations[conversation.id];
      let next = conversation;
      // An older view must not undo what we know locally (a last message the event did not carry).
      if (previous && !conversation.last_message && previous.last_message) next = { ...conversation, last_message: previous.last_message };
      if (previous && this.visible === conversation.id && !fromEvent) next = { ...next, unread: previous.unread };
      return { ...s, conversations: { ...s.conversations, [conversation.id]: next } };
    });
    void this.watchPresence([conversation]);
  }

  private removeConversation(id: string): void {
    this.store.set((s) => {
      if (!(id in s.conversations)) return s;
      const conversations = { ...s.conversations };
      delete conversations[id];
      return { ...s, conversations };
    });
  }

  private async resync(): Promise<void> {
    // The stream could not be replayed: refetch the list, and what each open timeline missed.
    await this.loadList(true);
    const since: Record<string, number> = {};
    for (const [id, thread] of Object.entries(this.store.get().threads)) {
      const last = thread.messages[thread.messages.length - 1];
      if (thread.loaded && last) since[id] = last.seq;
    }
    if (!Object.keys(since).length) return;
    try {
      const { messages, conversations } = await this.client.request("conversation.sync", { since, limit: 100 });
      for (const conv of conversations) this.applyConversation(conv, true);
      for (const message of messages) this.applyMessage(message, false);
    } catch {
      /* the next resync or a reload catches up */
    }
  }

  // --- presence ------------------------------------------------------------------------------

  private watching = new Set<string>();

  private async watchPresence(conversations: Conversation[], force = false): Promise<void> {
    const me = this.me;
    const ids = [...new Set(conversations.flatMap((c) => c.members.map((m) => m.user_id)))].filter(
      (id) => id !== me && (force || !this.watching.has(id)),
    );
    ids.forEach((id) => this.watching.add(id));
    for (let i = 0; i < ids.length; i += 100) {
      try {
        const { users } = await this.client.request("presence.watch", { user_ids: ids.slice(i, i + 100) });
        const update: Record<string, PresenceStatus> = {};
        for (const u of users) update[u.user_id] = u.status;
        this.setPresence(update);
      } catch {
        return;
      }
    }
  }

  private setPresence(update: Record<string, PresenceStatus>): void {
    this.store.set((s) => ({ ...s, presence: { ...s.presence, ...update } }));
  }

  // --- timelines -----------------------------------------------------------------------------

  thread(id: string): Thread {
    return this.store.get().threads[id] ?? EMPTY_THREAD;
  }

  private setThread(id: string, fn: (t: Thread) => Thread): void {
    this.store.set((s) => ({ ...s, threads: { ...s.threads, [id]: fn(s.threads[id] ?? EMPTY_THREAD) } }));
  }

  /** The newest page (once per conversation). */
  async open(id: string): Promise<void> {
    const t = this.thread(id);
    if (t.loaded || t.loading) return;
    await this.loadPage(id, null);
  }

  /** The page before the oldest loaded message. */
  async loadOlder(id: string): Promise<void> {
    const t = this.thread(id);
    if (t.loading || !t.hasMore || !t.loaded) return;
    const first = t.messages[0];
    await this.loadPage(id, first ? first.seq : null);
  }

  private async loadPage(id: string, beforeSeq: number | null): Promise<void> {
    this.setThread(id, (t) => ({ ...t, loading: true, error: null }));
    try {
      const reply = await this.client.request(
        "message.history",
        { conversation_id: id, before_seq: beforeSeq, limit: PAGE },
        { retry: true },
      );
      this.setThread(id, (t) => ({
        ...t,
        messages: merge(t.messages, reply.messages),
        hasMore: reply.has_more,
        loading: false,
        loaded: true,
      }));
    } catch (error) {
      this.setThread(id, (t) => ({ ...t, loading: false, error: messageOf(error) }));
    }
  }

  /** Reload the newest page of a timeline (after an error). */
  async retry(id: string): Promise<void> {
    const t = this.thread(id);
    await this.loadPage(id, t.loaded && t.messages[0] ? t.messages[0].seq : null);
  }

  private applyMessage(message: Message, isNew: boolean): void {
    const cid = message.conversation_id;
    const me = this.me;
    this.store.set((s) => {
      const conv = s.conversations[cid];
      const thread = s.threads[cid];
      let threads = s.threads;
      if (thread && thread.loaded) {
        threads = { ...threads, [cid]: { ...thread, messages: merge(thread.messages, [message]) } };
      }
      let pending = s.pending;
      const list = pending[cid];
      if (list?.some((p) => p.client_msg_id === message.client_msg_id && message.sender_id === me)) {
        const rest = list.filter((p) => p.client_msg_id !== message.client_msg_id);
        pending = { ...pending, [cid]: rest };
        for (const p of list) if (p.client_msg_id === message.client_msg_id) revokePreviews(p);
      }
      let conversations = s.conversations;
      if (conv) {
        let next = conv;
        const isLast = !conv.last_message || conv.last_message.seq <= message.seq;
        if (isLast) next = { ...next, last_message: message, last_seq: Math.max(conv.last_seq, message.seq) };
        if (isNew && message.seq > conv.last_seq) {
          if (message.sender_id === me) next = { ...next, read_seq: Math.max(next.read_seq, message.seq) };
          else if (!message.deleted && message.seq > conv.read_seq) next = { ...next, unread: next.unread + 1 };
        }
        conversations = { ...conversations, [cid]: next };
      }
      let typing = s.typing;
      if (isNew && message.sender_id && typing[cid]?.[message.sender_id]) {
        const forConv = { ...typing[cid] };
        delete forConv[message.sender_id];
        typing = { ...typing, [cid]: forConv };
      }
      return { ...s, threads, pending, conversations, typing };
    });
    if (!this.store.get().conversations[cid]) void this.fetchConversation(cid);
  }

  private applyRead(cid: string, userId: string, seq: number): void {
    this.store.set((s) => {
      const conv = s.conversations[cid];
      if (!conv) return s;
      let next: Conversation;
      if (userId === this.me) {
        const readSeq = Math.max(conv.read_seq, seq);
        let unread = conv.unread;
        if (readSeq >= conv.last_seq) unread = 0;
        else {
          const t = s.threads[cid];
          if (t?.loaded && (t.messages[0]?.seq ?? Infinity) <= readSeq + 1) {
            unread = t.messages.filter((m) => m.seq > readSeq && m.sender_id !== this.me && !m.deleted).length;
          }
        }
        next = { ...conv, read_seq: readSeq, unread };
      } else {
        next = {
          ...conv,
          members: conv.members.map((m) => (m.user_id === userId ? { ...m, read_seq: Math.max(m.read_seq ?? 0, seq) } : m)),
        };
      }
      return { ...s, conversations: { ...s.conversations, [cid]: next } };
    });
  }

  /** Mark everything loaded in this conversation as read (only moves forward). */
  markRead(cid: string): void {
    const s = this.store.get();
    const conv = s.conversations[cid];
    const thread = s.threads[cid];
    if (!conv) return;
    const lastLoaded = thread?.messages[thread.messages.length - 1]?.seq ?? 0;
    const seq = Math.max(lastLoaded, conv.last_message?.seq ?? 0);
    if (seq <= conv.read_seq && conv.unread === 0) return;
    if ((this.readSent.get(cid) ?? 0) >= seq && conv.unread === 0) return;
    this.readSent.set(cid, seq);
    this.applyRead(cid, this.me ?? "", seq);
    this.store.set((st) => {
      const c = st.conversations[cid];
      return c ? { ...st, conversations: { ...st.conversations, [cid]: { ...c, unread: 0 } } } : st;
    });
    if (seq > 0) this.client.request("message.read", { conversation_id: cid, seq }).catch(() => this.readSent.delete(cid));
  }

  // --- typing --------------------------------------------------------------------------------

  /** Call on every keystroke: sends at most one `typing` per 3 s per conversation. */
  typing(cid: string): void {
    const now = Date.now();
    if (now - (this.lastTypingSent.get(cid) ?? 0) < 3000) return;
    if (this.client.notify("typing", { conversation_id: cid })) this.lastTypingSent.set(cid, now);
  }

  private applyTyping(cid: string, userId: string, expiresInMs: number): void {
    if (userId === this.me) return;
    this.store.set((s) => ({ ...s, typing: { ...s.typing, [cid]: { ...s.typing[cid], [userId]: Date.now() + expiresInMs } } }));
    this.scheduleTypingSweep();
  }

  private scheduleTypingSweep(): void {
    if (this.typingTimer) clearTimeout(this.typingTimer);
    const expiries = Object.values(this.store.get().typing).flatMap((m) => Object.values(m));
    if (!expiries.length) return;
    const next = Math.min(...expiries) - Date.now();
    this.typingTimer = setTimeout(() => {
      const now = Date.now();
      this.store.set((s) => {
        const typing: MessengerState["typing"] = {};
        for (const [cid, users] of Object.entries(s.typing)) {
          const live = Object.fromEntries(Object.entries(users).filter(([, exp]) => exp > now));
          if (Object.keys(live).length) typing[cid] = live;
        }
        return { ...s, typing };
      });
      this.scheduleTypingSweep();
    }, Math.max(50, next + 20));
  }

  // --- sending -------------------------------------------------------------------------------

  /** Queue a message (uploading its files first); it shows as pending until the server has it. */
  send(cid: string, draft: Draft): void {
    const client_msg_id = newClientMsgId();
    const pending: PendingMessage = {
      client_msg_id,
      conversation_id: cid,
      text: draft.text.trim() || null,
      reply_to: draft.replyTo,
      attachments: draft.files.map((f) => ({
        name: f.name,
        kind: f.kind === "file" && f.blob.type.startsWith("video/") ? "video" : f.kind,
        contentType: f.blob.type,
        size: f.blob.size,
        previewUrl: f.kind !== "file" || f.blob.type.startsWith("video/") ? URL.createObjectURL(f.blob) : null,
        ...(f.durationMs !== undefined ? { durationMs: f.durationMs } : {}),
      })),
      files: draft.files,
      mediaIds: [],
      state: draft.files.length ? "uploading" : this.client.state === "open" ? "sending" : "waiting",
      error: null,
      queuedAt: Date.now(),
      progress: 0,
    };
    this.store.set((s) => ({ ...s, pending: { ...s.pending, [cid]: [...(s.pending[cid] ?? []), pending] } }));
    void this.deliver(pending);
  }

  /** Try a failed message again (the same client_msg_id: the server never stores it twice). */
  retrySend(cid: string, clientMsgId: string): void {
    const p = this.store.get().pending[cid]?.find((x) => x.client_msg_id === clientMsgId);
    if (!p || p.state !== "failed") return;
    const state: PendingState = p.files.length > p.mediaIds.length ? "uploading" : this.client.state === "open" ? "sending" : "waiting";
    this.patchPending(cid, clientMsgId, { state, error: null });
    void this.deliver({ ...p, state });
  }

  discard(cid: string, clientMsgId: string): void {
    this.store.set((s) => {
      const list = s.pending[cid] ?? [];
      list.filter((p) => p.client_msg_id === clientMsgId).forEach(revokePreviews);
      return { ...s, pending: { ...s.pending, [cid]: list.filter((p) => p.client_msg_id !== clientMsgId) } };
    });
  }

  private async deliver(p: PendingMessage): Promise<void> {
    const cid = p.conversation_id;
    const mediaIds = [...p.mediaIds];
    try {
      for (let i = mediaIds.length; i < p.files.length; i++) {
        const f = p.files[i]!;
        const uploaded = await uploadMedia(f.blob, {
          kind: f.kind,
          filename: f.name,
          ...(f.durationMs !== undefined ? { durationMs: Math.max(1, f.durationMs) } : {}),
          onProgress: (fraction) => this.patchPending(cid, p.client_msg_id, { progress: (i + fraction) / p.files.length }),
        });
        mediaIds.push(uploaded.id);
        this.patchPending(cid, p.client_msg_id, { mediaIds: [...mediaIds] });
      }
    } catch (error) {
      this.patchPending(cid, p.client_msg_id, { state: "failed", error: `Upload failed: ${messageOf(error)}` });
      return;
    }
    this.patchPending(cid, p.client_msg_id, { state: this.client.state === "open" ? "sending" : "waiting" });
    try {
      const { message } = await this.client.send({
        conversation_id: cid,
        client_msg_id: p.client_msg_id,
        text: p.text,
        attachments: mediaIds,
        reply_to: p.reply_to,
      });
      this.applyMessage(message, true);
    } catch (error) {
      const code = (error as { code?: string }).code;
      if (code === "closed") return; // signed out: the entry stays in the outbox storage
      this.patchPending(cid, p.client_msg_id, { state: "failed", error: messageOf(error) });
    }
  }

  private patchPending(cid: string, clientMsgId: string, patch: Partial<PendingMessage>): void {
    this.store.set((s) => {
      const list = s.pending[cid];
      if (!list?.some((p) => p.client_msg_id === clientMsgId)) return s;
      return { ...s, pending: { ...s.pending, [cid]: list.map((p) => (p.client_msg_id === clientMsgId ? { ...p, ...patch } : p)) } };
    });
  }

  /** Messages a previous page (or a closed tab) left in the outbox storage. */
  private restoreOutbox(): void {
    const show = (entries: OutboxEntry[]) => {
      this.store.set((s) => {
        const pending = { ...s.pending };
        for (const e of entries) {
          const list = pending[e.conversation_id] ?? [];
          if (list.some((p) => p.client_msg_id === e.client_msg_id)) continue;
          const restored: PendingMessage = {
            client_msg_id: e.client_msg_id,
            conversation_id: e.conversation_id,
            text: e.fields.text ?? null,
            reply_to: e.fields.reply_to ?? null,
            attachments: [],
            files: [],
            mediaIds: e.fields.attachments ?? [],
            state: this.client.state === "open" ? "sending" : "waiting",
            error: null,
            queuedAt: e.queued_at,
            progress: 1,
          };
          pending[e.conversation_id] = [...list, restored];
        }
        return { ...s, pending };
      });
    };
    show(this.client.outbox.pending());
    // A storage that loads asynchronously fills the queue a moment later.
    setTimeout(() => show(this.client.outbox.pending()), 300);
    // The outbox's own promise for a restored entry is not ours: watch its events instead.
    this.offs.push(
      this.client.on("outbox", (event) => {
        if (event.kind === "sent") {
          const message = (event.reply as { message?: Message } | null)?.message;
          if (message) this.applyMessage(message, true);
          else this.discard(event.entry.conversation_id, event.entry.client_msg_id);
        } else if (event.kind === "failed") {
          this.patchPending(event.entry.conversation_id, event.entry.client_msg_id, { state: "failed", error: event.error.message });
        }
      }),
    );
  }

  // --- changes to messages ---------------------------------------------------------------------

  async edit(messageId: string, text: string): Promise<void> {
    const { message } = await this.client.request("message.edit", { message_id: messageId, text });
    this.applyMessage(message, false);
  }

  async remove(message: Message, scope: "me" | "everyone"): Promise<void> {
    await this.client.request("message.delete", { message_id: message.id, scope });
    if (scope === "me") {
      const cid = message.conversation_id;
      this.setThread(cid, (t) => ({ ...t, messages: t.messages.filter((m) => m.id !== message.id) }));
    }
  }

  async react(messageId: string, emoji: string): Promise<void> {
    const { message } = await this.client.request("message.react", { message_id: messageId, emoji });
    this.applyMessage(message, false);
  }

  async pin(messageId: string, pinned: boolean): Promise<void> {
    const { message } = await this.client.request("message.pin", { message_id: messageId, pinned });
    this.applyMessage(message, false);
  }

  async forward(messageId: string, toConversation: string): Promise<void> {
    const { message } = await this.client.request("message.forward", {
      message_id: messageId,
      conversation_id: toConversation,
      client_msg_id: newClientMsgId(),
    });
    this.applyMessage(message, true);
  }
}

// --- helpers -----------------------------------------------------------------------------------

/** Merge two seq-sorted lists by message id (the newer state of a message wins). */
export function merge(current: Message[], incoming: Message[]): Message[] {
  if (!incoming.length) return current;
  const byId = new Map(current.map((m) => [m.id, m]));
  for (const m of incoming) byId.set(m.id, m);
  return [...byId.values()].sort((a, b) => a.seq - b.seq);
}

function revokePreviews(p: PendingMessage): void {
  for (const a of p.attachments) if (a.previewUrl) URL.revokeObjectURL(a.previewUrl);
}

export function messageOf(error: unknown): string {
  if (error && typeof error === "object" && "message" in error) return String((error as { message: unknown }).message);
  return String(error);
}

const instances = new WeakMap<KintsugiClient, Messenger>();

/** The messenger of this client (one per session). */
export function messengerFor(client: KintsugiClient): Messenger {
  let m = instances.get(client);
  if (!m) {
    m = new Messenger(client);
    instances.set(client, m);
  }
  return m;
}

export type { Attachment, Conversation, Message };
