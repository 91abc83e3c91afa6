/**
 * (d) The outbox: messages queued while the server is down are delivered once each after the
 * reconnect, in order; a send whose reply was lost is sent again with the same client_msg_id and the
 * server answers with the stored message (one message, not two); the outbox survives a new client
 * through its storage; non-retryable errors fail the one message and the queue goes on.
 */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import {
  KeyValueOutboxStorage,
  KintsugiError,
  type OutboxEvent,
  type ReplyOf,
  type ServerEvents,
} from "../src/index.js";
import { type Backend, clientFor, eventually, interceptingWebSocket, newUser, sleep, startBackend } from "./harness.js";

let backend: Backend;

before(async () => {
  backend = await startBackend();
});

after(async () => {
  await backend?.stop();
});

test("sends queued while disconnected are delivered once each, in order, after reconnect", async (t) => {
  const ann = await newUser(backend, "ann");
  const bo = await newUser(backend, "bo");

  // Ann's socket loses the reply to "queued 3" once: the connection is cut just as it arrives.
  const sentFrames: Record<string, unknown>[] = [];
  let lostReplyFor: string | null = null;
  let cut = false;
  const Lossy = interceptingWebSocket({
    onClientFrame: (frame) => {
      if (frame.type !== "message.send") return;
      sentFrames.push(frame);
      if (frame.text === "queued 3" && !cut) lostReplyFor = frame.id as string;
    },
    onServerFrame: (frame) => {
      if (frame.type === "ok" && frame.id === lostReplyFor && !cut) {
        cut = true;
        return "drop-and-cut";
      }
      return "pass";
    },
  });
  const sender = clientFor(backend, ann.session, { WebSocket: Lossy });
  const receiver = clientFor(backend, bo.session);
  const outboxEvents: OutboxEvent[] = [];
  const received: ServerEvents["message.new"][] = [];
  sender.on("outbox", (event) => outboxEvents.push(event));
  receiver.on("message.new", (event) => received.push(event));
  try {
    await Promise.all([sender.connect(), receiver.connect()]);
    const { conversation } = await sender.request("conversation.create", { kind: "direct", user_ids: [bo.userId] });
    const group = await sender.request("conversation.create", { kind: "group", user_ids: [bo.userId], title: "g" });

    await backend.kill();
    await eventually(() => sender.state !== "open", "the sender noticed the drop");

    // Queued while there is no server at all; two conversations interleaved.
    const total = 10;
    const replies: Promise<ReplyOf<"message.send">>[] = [];
    for (let i = 0; i < total; i++) {
      replies.push(sender.send({ conversation_id: conversation.id, text: `queued ${i}` }));
      if (i % 3 === 0) replies.push(sender.send({ conversation_id: group.conversation.id, text: `group ${i}` }));
    }
    assert.equal(sender.outbox.pending().length, total + 4);
    await sleep(300);
    await backend.restart();

    const results = await Promise.all(replies);
    assert.equal(sender.outbox.pending().length, 0);
    const direct = results.filter((r) => r.message.conversation_id === conversation.id);
    assert.deepEqual(direct.map((r) => r.message.text), Array.from({ length: total }, (_, i) => `queued ${i}`));
    assert.deepEqual(direct.map((r) => r.message.seq), Array.from({ length: total }, (_, i) => i + 1), "in order");

    // The lost reply: "queued 3" went out twice with the same client_msg_id, and is one message.
    assert.ok(cut, "the reply was cut");
    const attempts = sentFrames.filter((f) => f.text === "queued 3");
    assert.ok(attempts.length >= 2, `sent ${attempts.length} times`);
    assert.equal(new Set(attempts.map((f) => f.client_msg_id)).size, 1, "with one client_msg_id");
    const history = await receiver.request("message.history", { conversation_id: conversation.id, limit: 50 });
    assert.deepEqual(
      history.messages.map((m) => m.text).sort(),
      Array.from({ length: total }, (_, i) => `queued ${i}`).sort(),
      "one message per queued send",
    );
    const groupHistory = await receiver.request("message.history", { conversation_id: group.conversation.id, limit: 50 });
    assert.deepEqual(groupHistory.messages.map((m) => m.text).sort(), ["group 0", "group 3", "group 6", "group 9"]);

    // The receiver saw each once.
    await eventually(() => received.length === total + 4, "message.new at the receiver");
    await sleep(200);
    assert.equal(received.length, total + 4);
    assert.ok(outboxEvents.some((e) => e.kind === "retrying" && e.error.code === "disconnected"));
    t.diagnostic(`message.send frames: ${sentFrames.length} for ${total + 4} messages`);
  } catch (error) {
    t.diagnostic(backend.log().slice(-4_000));
    throw error;
  } finally {
    sender.close();
    receiver.close();
  }
});

test("the outbox outlives its client through storage; a non-retryable error fails one message only", async () => {
  const ann = await newUser(backend, "ann");
  const bo = await newUser(backend, "bo");
  const kv = new Map<string, string>();
  const store = { getItem: (k: string) => kv.get(k) ?? null, setItem: (k: string, v: string) => void kv.set(k, v) };

  const first = clientFor(backend, ann.session, { outbox: { storage: new KeyValueOutboxStorage(store) } });
  await first.connect();
  const { conversation } = await first.request("conversation.create", { kind: "direct", user_ids: [bo.userId] });
  first.close();

  // Queued on a client that never connects (the app is closed before the network comes back).
  const offline = clientFor(backend, ann.session, { outbox: { storage: new KeyValueOutboxStorage(store) } });
  const lost = [
    offline.send({ conversation_id: conversation.id, text: "from last session 1", client_msg_id: "persist-1" }),
    offline.send({ conversation_id: conversation.id, text: "", client_msg_id: "persist-bad" }), // empty: refused
    offline.send({ conversation_id: conversation.id, text: "from last session 2", client_msg_id: "persist-2" }),
  ];
  await sleep(50);
  offline.close();
  for (const p of lost) await assert.rejects(p, (e: unknown) => e instanceof KintsugiError && e.code === "closed");
  assert.equal(JSON.parse(kv.get("kintsugi.outbox")!).length, 3);

  // The next session sends them, in order; the bad one fails with its typed error.
  const next = clientFor(backend, ann.session, { outbox: { storage: new KeyValueOutboxStorage(store) } });
  const events: OutboxEvent[] = [];
  next.on("outbox", (e) => events.push(e));
  try {
    await next.connect();
    await eventually(() => events.filter((e) => e.kind === "sent" || e.kind === "failed").length === 3, "the stored entries");
    const failed = events.find((e) => e.kind === "failed");
    assert.equal(failed?.entry.client_msg_id, "persist-bad");
    assert.ok(failed?.kind === "failed" && failed.error.code === "text_too_long", JSON.stringify(failed));
    assert.deepEqual(
      events.filter((e) => e.kind === "sent").map((e) => e.entry.client_msg_id),
      ["persist-1", "persist-2"],
    );
    assert.equal(JSON.parse(kv.get("kintsugi.outbox")!).length, 0);
    const history = await next.request("message.history", { conversation_id: conversation.id, limit: 10 });
    assert.deepEqual(history.messages.map((m) => m.text), ["from last session 1", "from last session 2"]);
  } finally {
    next.close();
  }
});
