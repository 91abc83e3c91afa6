import WebSocket from "ws"; // Node 20; browsers, React Native and Node 22+ have a global WebSocket
import { AuthApi, AuthSession, KintsugiClient } from "../src/index.js"; // "@kintsugi/rt-client"

const server = process.env.KINTSUGI_URL ?? "http://localhost:8080";
const api = new AuthApi(server);
const session = new AuthSession(api, await api.login({ email: "ann@example.com", password: "correct horse battery" }));

const client = new KintsugiClient({
  url: server, // http://host:port → ws://host:port/ws
  token: session.accessToken,
  getToken: session.getToken, // renews before expires_at, and after a 4401
  WebSocket,
});
client.on("message.new", ({ message }) => console.log(`${message.sender_id}: ${message.text}`));
client.on("resync", () => console.log("missed too much: refetch (conversation.sync, chat.list)"));
await client.connect();

// Ask the model and print its answer as it streams (chat.send → chat.delta… → chat.done).
const { chat } = await client.request("chat.create", { title: "Lviv" });
for await (const piece of client.streamChat({ chat_id: chat.id, content: "What should I see in Lviv?" })) {
  process.stdout.write(piece);
}

// Send a message through the outbox: kept until the server has it, retried with the same client_msg_id.
const { profile } = await client.request("user.lookup", { email: "bo@example.com" });
const { conversation } = await client.request("conversation.create", { kind: "direct", user_ids: [profile.user_id] });
const { message } = await client.send({ conversation_id: conversation.id, text: "Kava o 5?" });
console.log("sent as seq", message.seq);
client.close();
