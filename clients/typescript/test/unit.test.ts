/**
 * The client's reactions that a real server does not produce on demand, against a scripted socket:
 * duplicate positions, resync_required, every close code's policy, retry_after_ms, requests in
 * flight at a drop, ping timeouts, and the backoff's full jitter.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  Backoff,
  type ClientOptions,
  KintsugiClient,
  KintsugiError,
  type ServerEvents,
  tokenExpiry,
  type WebSocketConstructor,
  type WebSocketLike,
} from "../src/index.js";
import { eventually, sleep } from "./harness.js";

class FakeSocket implements WebSocketLike {
  static all: FakeSocket[] = [];
  readyState = 0;
  protocol = "";
  binaryType = "blob";
  onopen: ((event: unknown) => void) | null = null;
  onmessage: ((event: { data: unknown }) => void) | null = null;
  onclose: ((event: { code: number; reason: string }) => void) | null = null;
  onerror: ((event: unknown) => void) | null = null;
  readonly sent: Record<string, unknown>[] = [];

  constructor(
    readonly url: string,
    readonly protocols?: string | string[],
  ) {
    FakeSocket.all.push(this);
  }

  send(data: string | ArrayBufferLike | ArrayBufferView): void {
    this.sent.push(JSON.parse(data as string) as Record<string, unknown>);
  }

  close(): void {
    this.readyState = 3;
  }

  // --- the test plays the server ---
  open(): void {
    this.readyState = 1;
    this.onopen?.({});
  }
  push(frame: Record<string, unknown>): void {
    this.onmessage?.({ data: JSON.stringify(frame) });
  }
  hello(epoch = "E1", pos = 0): void {
    this.push({ type: "hello", conn_id: `c${FakeSocket.all.indexOf(this)}`, user_id: "u", epoch, pos, expires_at: Math.floor(Date.now() / 1000) + 3600, protocol: "json", resume_grace_ms: 1000, features: {} });
  }
  drop(code = 1006, reason = ""): void {
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }
  framesOf(type: string): Record<string, unknown>[] {
    return this.sent.filter((f) => f.type === type);
  }
}

function fakeClient(options: Partial<ClientOptions> = {}): KintsugiClient {
  FakeSocket.all = [];
  return new KintsugiClient({
    url: "ws://fake/ws",
    token: "t0",
    getToken: () => "t1",
    WebSocket: FakeSocket as unknown as WebSocketConstructor,
    reconnect: { baseMs: 10, maxMs: 20 },
    pingIntervalMs: 0,
    ...options,
  });
}

async function nextSocket(count: number): Promise<FakeSocket> {
  await eventually(() => FakeSocket.all.length >= count, `socket #${count}`, 3_000);
  return FakeSocket.all[count - 1]!;
}

function message(pos: number): Record<string, unknown> {
  return { type: "message.new", pos, message: { id: `m${pos}`, conversation_id: "c", seq: pos, sender_id: "x", client_msg_id: `k${pos}`, created_at: "", text: `t${pos}`, reactions: [] } };
}

describe("delivery", () => {
  test("resumes with epoch/pos after a drop and drops duplicate positions", async () => {
    const client = fakeClient();
    const seen: number[] = [];
    client.on("message.new", (e) => seen.push(e.pos));
    void client.connect();
    const first = await nextSocket(1);
    first.open();
    assert.deepEqual(first.sent.map((f) => f.type), ["auth"], "a fresh client sends no resume");
    first.hello("E1", 0);
    first.push(message(1));
    first.push(message(2));
    first.drop(1006);

    const second = await nextSocket(2);
    second.open();
    const resume = second.framesOf("resume")[0];
    assert.deepEqual({ epoch: resume?.epoch, pos: resume?.pos }, { epoch: "E1", pos: 2 });
    second.hello("E1", 3);
    second.push(message(2)); // a late copy
    second.push(message(3));
    second.push({ type: "resumed", epoch: "E1", pos: 3, replayed: 1, id: resume!.id });
    second.push(message(3)); // and another
    second.push(message(4));
    assert.deepEqual(seen, [1, 2, 3, 4]);
    assert.equal(client.stats.duplicatesDropped, 2);
    assert.deepEqual(client.position, { epoch: "E1", pos: 4 });
    client.close();
  });

  test("resync_required: a resync event, the new epoch/pos, live events go on", async () => {
    const client = fakeClient({ position: { epoch: "OLD", pos: 7 } });
    const resyncs: unknown[] = [];
    const seen: number[] = [];
    client.on("resync", (e) => resyncs.push(e));
    client.on("message.new", (e) => seen.push(e.pos));
    void client.connect();
    const socket = await nextSocket(1);
    socket.open();
    const resume = socket.framesOf("resume")[0]!;
    assert.deepEqual({ epoch: resume.epoch, pos: resume.pos }, { epoch: "OLD", pos: 7 }, "resumes from the saved position");
    socket.hello("NEW", 2);
    socket.push({ type: "resync_required", epoch: "NEW", pos: 2, reason: "epoch_changed", id: resume.id });
    assert.deepEqual(resyncs, [{ epoch: "NEW", pos: 2, reason: "epoch_changed" }]);
    assert.deepEqual(client.position, { epoch: "NEW", pos: 2 });
    socket.push(message(3));
    assert.deepEqual(seen, [3]);
    // A pushed one (no id: a gap that could not be filled) does the same.
    socket.push({ type: "resync_required", epoch: "NEW", pos: 40, reason: "gap_trimmed" });
    assert.equal(resyncs.length, 2);
    assert.deepEqual(client.position, { epoch: "NEW", pos: 40 });
    client.close();
  });
});

describe("close codes", () => {
  test("4409 stops for good: no reconnect, the error says why", async () => {
    const client = fakeClient();
    const connected = client.connect();
    const socket = await nextSocket(1);
    socket.open();
    socket.push({ type: "error", code: "too_many_connections", message: "close another tab" });
    socket.drop(4409);
    await assert.rejects(connected, (e: unknown) => e instanceof KintsugiError && e.code === "closed" && e.details?.cause === "too_many_connections");
    await sleep(60);
    assert.equal(FakeSocket.all.length, 1);
    assert.equal(client.state, "closed");
  });

  for (const code of [1000, 1006, 1011, 1012, 4008, 4408, 4429]) {
    test(`${code} reconnects and resumes`, async () => {
      const client = fakeClient();
      void client.connect();
      const first = await nextSocket(1);
      first.open();
      first.hello();
      first.push(message(1));
      first.drop(code);
      const second = await nextSocket(2);
      second.open();
      assert.equal(second.framesOf("resume")[0]?.pos, 1);
      client.close();
    });
  }

  test("1013 waits at least retry_after_ms from the unavailable error", async () => {
    const client = fakeClient();
    const drops: { delayMs: number | null; error: KintsugiError | null }[] = [];
    client.on("disconnected", (info) => drops.push(info));
    void client.connect();
    const socket = await nextSocket(1);
    socket.open();
    socket.push({ type: "error", code: "unavailable", message: "database down", retry_after_ms: 250 });
    socket.drop(1013);
    assert.equal(drops[0]?.error?.code, "unavailable");
    assert.ok((drops[0]?.delayMs ?? 0) >= 250, `waited ${drops[0]?.delayMs} ms`);
    await sleep(100);
    assert.equal(FakeSocket.all.length, 1, "not before retry_after_ms");
    await nextSocket(2);
    client.close();
  });

  test("4401 token_expired asks getToken for a fresh token and reconnects with it", async () => {
    const asked: string[] = [];
    const client = fakeClient({ getToken: ({ reason }) => (asked.push(reason), "fresh") });
    void client.connect();
    const first = await nextSocket(1);
    first.open();
    first.hello();
    first.push({ type: "error", code: "token_expired", message: "expired" });
    first.drop(4401);
    const second = await nextSocket(2);
    second.open();
    assert.deepEqual(asked, ["expired"]);
    assert.equal(second.framesOf("auth")[0]?.token, "fresh");
    client.close();
  });

  test("query auth puts the token in the URL; msgpack asks for the subprotocol", async () => {
    const client = fakeClient({ auth: "query", format: "msgpack" });
    void client.connect();
    const socket = await nextSocket(1);
    assert.equal(socket.url, "ws://fake/ws?token=t0");
    assert.deepEqual(socket.protocols, ["kintsugi.msgpack"]);
    client.close();
  });
});

describe("requests", () => {
  test("in flight at a drop: rejected with disconnected, or sent again when retry is set", async () => {
    const client = fakeClient();
    void client.connect();
    const first = await nextSocket(1);
    first.open();
    first.hello();
    const plain = client.request("conversation.list");
    const retried = client.request("conversation.list", {}, { retry: true });
    assert.equal(first.framesOf("conversation.list").length, 2);
    first.drop(1006);
    await assert.rejects(plain, (e: unknown) => e instanceof KintsugiError && e.code === "disconnected" && e.retryable);
    const second = await nextSocket(2);
    second.open();
    second.hello();
    const again = second.framesOf("conversation.list");
    assert.equal(again.length, 1);
    second.push({ type: "ok", id: again[0]!.id, conversations: [] });
    assert.deepEqual((await retried).conversations, []);
    client.close();
  });

  test("requests made while disconnected wait for the socket; timeouts reject with timeout", async () => {
    const client = fakeClient();
    const waiting = client.request("conversation.list");
    const impatient = client.request("conversation.list", {}, { timeoutMs: 30 });
    void client.connect();
    const socket = await nextSocket(1);
    await assert.rejects(impatient, (e: unknown) => e instanceof KintsugiError && e.code === "timeout");
    socket.open();
    socket.hello();
    const sent = socket.framesOf("conversation.list");
    assert.equal(sent.length, 1, "the timed-out one was never sent");
    socket.push({ type: "ok", id: sent[0]!.id, conversations: [] });
    await waiting;
    client.close();
  });

  test("a ping without pong drops the socket and reconnects", async () => {
    const client = fakeClient({ pingIntervalMs: 40 });
    const drops: number[] = [];
    client.on("disconnected", (info) => drops.push(info.code));
    void client.connect();
    const first = await nextSocket(1);
    first.open();
    first.hello();
    await nextSocket(2);
    assert.ok(first.framesOf("ping").length >= 1);
    assert.deepEqual(drops, [1006]);
    client.close();
  });

  test("server events reach typed listeners; lifecycle events are separate", async () => {
    const client = fakeClient();
    const typing: ServerEvents["typing"][] = [];
    const states: string[] = [];
    client.on("typing", (e) => typing.push(e));
    client.on("state", (e) => states.push(e.state));
    void client.connect();
    const socket = await nextSocket(1);
    socket.open();
    socket.hello();
    socket.push({ type: "typing", conversation_id: "c", user_id: "u2", expires_in_ms: 6000 });
    assert.equal(typing[0]?.user_id, "u2");
    client.close();
    assert.deepEqual(states, ["connecting", "open", "closed"]);
  });
});

describe("backoff and tokens", () => {
  test("exponential backoff with full jitter", () => {
    const backoff = new Backoff({ baseMs: 100, maxMs: 1_000, random: () => 0.5 });
    const delays = Array.from({ length: 6 }, () => backoff.next());
    assert.deepEqual(delays, [50, 100, 200, 400, 500, 500]);
    const spread = new Backoff({ baseMs: 100, maxMs: 1_000 });
    spread.attempt = 10;
    const samples = Array.from({ length: 200 }, () => {
      spread.attempt = 10;
      return spread.next();
    });
    assert.ok(Math.min(...samples) < 200 && Math.max(...samples) > 800, "spread over [0, max)");
    backoff.reset();
    assert.equal(backoff.next(300), 300, "never below retry_after_ms");
  });

  test("tokenExpiry reads a JWT's exp", () => {
    const payload = Buffer.from(JSON.stringify({ sub: "u", exp: 1_900_000_000 })).toString("base64url");
    assert.equal(tokenExpiry(`h.${payload}.s`), 1_900_000_000_000);
    assert.equal(tokenExpiry("opaque"), null);
  });
});
