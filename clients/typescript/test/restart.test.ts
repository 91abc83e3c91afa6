/**
 * (b) The server is SIGKILLed mid-stream and restarted on the same database: the client reconnects
 * with backoff, resumes from its position, and gets every durable event exactly once, in order.
 */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import type { ServerEvents } from "../src/index.js";
import { type Backend, clientFor, eventually, newUser, sleep, startBackend } from "./harness.js";

let backend: Backend;

before(async () => {
  backend = await startBackend();
});

after(async () => {
  await backend?.stop();
});

test("SIGKILL and restart mid-stream: every message.new delivered exactly once, in order", async (t) => {
  const ann = await newUser(backend, "ann");
  const bo = await newUser(backend, "bo");
  const sender = clientFor(backend, ann.session, { reconnect: { baseMs: 100, maxMs: 400 } });
  // The receiver comes back later than the sender, so some messages are sent while it is away and
  // must come from the replay (resume), not live.
  const receiver = clientFor(backend, bo.session, { reconnect: { baseMs: 1_200, maxMs: 2_400, random: () => 0.99 } });
  const received: ServerEvents["message.new"][] = [];
  const disconnects: number[] = [];
  const resumed: ServerEvents["resumed"][] = [];
  let resyncs = 0;
  receiver.on("message.new", (event) => received.push(event));
  receiver.on("disconnected", (info) => disconnects.push(info.code));
  receiver.on("resumed", (frame) => resumed.push(frame));
  receiver.on("resync", () => resyncs++);
  try {
    await Promise.all([sender.connect(), receiver.connect()]);
    const { conversation } = await sender.request("conversation.create", { kind: "direct", user_ids: [bo.userId] });
    await receiver.next("conversation.updated");

    const total = 20;
    let restarted: Promise<void> = Promise.resolve();
    const sends: Promise<unknown>[] = [];
    for (let i = 0; i < total; i++) {
      sends.push(sender.send({ conversation_id: conversation.id, text: `message ${i}`, client_msg_id: `restart-${i}` }));
      if (i === 6) {
        await eventually(() => received.length >= 5, "the first messages live at the receiver");
        await backend.kill(); // mid-stream: sends 7… are queued in the outbox or in flight
        await sleep(300);
        restarted = backend.restart(); // awaited below; the sends go on meanwhile
      }
      await sleep(40);
    }
    await restarted;
    await Promise.all(sends);
    await eventually(() => received.length >= total, `${total} message.new at the receiver`, 20_000);
    await sleep(300); // anything extra (a duplicate) would show up now

    assert.equal(received.length, total, "each message exactly once");
    assert.deepEqual(
      received.map((e) => e.message.text),
      Array.from({ length: total }, (_, i) => `message ${i}`),
    );
    assert.deepEqual(received.map((e) => e.message.seq), Array.from({ length: total }, (_, i) => i + 1));
    const positions = received.map((e) => e.pos);
    assert.equal(new Set(positions).size, total);
    assert.deepEqual(positions, [...positions].sort((a, b) => a - b));

    assert.ok(disconnects.includes(1006), `the receiver saw the drop (${disconnects.join(", ")})`);
    assert.ok(resumed.length >= 1, "the receiver resumed");
    assert.ok(resumed.some((r) => r.replayed > 0), `the replay carried missed events (${JSON.stringify(resumed)})`);
    assert.equal(resyncs, 0);
    assert.equal(receiver.state, "open");
    assert.equal(receiver.position?.pos, positions.at(-1));

    // And the history holds each message once (the sender's retries were idempotent).
    const history = await receiver.request("message.history", { conversation_id: conversation.id, limit: 50 });
    assert.equal(history.messages.length, total);
    t.diagnostic(`receiver: ${receiver.stats.connects} connects, replayed ${resumed.map((r) => r.replayed).join("+")}, duplicates dropped ${receiver.stats.duplicatesDropped}`);
  } catch (error) {
    t.diagnostic(backend.log().slice(-4_000));
    throw error;
  } finally {
    sender.close();
    receiver.close();
  }
});
