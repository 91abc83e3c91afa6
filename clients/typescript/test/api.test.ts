/**
 * (a) login, connect, request → typed ok, typed errors for bad frames; (e) the same over MessagePack;
 * chat streaming (the server's offline demo model) in both formats.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { after, before, describe, test } from "node:test";
import WebSocket from "ws";
import {
  AuthApi,
  AuthSession,
  KintsugiClient,
  KintsugiError,
  type ServerEvents,
  type WebSocketConstructor,
} from "../src/index.js";
import { type Backend, clientFor, eventually, newUser, startBackend } from "./harness.js";

let backend: Backend;

before(async () => {
  backend = await startBackend();
});

after(async () => {
  await backend?.stop();
});

describe("REST auth helper", () => {
  test("register, login, me, refresh; errors are typed", async () => {
    const api = new AuthApi(backend.baseUrl);
    const { email } = await newUser(backend, "ann");
    const tokens = await api.login({ email, password: "correct horse battery staple" });
    assert.equal(tokens.token_type, "Bearer");
    const me = await api.me(tokens.access_token);
    assert.equal(me.email, email);
    const session = new AuthSession(api, tokens);
    const renewed = await session.refresh();
    assert.notEqual(renewed, tokens.access_token);
    await assert.rejects(api.login({ email, password: "wrong password here" }), (error: unknown) => {
      assert.ok(error instanceof KintsugiError);
      assert.equal(error.code, "invalid_credentials");
      assert.equal(error.status, 401);
      assert.equal(error.retryable, false);
      return true;
    });
  });
});

for (const format of ["json", "msgpack"] as const) {
  describe(`socket (${format})`, () => {
    test("connects, answers requests with typed replies, refuses bad frames with typed errors", async () => {
      const ann = await newUser(backend, "ann");
      const bo = await newUser(backend, "bo");
      const client = clientFor(backend, ann.session, { format, auth: format === "json" ? "frame" : "query" });
      const states: string[] = [];
      client.on("state", ({ state }) => states.push(state));
      try {
        await client.connect();
        assert.equal(client.state, "open");
        assert.equal(client.hello?.protocol, format);
        assert.equal(client.hello?.user_id, ann.userId);
        assert.deepEqual(states, ["connecting", "open"]);
        assert.ok(client.position);

        const pong = await client.request("ping");
        assert.equal(pong.type, "pong");

        // A typed request and reply; the durable event it causes arrives too.
        const updated = client.next("conversation.updated");
        const created = await client.request("conversation.create", { kind: "direct", user_ids: [bo.userId] });
        assert.equal(created.type, "ok");
        assert.equal(created.conversation.kind, "direct");
        const event = await updated;
        assert.equal(event.conversation.id, created.conversation.id);
        assert.equal(typeof event.pos, "number");

        const sent = await client.request("message.send", {
          conversation_id: created.conversation.id,
          client_msg_id: "hello-1",
          text: "Kava o 5?",
        });
        assert.equal(sent.message.text, "Kava o 5?");
        assert.equal(sent.message.seq, 1);

        // Malformed: a field of the wrong shape. The reply is a typed, non-retryable error naming it.
        await assert.rejects(
          client.request("conversation.get", { conversation_id: "not-a-uuid" }),
          (error: unknown) => {
            assert.ok(error instanceof KintsugiError);
            assert.equal(error.code, "bad_request");
            assert.equal(error.request, "conversation.get");
            assert.equal(error.details?.field, "conversation_id");
            assert.equal(error.retryable, false);
            return true;
          },
        );
        // Wrong types sneaked past TypeScript get the same.
        await assert.rejects(
          client.request("message.history", { conversation_id: created.conversation.id, limit: "many" as unknown as number }),
          (error: unknown) => error instanceof KintsugiError && error.code === "bad_request" && error.details?.field === "limit",
        );
        // Well-formed but not there.
        await assert.rejects(
          client.request("conversation.get", { conversation_id: "00000000-0000-4000-8000-000000000000" }),
          (error: unknown) => error instanceof KintsugiError && error.code === "not_found",
        );
        // Too large to send: refused locally, never reaches the server (which would close with 1009).
        await assert.rejects(
          client.request("message.send", {
            conversation_id: created.conversation.id,
            client_msg_id: "big",
            text: "x".repeat(300 * 1024),
          }),
          (error: unknown) => error instanceof KintsugiError && error.code === "frame_too_large",
        );
        // The connection survived all of it.
        assert.equal(client.state, "open");
        assert.equal(client.stats.connects, 1);
        assert.equal((await client.request("ping")).type, "pong");
      } finally {
        client.close();
      }
      assert.equal(client.state, "closed");
      await assert.rejects(client.request("ping"), (error: unknown) => error instanceof KintsugiError && error.code === "closed");
    });

    test("events from another user arrive typed, once each", async () => {
      const ann = await newUser(backend, "ann");
      const bo = await newUser(backend, "bo");
      const annClient = clientFor(backend, ann.session, { format });
      const boClient = clientFor(backend, bo.session, { format });
      const received: ServerEvents["message.new"][] = [];
      boClient.on("message.new", (event) => received.push(event));
      try {
        await Promise.all([annClient.connect(), boClient.connect()]);
        const { conversation } = await annClient.request("conversation.create", { kind: "direct", user_ids: [bo.userId] });
        for (let i = 0; i < 5; i++) await annClient.send({ conversation_id: conversation.id, text: `m${i}` });
        await eventually(() => received.length === 5, "5 message.new at bo");
        assert.deepEqual(received.map((e) => e.message.text), ["m0", "m1", "m2", "m3", "m4"]);
        assert.deepEqual(received.map((e) => e.message.seq), [1, 2, 3, 4, 5]);
        const positions = received.map((e) => e.pos);
        assert.deepEqual(positions, [...positions].sort((a, b) => a - b));
        assert.equal(boClient.position?.pos, positions.at(-1));
      } finally {
        annClient.close();
        boClient.close();
      }
    });

    test("streams a chat answer (chat.send → chat.delta… → chat.done)", async () => {
      const ann = await newUser(backend, "ann");
      const client = clientFor(backend, ann.session, { format });
      try {
        await client.connect();
        const { chat } = await client.request("chat.create", { title: "Trip" });
        const stream = client.streamChat({ chat_id: chat.id, content: "What should I see in Lviv?" });
        let text = "";
        let pieces = 0;
        for await (const piece of stream) {
          text += piece;
          pieces++;
        }
        const done = await stream.done;
        const reply = await stream.reply;
        assert.equal(done.message_id, reply.message_id);
        assert.equal(done.finish_reason, "stop");
        assert.equal(text, done.content);
        assert.ok(pieces > 1, `streamed in ${pieces} piece(s)`);
        assert.match(text, /Offline demo/);
      } finally {
        client.close();
      }
    });
  });
}

describe("connection policy", () => {
  test("a token the server refuses, with no way to get another, stops the client (4401)", async () => {
    const client = new KintsugiClient({
      url: backend.baseUrl, // an http base URL gets /ws appended
      token: "not-a-token",
      WebSocket: WebSocket as unknown as WebSocketConstructor,
      reconnect: { baseMs: 50, maxMs: 100 },
    });
    const disconnects: number[] = [];
    client.on("disconnected", (info) => disconnects.push(info.code));
    const closed = client.next("closed");
    await assert.rejects(client.connect(), (error: unknown) => error instanceof KintsugiError && error.code === "closed");
    const { error } = await closed;
    assert.equal(error?.code, "invalid_token");
    assert.deepEqual(disconnects, [4401]);
    assert.equal(client.state, "closed");
  });

  test("getToken that throws after 4401 stops the client; a request waiting for the socket rejects", async () => {
    let asked = 0;
    const client = new KintsugiClient({
      url: backend.wsUrl,
      token: "not-a-token",
      getToken: () => {
        asked++;
        throw new KintsugiError({ code: "invalid_refresh_token", message: "log in again", status: 401 });
      },
      WebSocket: WebSocket as unknown as WebSocketConstructor,
      reconnect: { baseMs: 50, maxMs: 100 },
    });
    const pending = client.request("ping", {}, { timeoutMs: 5_000 });
    void client.connect().catch(() => undefined);
    await assert.rejects(pending, (error: unknown) => error instanceof KintsugiError && error.code === "closed");
    assert.equal(asked, 1);
    assert.equal(client.state, "closed");
  });
});

describe("README example", () => {
  test("examples/quickstart.ts (the README's) runs against the server", async () => {
    const api = new AuthApi(backend.baseUrl);
    const password = "correct horse battery";
    await api.register({ email: "ann@example.com", password, display_name: "Ann" });
    await api.register({ email: "bo@example.com", password, display_name: "Bo" });
    const example = fileURLToPath(new URL("../examples/quickstart.ts", import.meta.url));
    const { stdout } = await promisify(execFile)(process.execPath, ["--import", "tsx", example], {
      env: { ...process.env, KINTSUGI_URL: backend.baseUrl },
      timeout: 20_000,
    });
    assert.match(stdout, /Offline demo/);
    assert.match(stdout, /sent as seq 1/);
  });
});
