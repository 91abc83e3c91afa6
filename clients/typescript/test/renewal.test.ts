/**
 * (c) Token renewal with a 3-second access-token lifetime: the client renews through getToken before
 * `expires_at` (an `auth` frame on the open socket, no reconnect); and with renewal off, the server's
 * 4401 (token_expired) makes it ask getToken for a fresh token, reconnect and resume.
 */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import type { DisconnectInfo, ServerEvents, TokenRequest } from "../src/index.js";
import { type Backend, clientFor, eventually, newUser, sleep, startBackend } from "./harness.js";

let backend: Backend;

before(async () => {
  backend = await startBackend({ env: { JWT_ACCESS_EXPIRY: "3s" } });
});

after(async () => {
  await backend?.stop();
});

test("renews before expiry on the open socket, and after a 4401", async (t) => {
  const ann = await newUser(backend, "ann");
  const bo = await newUser(backend, "bo");
  const carl = await newUser(backend, "carl");

  // Bo renews ahead of expiry; Carl never renews on his own and gets cut off by the server.
  const boAsks: TokenRequest[] = [];
  const carlAsks: TokenRequest[] = [];
  const renewing = clientFor(backend, bo.session, {
    getToken: (request) => {
      boAsks.push(request);
      return bo.session.getToken(request);
    },
  });
  const expiring = clientFor(backend, carl.session, {
    autoRenew: false,
    auth: "query",
    getToken: (request) => {
      carlAsks.push(request);
      return carl.session.getToken(request);
    },
  });
  const sender = clientFor(backend, ann.session);
  const boDrops: DisconnectInfo[] = [];
  const carlDrops: DisconnectInfo[] = [];
  const carlMessages: ServerEvents["message.new"][] = [];
  renewing.on("disconnected", (info) => boDrops.push(info));
  expiring.on("disconnected", (info) => carlDrops.push(info));
  expiring.on("message.new", (event) => carlMessages.push(event));
  try {
    await Promise.all([renewing.connect(), expiring.connect(), sender.connect()]);
    const connId = renewing.hello?.conn_id;
    const { conversation } = await sender.request("conversation.create", {
      kind: "group",
      user_ids: [bo.userId, carl.userId],
      title: "tokens",
    });

    // Three lifetimes: Bo's socket must stay up throughout, renewing at least twice.
    const started = Date.now();
    let sent = 0;
    while (Date.now() - started < 7_500) {
      await sender.send({ conversation_id: conversation.id, text: `tick ${sent++}` });
      await sleep(500);
    }
    assert.deepEqual(boDrops, [], "the renewing client was never disconnected");
    assert.equal(renewing.hello?.conn_id, connId, "same connection all along");
    assert.ok(renewing.stats.tokenRenewals >= 2, `renewed ${renewing.stats.tokenRenewals} times`);
    assert.ok(boAsks.filter((a) => a.reason === "renew").length >= 2);
    assert.equal((await renewing.request("ping")).type, "pong");

    // Carl was closed with 4401 token_expired at least once, asked for a token and came back.
    assert.ok(carlDrops.length >= 1);
    for (const drop of carlDrops) {
      assert.equal(drop.code, 4401);
      assert.equal(drop.error?.code, "token_expired");
      assert.equal(drop.reconnect, true);
    }
    assert.ok(carlAsks.some((a) => a.reason === "expired"), JSON.stringify(carlAsks));
    await eventually(() => expiring.state === "open", "carl reconnected");
    // …and missed nothing while he was away: every tick exactly once.
    await eventually(() => carlMessages.length === sent, `${sent} messages at carl`);
    assert.deepEqual(
      carlMessages.map((e) => e.message.text),
      Array.from({ length: sent }, (_, i) => `tick ${i}`),
    );
    t.diagnostic(`bo renewed ${renewing.stats.tokenRenewals}×; carl reconnected ${carlDrops.length}× after 4401`);
  } catch (error) {
    t.diagnostic(backend.log().slice(-4_000));
    throw error;
  } finally {
    renewing.close();
    expiring.close();
    sender.close();
  }
});
