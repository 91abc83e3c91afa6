/**
 * The outbox for `message.send`: every message is stored first, then sent, and sent again with the
 * same `client_msg_id` (the server is idempotent on it) after a dropped connection, a timeout or a
 * retryable error, until it gets `ok` or a non-retryable error. Messages of one conversation go out
 * one at a time, in the order they were queued; conversations do not wait for each other.
 */
import { Backoff, type BackoffOptions } from "./backoff.js";
import { KintsugiError } from "./errors.js";
import type { MessageSend } from "./generated/protocol.js";

/** What `message.send` takes; `client_msg_id` is made up when missing. */
export type OutgoingMessage = Omit<MessageSend, "type" | "id" | "client_msg_id"> & { client_msg_id?: string };

export interface OutboxEntry {
  /** The `client_msg_id`: the entry's key, unique per conversation. */
  client_msg_id: string;
  conversation_id: string;
  /** The `message.send` fields as they will be sent (with `client_msg_id`). */
  fields: Omit<MessageSend, "type" | "id">;
  /** Order of queueing (ms since the epoch, then a counter). */
  queued_at: number;
  seq: number;
  /** Sends so far (each after a drop, timeout or retryable error). */
  attempts: number;
}

/**
 * Where queued messages are kept until the server has them. The default keeps them in memory (lost
 * when the page or app closes); `KeyValueOutboxStorage` keeps them in localStorage, React Native's
 * AsyncStorage or anything with `getItem`/`setItem`.
 */
export interface OutboxStorage {
  load(): OutboxEntry[] | Promise<OutboxEntry[]>;
  put(entry: OutboxEntry): void | Promise<void>;
  delete(clientMsgId: string, conversationId: string): void | Promise<void>;
}

export class MemoryOutboxStorage implements OutboxStorage {
  private readonly entries = new Map<string, OutboxEntry>();

  load(): OutboxEntry[] {
    return [...this.entries.values()].map((e) => clone(e));
  }

  put(entry: OutboxEntry): void {
    this.entries.set(`${entry.conversation_id}\u0000${entry.client_msg_id}`, clone(entry));
  }

  delete(clientMsgId: string, conversationId: string): void {
    this.entries.delete(`${conversationId}\u0000${clientMsgId}`);
  }

  get size(): number {
    return this.entries.size;
  }
}

/** The part of `localStorage` / React Native's `AsyncStorage` the outbox needs. */
export interface KeyValueStore {
  getItem(key: string): string | null | Promise<string | null>;
  setItem(key: string, value: string): void | Promise<void>;
}

/** Keeps the whole outbox as one JSON value under `key` (outboxes are small). */
export class KeyValueOutboxStorage implements OutboxStorage {
  private cache: Map<string, OutboxEntry> | null = null;
  private writing: Promise<void> = Promise.resolve();

  constructor(
    private readonly store: KeyValueStore,
    private readonly key = "kintsugi.outbox",
  ) {}

  async load(): Promise<OutboxEntry[]> {
    const map = await this.map();
    return [...map.values()];
  }

  async put(entry: OutboxEntry): Promise<void> {
    (await this.map()).set(`${entry.conversation_id}\u0000${entry.client_msg_id}`, entry);
    await this.flush();
  }

  async delete(clientMsgId: string, conversationId: string): Promise<void> {
    (await this.map()).delete(`${conversationId}\u0000${clientMsgId}`);
    await this.flush();
  }

  private async map(): Promise<Map<string, OutboxEntry>> {
    if (!this.cache) {
      const text = await this.store.getItem(this.key);
      const list = text ? (JSON.parse(text) as OutboxEntry[]) : [];
      this.cache = new Map(list.map((e) => [`${e.conversation_id}\u0000${e.client_msg_id}`, e]));
    }
    return this.cache;
  }

  private flush(): Promise<void> {
    // Writes are chained so the last one stored is the latest state.
    const snapshot = JSON.stringify([...(this.cache?.values() ?? [])]);
    this.writing = this.writing.then(() => this.store.setItem(this.key, snapshot)).catch(() => undefined);
    return this.writing;
  }
}

/** A random id for `client_msg_id` (crypto.randomUUID where there is one). */
export function newClientMsgId(): string {
  const c = (globalThis as { crypto?: { randomUUID?: () => string } }).crypto;
  if (c?.randomUUID) return c.randomUUID();
  let out = "";
  for (let i = 0; i < 32; i++) out += Math.floor(Math.random() * 16).toString(16);
  return `${out.slice(0, 8)}-${out.slice(8, 12)}-4${out.slice(13, 16)}-a${out.slice(17, 20)}-${out.slice(20)}`;
}

/** What happened to a queued message (the client emits these as `outbox` events). */
export type OutboxEvent =
  | { kind: "queued"; entry: OutboxEntry }
  | { kind: "sent"; entry: OutboxEntry; reply: unknown }
  | { kind: "retrying"; entry: OutboxEntry; error: KintsugiError; delayMs: number }
  | { kind: "failed"; entry: OutboxEntry; error: KintsugiError };

/** What the outbox needs from the client. */
export interface OutboxTransport {
  /** Resolves once the socket is open (now, if it is); rejects with `closed` if the client is closed. */
  whenOpen(): Promise<void>;
  /** Sends `message.send` once; rejects with a KintsugiError. */
  send(fields: OutboxEntry["fields"], timeoutMs: number): Promise<unknown>;
}

export interface OutboxOptions {
  storage?: OutboxStorage;
  /** How long one send waits for its reply before it is sent again (default 10 s). */
  timeoutMs?: number;
  /** Backoff between retries after retryable errors (defaults: 500 ms doubling up to 10 s). */
  backoff?: BackoffOptions;
}

type Waiter = { resolve: (reply: unknown) => void; reject: (error: KintsugiError) => void };

export class Outbox {
  readonly storage: OutboxStorage;
  private readonly timeoutMs: number;
  private readonly queues = new Map<string, OutboxEntry[]>();
  private readonly pumping = new Set<string>();
  private readonly waiters = new Map<string, Waiter>();
  private readonly stored = new Map<string, Promise<unknown>>();
  private readonly ready: Promise<void>;
  private seq = 0;
  private stopped = false;
  private restored = false;
  private waitingForRestore = 0;

  constructor(
    private readonly transport: OutboxTransport,
    private readonly emit: (event: OutboxEvent) => void,
    private readonly options: OutboxOptions = {},
  ) {
    this.storage = options.storage ?? new MemoryOutboxStorage();
    this.timeoutMs = options.timeoutMs ?? 10_000;
    this.ready = this.restore();
  }

  /** Queue a message; resolves with the `ok` reply once the server has it. */
  enqueue(message: OutgoingMessage): Promise<unknown> {
    // Until the stored entries are loaded, new ones wait behind them (in call order); after, a
    // message is in the queue (and `pending()`) as soon as `enqueue` returns.
    if (!this.restored || this.waitingForRestore > 0) {
      this.waitingForRestore++;
      return this.ready.then(() => {
        this.waitingForRestore--;
        return this.enqueueNow(message);
      });
    }
    return this.enqueueNow(message);
  }

  private enqueueNow(message: OutgoingMessage): Promise<unknown> {
    if (this.stopped) return Promise.reject(new KintsugiError({ code: "closed", message: "The client is closed.", request: "message.send" }));
    const client_msg_id = message.client_msg_id ?? newClientMsgId();
    const entry: OutboxEntry = {
      client_msg_id,
      conversation_id: message.conversation_id,
      fields: { ...message, client_msg_id },
      queued_at: Date.now(),
      seq: ++this.seq,
      attempts: 0,
    };
    const key = waiterKey(entry);
    if (this.waiters.has(key) || this.queueOf(entry.conversation_id).some((e) => e.client_msg_id === client_msg_id)) {
      return Promise.reject(new KintsugiError({ code: "bad_request", message: `client_msg_id ${client_msg_id} is already queued.` }));
    }
    // Into the queue at once (so synchronous calls keep their order), stored before it is first sent.
    const result = new Promise<unknown>((resolve, reject) => this.waiters.set(key, { resolve, reject }));
    this.queueOf(entry.conversation_id).push(entry);
    this.stored.set(key, Promise.resolve(this.storage.put(clone(entry))).catch(() => undefined));
    this.emit({ kind: "queued", entry });
    void this.pump(entry.conversation_id);
    return result;
  }

  /** Messages not yet acknowledged, oldest first. */
  pending(): OutboxEntry[] {
    return [...this.queues.values()].flat().sort(byOrder);
  }

  /** Stop sending; entries stay in storage for the next client. Waiting promises reject with `closed`. */
  stop(): void {
    this.stopped = true;
    for (const [key, waiter] of this.waiters) {
      waiter.reject(new KintsugiError({ code: "closed", message: "The client was closed; the message stays queued in the outbox storage.", request: "message.send" }));
      this.waiters.delete(key);
    }
  }

  private queueOf(conversationId: string): OutboxEntry[] {
    let queue = this.queues.get(conversationId);
    if (!queue) this.queues.set(conversationId, (queue = []));
    return queue;
  }

  private restore(): Promise<void> {
    // Synchronous storages (the in-memory default, localStorage) are loaded before the constructor returns.
    let loaded: OutboxEntry[] | Promise<OutboxEntry[]>;
    try {
      loaded = this.storage.load();
    } catch (error) {
      loaded = Promise.reject(error);
    }
    if (Array.isArray(loaded)) {
      this.take(loaded);
      return Promise.resolve();
    }
    return loaded.then(
      (entries) => this.take(entries),
      (error: unknown) => {
        console.error("kintsugi: could not load the outbox storage", error);
        this.take([]);
      },
    );
  }

  private take(loaded: OutboxEntry[]): void {
    const entries = [...loaded].sort(byOrder);
    for (const entry of entries) {
      this.seq = Math.max(this.seq, entry.seq);
      this.queueOf(entry.conversation_id).push(entry);
    }
    this.restored = true;
    for (const conversationId of this.queues.keys()) void this.pump(conversationId);
  }

  private async pump(conversationId: string): Promise<void> {
    if (this.pumping.has(conversationId)) return;
    this.pumping.add(conversationId);
    const backoff = new Backoff({ baseMs: 500, maxMs: 10_000, ...this.options.backoff });
    try {
      const queue = this.queueOf(conversationId);
      while (queue.length && !this.stopped) {
        try {
          await this.transport.whenOpen();
        } catch {
          return; // closed: the entries stay stored
        }
        const entry = queue[0]!;
        await this.stored.get(waiterKey(entry));
        this.stored.delete(waiterKey(entry));
        entry.attempts++;
        await this.storage.put(clone(entry));
        let reply: unknown;
        try {
          reply = await this.transport.send(entry.fields, this.timeoutMs);
        } catch (caught) {
          const error = caught instanceof KintsugiError ? caught : new KintsugiError({ code: "internal_error", message: String(caught) });
          if (error.code === "closed" || this.stopped) return;
          if (error.retryable) {
            // A drop waits for the next connection (whenOpen); other retryable errors back off.
            const delayMs = error.code === "disconnected" ? 0 : backoff.next(error.retryAfterMs ?? 0);
            this.emit({ kind: "retrying", entry, error, delayMs });
            if (delayMs) await sleep(delayMs);
            continue;
          }
          queue.shift();
          await this.storage.delete(entry.client_msg_id, entry.conversation_id);
          this.emit({ kind: "failed", entry, error });
          this.settle(entry, (w) => w.reject(error));
          continue;
        }
        backoff.reset();
        queue.shift();
        await this.storage.delete(entry.client_msg_id, entry.conversation_id);
        this.emit({ kind: "sent", entry, reply });
        this.settle(entry, (w) => w.resolve(reply));
      }
    } finally {
      this.pumping.delete(conversationId);
      if (!this.queueOf(conversationId).length) this.queues.delete(conversationId);
    }
  }

  private settle(entry: OutboxEntry, fn: (waiter: Waiter) => void): void {
    const key = waiterKey(entry);
    const waiter = this.waiters.get(key);
    if (waiter) {
      this.waiters.delete(key);
      fn(waiter);
    }
  }
}

function waiterKey(entry: OutboxEntry): string {
  return `${entry.conversation_id}\u0000${entry.client_msg_id}`;
}

function byOrder(a: OutboxEntry, b: OutboxEntry): number {
  return a.seq - b.seq || a.queued_at - b.queued_at;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function clone<T>(value: T): T {
  return JSON.parse(JSON.stringify(value)) as T;
}
