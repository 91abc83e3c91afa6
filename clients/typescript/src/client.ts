/**
 * One socket per client to `GET /ws` (docs/protocol.md): authenticate, renew the token before it
 * expires, reconnect with exponential backoff and full jitter, resume the durable stream with
 * `epoch`/`pos`, deliver every durable event once, match replies to requests, and run the outbox.
 */
import { Backoff, type BackoffOptions } from "./backoff.js";
import { decodeFrame, encodeFrame, type Format, frameBytes, SUBPROTOCOL_MSGPACK, type WireData } from "./codec.js";
import { KintsugiError } from "./errors.js";
import { TypedEmitter } from "./emitter.js";
import type { ErrorFrame, Hello, Requests, RequestType, ResyncRequired, ServerEvents } from "./generated/protocol.js";
import { type ChatStream, streamChat } from "./chat.js";
import { Outbox, type OutboxEvent, type OutboxStorage, type OutgoingMessage } from "./outbox.js";
import { tokenExpiry } from "./token.js";

// --- the WebSocket the client is given -------------------------------------------------------

/** The part of the WHATWG WebSocket the client uses (browsers, React Native, Node 22+, `ws`). */
export interface WebSocketLike {
  readonly readyState: number;
  readonly protocol: string;
  binaryType: string;
  onopen: ((event: any) => void) | null;
  onmessage: ((event: any) => void) | null;
  onclose: ((event: any) => void) | null;
  onerror: ((event: any) => void) | null;
  send(data: string | ArrayBufferLike | ArrayBufferView): void;
  close(code?: number, reason?: string): void;
}

export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;

const OPEN = 1;

// --- options and events ------------------------------------------------------------------------

export type ConnectionState = "idle" | "connecting" | "open" | "reconnecting" | "closed";

/** Why the client asks for a token. */
export type TokenReason =
  /** First connect without a token, or the one it has is about to expire. */
  | "connect"
  /** Renewal before `expires_at` (sent on the open socket as an `auth` frame). */
  | "renew"
  /** The server closed with 4401 because the token expired. */
  | "expired"
  /** The server refused the token (4401: invalid, revoked session…). */
  | "rejected";

export interface TokenRequest {
  reason: TokenReason;
  /** The token the client holds now (a fresh one is wanted unless someone already renewed it). */
  current: string | null;
}

/** Returns a fresh access token (for example from `AuthSession.getToken`); throw to give up. */
export type GetToken = (request: TokenRequest) => string | Promise<string>;

export interface StreamPosition {
  epoch: string;
  pos: number;
}

export interface ClientOptions {
  /** The socket URL, e.g. `wss://api.example.com/ws` (an http(s) base URL gets `/ws` appended). */
  url: string;
  /** The access token to connect with; without it `getToken` is asked first. */
  token?: string;
  /** Where fresh tokens come from: renewal before expiry, and after close 4401. */
  getToken?: GetToken;
  /** The WebSocket class; defaults to `globalThis.WebSocket` (pass `ws`'s on Node 20). */
  WebSocket?: WebSocketConstructor;
  /** `json` (text frames, default) or `msgpack` (binary frames, the `kintsugi.msgpack` subprotocol). */
  format?: Format;
  /**
   * How the token reaches the server: `frame` (default: an `auth` frame first, so the token is not
   * in URLs and logs) or `query` (`?token=`).
   */
  auth?: "frame" | "query";
  /** Reconnect backoff (full jitter): `baseMs` 500, `maxMs` 20,000; `enabled: false` to never reconnect. */
  reconnect?: BackoffOptions & { enabled?: boolean };
  /** Default timeout of `request()`, in ms (10,000). */
  requestTimeoutMs?: number;
  /** Renew this long before `expires_at` (default 60 s, at most a quarter of the token's lifetime). */
  renewBeforeMs?: number;
  /** Renew tokens on the open socket before they expire (default true). */
  autoRenew?: boolean;
  /** Application-level `ping` every this many ms while open; no `pong` in time drops the socket (default 25,000; 0 = off). */
  pingIntervalMs?: number;
  /** A stream position saved by the app: the first connection resumes from it. */
  position?: StreamPosition | null;
  /** The message outbox (see `send`). */
  outbox?: { storage?: OutboxStorage; timeoutMs?: number; backoff?: BackoffOptions };
  /** Frames larger than this are refused locally with `frame_too_large` (the server's WS_MAX_FRAME_BYTES, 256 KiB). */
  maxFrameBytes?: number;
  /** After this many 4401 closes in a row without a successful connect, stop (default 3). */
  maxAuthFailures?: number;
  /** Called when an event listener throws (default: console.error). */
  onListenerError?: (error: unknown) => void;
}

export interface DisconnectInfo {
  /** The close code (1006 when the connection dropped without a close frame, or never opened). */
  code: number;
  reason: string;
  /** The `error` frame the server sent just before closing, if any. */
  error: KintsugiError | null;
  /** Whether the client will reconnect, and after how long. */
  reconnect: boolean;
  delayMs: number | null;
}

/** Events of the client itself (beside every server frame, by its `type`). */
export interface LifecycleEvents {
  state: { state: ConnectionState; previous: ConnectionState };
  /** The socket is authenticated (`hello`); `resuming` when a `resume` was sent on it. */
  connected: { hello: Hello; resuming: boolean };
  disconnected: DisconnectInfo;
  /**
   * The server could not replay what was missed (`resync_required`): refetch state (e.g.
   * `conversation.sync`, `chat.list`). The client has moved to the new epoch/pos; live events go on.
   */
  resync: { epoch: string; pos: number; reason: string };
  /** The token was renewed on the open socket. */
  token: { expiresAt: number };
  /** The client stopped for good (`close()`, 4409, no token). */
  closed: { error: KintsugiError | null };
  outbox: OutboxEvent;
}

/** Every event `on()` accepts: server frames by `type`, and the client's own. */
export type ClientEvents = ServerEvents & LifecycleEvents;

// A compile-time check that no lifecycle event shadows a server frame type.
type Overlap = keyof ServerEvents & keyof LifecycleEvents;
const _noOverlap: [Overlap] extends [never] ? true : never = true;
void _noOverlap;

export interface RequestOptions {
  /** Reject with `timeout` after this many ms (default: the client's `requestTimeoutMs`). */
  timeoutMs?: number;
  /**
   * Send it again after a reconnect when the socket drops before the reply, instead of rejecting
   * with `disconnected`. Only for requests that are safe to apply twice (idempotent).
   */
  retry?: boolean;
  /** Abort the wait (rejects with the signal's reason); the frame may already have been sent. */
  signal?: AbortSignal;
}

export type ReplyOf<T extends RequestType> = Requests[T]["reply"];
export type FieldsOf<T extends RequestType> = Requests[T]["fields"];

// Fields may be omitted entirely for requests whose fields are all optional.
type FieldsArg<T extends RequestType> = {} extends FieldsOf<T> ? [fields?: FieldsOf<T>, options?: RequestOptions] : [fields: FieldsOf<T>, options?: RequestOptions];

interface Pending {
  id: string;
  type: string;
  data: WireData;
  retry: boolean;
  sent: boolean;
  resolve: (reply: any) => void;
  reject: (error: KintsugiError) => void;
  timer: ReturnType<typeof setTimeout> | null;
}

/** Close codes (docs/protocol.md) and what the client does about each. */
export const CLOSE_POLICY: Readonly<Record<number, "reconnect" | "renew-token" | "stop">> = {
  1000: "reconnect",
  1001: "reconnect",
  1005: "reconnect",
  1006: "reconnect",
  1007: "reconnect",
  1009: "reconnect",
  1011: "reconnect",
  1012: "reconnect",
  1013: "reconnect",
  4008: "reconnect",
  4401: "renew-token",
  4408: "reconnect",
  4409: "stop",
  4429: "reconnect",
};

const REPLY_TYPES = new Set(["ok", "error", "pong", "resumed", "resync_required"]);

// --- the client ----------------------------------------------------------------------------------

export class KintsugiClient {
  private readonly emitter: TypedEmitter<ClientEvents>;
  private readonly WebSocketImpl: WebSocketConstructor;
  private readonly url: string;
  private readonly format: Format;
  private readonly authMode: "frame" | "query";
  private readonly backoff: Backoff;
  private readonly reconnectEnabled: boolean;
  private readonly requestTimeoutMs: number;
  private readonly renewBeforeMs: number;
  private readonly autoRenew: boolean;
  private readonly pingIntervalMs: number;
  private readonly maxFrameBytes: number;
  private readonly maxAuthFailures: number;
  private readonly getTokenFn: GetToken | undefined;

  private _state: ConnectionState = "idle";
  private ws: WebSocketLike | null = null;
  private generation = 0;
  private token: string | null;
  private tokenExpiresAt: number | null = null;
  private needToken: TokenReason | null = null;
  private epoch: string | null = null;
  private lastPos = 0;
  private resumeId: string | null = null;
  private nextId = 0;
  private readonly pending = new Map<string, Pending>();
  private queue: Pending[] = [];
  private connError: ErrorFrame | null = null;
  private authFailures = 0;
  private reconnectTimer: ReturnType<typeof setTimeout> | null = null;
  private renewTimer: ReturnType<typeof setTimeout> | null = null;
  private pingTimer: ReturnType<typeof setTimeout> | null = null;
  private stableTimer: ReturnType<typeof setTimeout> | null = null;
  private renewing = false;
  private openWaiters: { resolve: () => void; reject: (e: KintsugiError) => void }[] = [];
  private _hello: Hello | null = null;
  private closeError: KintsugiError | null = null;

  /** The message outbox (`send` queues into it). */
  readonly outbox: Outbox;
  /** Counters, for tests and diagnostics. */
  readonly stats = { connects: 0, duplicatesDropped: 0, durableDelivered: 0, tokenRenewals: 0 };

  constructor(options: ClientOptions) {
    const impl = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (!impl) {
      throw new TypeError("No WebSocket: pass the `WebSocket` option (e.g. `import WebSocket from \"ws\"` on Node 20).");
    }
    this.WebSocketImpl = impl;
    this.url = socketUrl(options.url);
    this.format = options.format ?? "json";
    this.authMode = options.auth ?? "frame";
    this.backoff = new Backoff(options.reconnect);
    this.reconnectEnabled = options.reconnect?.enabled ?? true;
    this.requestTimeoutMs = options.requestTimeoutMs ?? 10_000;
    this.renewBeforeMs = options.renewBeforeMs ?? 60_000;
    this.autoRenew = options.autoRenew ?? true;
    this.pingIntervalMs = options.pingIntervalMs ?? 25_000;
    this.maxFrameBytes = options.maxFrameBytes ?? 256 * 1024;
    this.maxAuthFailures = options.maxAuthFailures ?? 3;
    this.getTokenFn = options.getToken;
    this.token = options.token ?? null;
    if (options.position) {
      this.epoch = options.position.epoch;
      this.lastPos = options.position.pos;
    }
    this.emitter = new TypedEmitter<ClientEvents>(options.onListenerError);
    this.outbox = new Outbox(
      {
        whenOpen: () => this.whenOpen(),
        send: (fields, timeoutMs) => this.request("message.send", fields, { timeoutMs }),
      },
      (event) => this.emitter.emit("outbox", event),
      options.outbox,
    );
  }

  // --- public state ----------------------------------------------------------------------------

  get state(): ConnectionState {
    return this._state;
  }

  /** The last `hello` (connection id, user id, features…), or null before the first. */
  get hello(): Hello | null {
    return this._hello;
  }

  /** The stream position of the last durable event processed; save it to resume after an app restart. */
  get position(): StreamPosition | null {
    return this.epoch === null ? null : { epoch: this.epoch, pos: this.lastPos };
  }

  // --- events ------------------------------------------------------------------------------------

  on<K extends keyof ClientEvents>(type: K, listener: (payload: ClientEvents[K]) => void): () => void {
    return this.emitter.on(type, listener);
  }

  once<K extends keyof ClientEvents>(type: K, listener: (payload: ClientEvents[K]) => void): () => void {
    return this.emitter.once(type, listener);
  }

  off<K extends keyof ClientEvents>(type: K, listener: (payload: ClientEvents[K]) => void): void {
    this.emitter.off(type, listener);
  }

  /** Every server frame and client event. */
  onAny(listener: (type: keyof ClientEvents, payload: unknown) => void): () => void {
    return this.emitter.onAny(listener);
  }

  /** The next event of this type that passes `filter`. */
  next<K extends keyof ClientEvents>(type: K, filter?: (payload: ClientEvents[K]) => boolean): Promise<ClientEvents[K]> {
    return this.emitter.next(type, filter);
  }

  // --- connecting -----------------------------------------------------------------------------------

  /**
   * Open the socket (and keep it open); resolves at the first `hello`, rejects with `closed` if the
   * client stops before (a refused token, 4409, `close()`). Calling it without awaiting is fine.
   */
  connect(): Promise<void> {
    const ready = this._state === "closed" ? Promise.reject(this.closedError()) : this.whenOpen();
    ready.catch(() => undefined); // fire-and-forget callers get no unhandled rejection
    if (this._state === "idle") void this.open();
    return ready;
  }

  /** Resolves once the socket is open (at once if it is); rejects with `closed` if the client stops first. */
  whenOpen(): Promise<void> {
    if (this._state === "open") return Promise.resolve();
    if (this._state === "closed") return Promise.reject(this.closedError());
    return new Promise((resolve, reject) => this.openWaiters.push({ resolve, reject }));
  }

  /** Close for good: pending requests reject with `closed`; the outbox keeps what it has not sent. */
  close(): void {
    this.terminate(null, 1000);
  }

  /** Drop the current socket and reconnect at once (e.g. when the app comes back to the foreground). */
  reconnectNow(): void {
    if (this._state === "closed") return;
    if (this.reconnectTimer) {
      clearTimeout(this.reconnectTimer);
      this.reconnectTimer = null;
      void this.open();
      return;
    }
    if (this.ws) this.abandonSocket(1006, "reconnect requested", 0);
  }

  // --- requests ---------------------------------------------------------------------------------------

  /**
   * Send a request frame; resolves with its typed reply (`ok` and the result's fields) or rejects
   * with a `KintsugiError` (the server's error, or `timeout`, `disconnected`, `closed`,
   * `frame_too_large`). Sent while the socket is down, it waits for the next connection (its timeout
   * runs meanwhile).
   */
  request<T extends RequestType>(type: T, ...args: FieldsArg<T>): Promise<ReplyOf<T>> {
    const [fields, options = {}] = args as [FieldsOf<T> | undefined, RequestOptions | undefined];
    if (this._state === "closed") return Promise.reject(this.closedError(type));
    const id = String(++this.nextId);
    let data: WireData;
    try {
      data = encodeFrame(this.format, { ...(fields ?? {}), type, id });
    } catch (error) {
      return Promise.reject(new KintsugiError({ code: "bad_request", message: `Cannot encode the frame: ${String(error)}`, request: type }));
    }
    if (frameBytes(data) > this.maxFrameBytes) {
      return Promise.reject(
        new KintsugiError({
          code: "frame_too_large",
          message: `The frame is ${frameBytes(data)} bytes; the server accepts at most ${this.maxFrameBytes}.`,
          request: type,
        }),
      );
    }
    return new Promise<ReplyOf<T>>((resolve, reject) => {
      const entry: Pending = { id, type, data, retry: options.retry ?? false, sent: false, resolve, reject, timer: null };
      const timeoutMs = options.timeoutMs ?? this.requestTimeoutMs;
      const fail = (error: KintsugiError) => {
        this.forget(entry);
        reject(error);
      };
      if (timeoutMs > 0 && Number.isFinite(timeoutMs)) {
        entry.timer = setTimeout(
          () => fail(new KintsugiError({ code: "timeout", message: `No reply to ${type} within ${timeoutMs} ms.`, request: type })),
          timeoutMs,
        );
      }
      if (options.signal) {
        const signal = options.signal;
        if (signal.aborted) return fail(new KintsugiError({ code: "timeout", message: "Aborted.", request: type }));
        signal.addEventListener(
          "abort",
          () => fail(new KintsugiError({ code: "timeout", message: `Aborted: ${String(signal.reason ?? "")}`, request: type })),
          { once: true },
        );
      }
      if (this._state === "open") this.transmit(entry);
      else this.queue.push(entry);
    });
  }

  /** Send a frame that wants no reply (no `id`), e.g. `typing`. Dropped when the socket is not open. */
  notify<T extends RequestType>(type: T, fields: FieldsOf<T>): boolean {
    if (this._state !== "open" || !this.ws) return false;
    const data = encodeFrame(this.format, { ...fields, type });
    if (frameBytes(data) > this.maxFrameBytes) return false;
    return this.rawSend(data);
  }

  /**
   * Send a message through the outbox: stored, sent, and sent again with the same `client_msg_id`
   * after drops and retryable errors until the server answers (in order per conversation).
   */
  send(message: OutgoingMessage): Promise<ReplyOf<"message.send">> {
    return this.outbox.enqueue(message) as Promise<ReplyOf<"message.send">>;
  }

  /** Ask the model and stream its answer: `for await (const piece of client.streamChat({chat_id, content}))`. */
  streamChat(fields: FieldsOf<"chat.send">): ChatStream {
    return streamChat(this, fields);
  }

  // --- internals: the socket's life ------------------------------------------------------------------------

  private setState(state: ConnectionState): void {
    const previous = this._state;
    if (previous === state) return;
    this._state = state;
    this.emitter.emit("state", { state, previous });
    if (state === "open") {
      const waiters = this.openWaiters;
      this.openWaiters = [];
      for (const w of waiters) w.resolve();
    }
  }

  private async open(): Promise<void> {
    this.reconnectTimer = null;
    if (this._state === "closed") return;
    this.setState("connecting");
    const generation = ++this.generation;

    // A token first: asked for, or the one we hold is about to expire.
    const expiry = this.token ? tokenExpiry(this.token) : null;
    const reason: TokenReason | null =
      this.needToken ?? (!this.token || (expiry !== null && expiry - Date.now() < 2_000) ? "connect" : null);
    if (reason !== null) {
      if (!this.getTokenFn) {
        if (!this.token || reason === "rejected") {
          this.terminate(new KintsugiError({ code: "unauthorized", message: "No token, and no getToken to ask for one." }));
          return;
        }
      } else {
        try {
          this.token = await this.getTokenFn({ reason, current: this.token });
        } catch (caught) {
          if (generation !== this.generation) return;
          const error = caught instanceof KintsugiError ? caught : null;
          if (error?.retryable) {
            // The auth server is unreachable or busy: try again later.
            this.scheduleReconnect(1006, "token refresh failed", error, error.retryAfterMs ?? 0);
            return;
          }
          this.terminate(
            error ?? new KintsugiError({ code: "unauthorized", message: `getToken failed: ${String(caught)}` }),
          );
          return;
        }
        if (generation !== this.generation) return;
        if (!this.token) {
          this.terminate(new KintsugiError({ code: "unauthorized", message: "getToken returned no token." }));
          return;
        }
      }
      this.needToken = null;
    }

    let url = this.url;
    if (this.authMode === "query") url += `${url.includes("?") ? "&" : "?"}token=${encodeURIComponent(this.token!)}`;
    let ws: WebSocketLike;
    try {
      ws = this.format === "msgpack" ? new this.WebSocketImpl(url, [SUBPROTOCOL_MSGPACK]) : new this.WebSocketImpl(url);
    } catch (caught) {
      this.terminate(new KintsugiError({ code: "bad_request", message: `Cannot open a WebSocket to ${this.url}: ${String(caught)}` }));
      return;
    }
    this.ws = ws;
    this.connError = null;
    ws.binaryType = "arraybuffer";
    ws.onopen = () => {
      if (generation !== this.generation) return;
      if (this.format === "msgpack" && ws.protocol !== SUBPROTOCOL_MSGPACK) {
        // The server (or a proxy) did not agree to MessagePack: frames would not be understood.
        this.terminate(new KintsugiError({ code: "bad_request", message: "The server did not accept the kintsugi.msgpack subprotocol." }));
        return;
      }
      if (this.authMode === "frame") {
        const id = String(++this.nextId);
        this.rawSend(encodeFrame(this.format, { type: "auth", token: this.token, id }));
        this.trackInternal(id, "auth", (reply) => this.tokenAccepted(reply));
      }
      if (this.epoch !== null) {
        // Resume first: the server holds durable events until it has it, so the replay comes in order.
        const id = String(++this.nextId);
        this.resumeId = id;
        this.rawSend(encodeFrame(this.format, { type: "resume", epoch: this.epoch, pos: this.lastPos, id }));
      }
    };
    ws.onmessage = (event: { data: unknown }) => {
      if (generation !== this.generation) return;
      let frame: Record<string, unknown> | null;
      try {
        frame = decodeFrame(event.data);
      } catch {
        return; // not ours to fix; the server never sends undecodable frames
      }
      if (frame && typeof frame.type === "string") this.receive(frame);
    };
    ws.onclose = (event: { code?: number; reason?: string }) => {
      if (generation !== this.generation) return;
      this.socketClosed(event.code ?? 1006, event.reason ?? "");
    };
    ws.onerror = () => {
      // A close event follows; it carries what there is to know.
    };
  }

  private trackInternal(id: string, type: string, onOk: (reply: Record<string, unknown>) => void): void {
    this.pending.set(id, {
      id,
      type,
      data: "",
      retry: false,
      sent: true,
      resolve: onOk,
      reject: () => undefined,
      timer: null,
    });
  }

  private receive(frame: Record<string, unknown>): void {
    const type = frame.type as string;
    const id = typeof frame.id === "string" ? frame.id : null;

    if (type === "hello") {
      this.helloReceived(frame as unknown as Hello);
      this.emitter.emit("hello", frame as unknown as ServerEvents["hello"]);
      return;
    }
    if (id !== null && id === this.resumeId && (type === "resumed" || type === "resync_required" || type === "error")) {
      this.resumeId = null;
      if (type === "resumed") {
        this.epoch = frame.epoch as string;
        this.lastPos = Math.max(this.lastPos, frame.pos as number);
      } else if (type === "resync_required") {
        this.resync(frame as unknown as ResyncRequired);
      } else {
        // A malformed resume (e.g. an epoch the server cannot parse): start over from the server's head.
        const hello = this._hello;
        if (hello) this.resync({ type: "resync_required", epoch: hello.epoch, pos: hello.pos, reason: "epoch_changed" } as ResyncRequired);
      }
      this.emitter.emit(type as "resumed", frame as never);
      return;
    }
    if (id !== null && REPLY_TYPES.has(type)) {
      const entry = this.pending.get(id);
      if (entry) {
        this.forget(entry);
        // The handshake's own auth frame failing comes before a 4401: keep it for the close.
        if (type === "error" && !entry.data) this.connError = frame as unknown as ErrorFrame;
        if (type === "error") entry.reject(KintsugiError.fromFrame(frame as unknown as ErrorFrame, entry.type));
        else entry.resolve(frame);
        return;
      }
      if (type === "ok" || type === "pong") return; // a reply to a request that timed out
    }
    if (type === "ok") return;
    if (type === "error" && id === null) this.connError = frame as unknown as ErrorFrame;
    if (type === "resync_required") {
      this.resync(frame as unknown as ResyncRequired);
    }
    if (typeof frame.pos === "number" && type !== "resumed" && type !== "resync_required") {
      // A durable event: deliver each position once, across reconnects.
      if (this.epoch !== null && frame.pos <= this.lastPos) {
        this.stats.duplicatesDropped++;
        return;
      }
      this.lastPos = frame.pos;
      this.stats.durableDelivered++;
    }
    this.emitter.emit(type as keyof ServerEvents, frame as never);
  }

  private helloReceived(hello: Hello): void {
    this._hello = hello;
    this.stats.connects++;
    this.authFailures = 0;
    if (this.epoch === null) {
      // A fresh client: start at the stream's head (events after it arrive live).
      this.epoch = hello.epoch;
      this.lastPos = hello.pos;
    }
    this.tokenExpiresAt = hello.expires_at * 1000;
    this.scheduleRenew();
    // Reset the backoff only once the connection has lasted a while, so a server that accepts and
    // drops at once is not hammered.
    if (this.stableTimer) clearTimeout(this.stableTimer);
    this.stableTimer = setTimeout(() => this.backoff.reset(), 5_000);
    this.setState("open");
    this.emitter.emit("connected", { hello, resuming: this.resumeId !== null });
    const queued = this.queue;
    this.queue = [];
    for (const entry of queued) this.transmit(entry);
    this.schedulePing();
  }

  private resync(frame: ResyncRequired): void {
    this.epoch = frame.epoch;
    this.lastPos = frame.pos;
    this.emitter.emit("resync", { epoch: frame.epoch, pos: frame.pos, reason: frame.reason });
  }

  private transmit(entry: Pending): void {
    // If the socket is going away the send fails quietly and the close handler decides (send again
    // on the next socket, or `disconnected`).
    this.rawSend(entry.data);
    entry.sent = true;
    this.pending.set(entry.id, entry);
  }

  private rawSend(data: WireData): boolean {
    const ws = this.ws;
    if (!ws || ws.readyState !== OPEN) return false;
    try {
      ws.send(data);
      return true;
    } catch {
      return false;
    }
  }

  private forget(entry: Pending): void {
    if (entry.timer) clearTimeout(entry.timer);
    entry.timer = null;
    this.pending.delete(entry.id);
    const index = this.queue.indexOf(entry);
    if (index >= 0) this.queue.splice(index, 1);
  }

  private clearTimers(): void {
    for (const timer of [this.renewTimer, this.pingTimer, this.stableTimer]) if (timer) clearTimeout(timer);
    this.renewTimer = this.pingTimer = this.stableTimer = null;
  }

  /** Give up on the current socket now (without waiting for a close handshake) and handle it as closed. */
  private abandonSocket(code: number, reason: string, delayMs?: number): void {
    const ws = this.ws;
    this.generation++;
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = null;
      ws.onerror = () => undefined; // some implementations (ws) throw on an error event nobody listens to
      try {
        ws.close(4000, reason);
      } catch {
        // already closing
      }
    }
    this.socketClosed(code, reason, delayMs);
  }

  private socketClosed(code: number, reason: string, forcedDelayMs?: number): void {
    this.ws = null;
    this.resumeId = null;
    this.clearTimers();
    const serverError = this.connError ? KintsugiError.fromFrame(this.connError) : null;
    this.connError = null;

    // Requests on the wire: sent again on the next socket when the app said so, else `disconnected`.
    const inFlight = [...this.pending.values()].sort((a, b) => Number(a.id) - Number(b.id));
    this.pending.clear();
    const retry: Pending[] = [];
    for (const entry of inFlight) {
      if (!entry.data) continue; // internal (auth renewal on the socket that is gone)
      if (entry.retry) {
        entry.sent = false;
        retry.push(entry);
      } else {
        if (entry.timer) clearTimeout(entry.timer);
        entry.reject(
          new KintsugiError({
            code: "disconnected",
            message: `The connection closed (${code}) before ${entry.type} was answered; it may or may not have been applied.`,
            request: entry.type,
          }),
        );
      }
    }
    this.queue = [...retry, ...this.queue];

    if (this._state === "closed") return;
    const policy = CLOSE_POLICY[code] ?? "reconnect";
    if (policy === "stop") {
      this.terminate(
        serverError ?? new KintsugiError({ code: "too_many_connections", message: `Closed with ${code}: ${reason}` }),
        code,
        reason,
      );
      return;
    }
    if (policy === "renew-token") {
      this.authFailures++;
      if (this.authFailures >= this.maxAuthFailures || !this.getTokenFn) {
        this.terminate(serverError ?? new KintsugiError({ code: "unauthorized", message: `Closed with ${code}: ${reason}` }), code, reason);
        return;
      }
      this.needToken = serverError?.code === "token_expired" ? "expired" : "rejected";
      // A token that just expired is renewed at once; a refused one backs off.
      const delay = this.needToken === "expired" && this.authFailures === 1 ? 0 : undefined;
      this.scheduleReconnect(code, reason, serverError, 0, delay);
      return;
    }
    if (!this.reconnectEnabled) {
      this.terminate(serverError ?? new KintsugiError({ code: "disconnected", message: `Closed with ${code}: ${reason}` }), code, reason);
      return;
    }
    this.scheduleReconnect(code, reason, serverError, serverError?.retryAfterMs ?? 0, forcedDelayMs);
  }

  private scheduleReconnect(code: number, reason: string, error: KintsugiError | null, atLeastMs: number, exactMs?: number): void {
    const delayMs = exactMs ?? this.backoff.next(atLeastMs);
    this.setState("reconnecting");
    this.emitter.emit("disconnected", { code, reason, error, reconnect: true, delayMs });
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = setTimeout(() => void this.open(), delayMs);
  }

  private terminate(error: KintsugiError | null, code = 1000, reason = ""): void {
    if (this._state === "closed") return;
    const wasConnected = this.ws !== null || this._state === "open" || this._state === "connecting";
    this.closeError = error;
    this.clearTimers();
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    const ws = this.ws;
    this.ws = null;
    this.generation++;
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = null;
      ws.onerror = () => undefined; // some implementations (ws) throw on an error event nobody listens to
      try {
        ws.close(1000, "client closed");
      } catch {
        // already closed
      }
    }
    const previous = this._state;
    this._state = "closed";
    const closed = this.closedError();
    for (const entry of [...this.pending.values(), ...this.queue]) {
      if (entry.timer) clearTimeout(entry.timer);
      entry.reject(closed);
    }
    this.pending.clear();
    this.queue = [];
    for (const w of this.openWaiters) w.reject(closed);
    this.openWaiters = [];
    this.outbox.stop();
    if (wasConnected) this.emitter.emit("disconnected", { code, reason, error, reconnect: false, delayMs: null });
    this.emitter.emit("state", { state: "closed", previous });
    this.emitter.emit("closed", { error });
  }

  private closedError(request?: string): KintsugiError {
    const cause = this.closeError;
    return new KintsugiError({
      code: "closed",
      message: cause ? `The client stopped: ${cause.code}: ${cause.message}` : "The client is closed.",
      details: cause ? { cause: cause.code } : null,
      ...(request !== undefined ? { request } : {}),
    });
  }

  // --- token renewal and liveness --------------------------------------------------------------------

  private scheduleRenew(): void {
    if (this.renewTimer) clearTimeout(this.renewTimer);
    this.renewTimer = null;
    if (!this.autoRenew || !this.getTokenFn || this.tokenExpiresAt === null) return;
    const remaining = this.tokenExpiresAt - Date.now();
    if (remaining <= 0) {
      // Already expired by our clock although the server accepted it: the clocks disagree. Renewing
      // now would loop; the server's 4401 at expiry makes the reconnect ask for a token instead.
      return;
    }
    const margin = Math.min(this.renewBeforeMs, remaining / 4);
    this.renewTimer = setTimeout(() => void this.renew(), Math.max(250, remaining - margin));
  }

  private async renew(): Promise<void> {
    this.renewTimer = null;
    if (this._state !== "open" || this.renewing || !this.getTokenFn) return;
    this.renewing = true;
    const generation = this.generation;
    try {
      const token = await this.getTokenFn({ reason: "renew", current: this.token });
      if (!token) throw new Error("getToken returned no token");
      this.token = token; // the next connection uses it even if this socket drops before the reply
      if (generation !== this.generation || this._state !== "open") return;
      const reply = (await this.request("auth", { token }, { timeoutMs: this.requestTimeoutMs })) as unknown as Record<string, unknown>;
      if (generation === this.generation) this.tokenAccepted(reply);
    } catch {
      // Try again a little later while there is time; after expiry the server closes with 4401
      // and the reconnect asks for a token.
      if (generation === this.generation && this._state === "open" && this.tokenExpiresAt !== null) {
        const remaining = this.tokenExpiresAt - Date.now();
        if (remaining > 1_000) this.renewTimer = setTimeout(() => void this.renew(), Math.min(5_000, remaining / 2));
      }
    } finally {
      this.renewing = false;
    }
  }

  private tokenAccepted(reply: Record<string, unknown>): void {
    if (typeof reply.expires_at !== "number") return;
    const previous = this.tokenExpiresAt;
    this.tokenExpiresAt = reply.expires_at * 1000;
    this.scheduleRenew();
    if (previous !== null && this.tokenExpiresAt !== previous) {
      this.stats.tokenRenewals++;
      this.emitter.emit("token", { expiresAt: this.tokenExpiresAt });
    }
  }

  private schedulePing(): void {
    if (this.pingTimer) clearTimeout(this.pingTimer);
    this.pingTimer = null;
    if (this.pingIntervalMs <= 0) return;
    this.pingTimer = setTimeout(() => {
      this.pingTimer = null;
      if (this._state !== "open") return;
      const generation = this.generation;
      this.request("ping", {}, { timeoutMs: Math.min(this.requestTimeoutMs, this.pingIntervalMs) }).then(
        () => {
          if (generation === this.generation) this.schedulePing();
        },
        (error: KintsugiError) => {
          // No pong in time: the connection is dead even if TCP has not noticed yet.
          if (generation === this.generation && error.code === "timeout") this.abandonSocket(1006, "ping timeout");
        },
      );
    }, this.pingIntervalMs);
  }
}

/** `http(s)://host[/base]` → `ws(s)://host[/base]/ws`; a ws(s) URL is kept as it is. */
export function socketUrl(url: string): string {
  if (/^wss?:\/\//i.test(url)) return url;
  if (/^https?:\/\//i.test(url)) return `${url.replace(/^http/i, "ws").replace(/\/+$/, "")}/ws`;
  throw new TypeError(`Not a ws(s) or http(s) URL: ${url}`);
}
