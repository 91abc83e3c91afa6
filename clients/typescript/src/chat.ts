/**
 * Streaming an AI answer (docs/chat.md): `chat.send`, then `chat.delta` pieces (with `index`), a
 * `chat.snapshot` after a reconnect mid-answer, and `chat.done` (or `chat.error`) with the whole text.
 */
import type { KintsugiClient, ReplyOf } from "./client.js";
import { KintsugiError } from "./errors.js";
import type { Requests, ServerEvents } from "./generated/protocol.js";

export interface ChatStream extends AsyncIterable<string> {
  /** The `ok` reply of `chat.send` (`user_message_id`, `message_id`). */
  readonly reply: Promise<ReplyOf<"chat.send">>;
  /** The finished answer; rejects with a KintsugiError on `chat.error` (its `details.content` keeps the partial text). */
  readonly done: Promise<ServerEvents["chat.done"]>;
  /** The text so far. */
  readonly text: string;
  /** Ask the server to stop the answer (`chat.stop`); it then ends with `finish_reason: "stopped"`. */
  stop(): Promise<void>;
}

type ChatFrame = ServerEvents["chat.delta"] | ServerEvents["chat.snapshot"] | ServerEvents["chat.done"] | ServerEvents["chat.error"];

/** Send `chat.send` and stream the answer's text: `for await (const piece of streamChat(...))`. */
export function streamChat(client: KintsugiClient, fields: Requests["chat.send"]["fields"]): ChatStream {
  let messageId: string | null = null;
  const early: ChatFrame[] = [];
  let text = "";
  let lastIndex = -1;
  let finished = false;
  const pieces: string[] = [];
  let wake: (() => void) | null = null;
  let failure: unknown = null;

  let resolveDone!: (frame: ServerEvents["chat.done"]) => void;
  let rejectDone!: (error: unknown) => void;
  const done = new Promise<ServerEvents["chat.done"]>((resolve, reject) => {
    resolveDone = resolve;
    rejectDone = reject;
  });
  done.catch(() => undefined); // the iterator reports it too

  const push = (piece: string) => {
    if (!piece) return;
    text += piece;
    pieces.push(piece);
  };
  const finish = (error: unknown) => {
    finished = true;
    failure = error;
    unsubscribe();
  };
  const apply = (frame: ChatFrame) => {
    if (finished) return;
    if (frame.type === "chat.delta") {
      if (frame.index <= lastIndex) return; // already had it (a snapshot covered it)
      lastIndex = frame.index;
      push(frame.text);
    } else if (frame.type === "chat.snapshot") {
      if (frame.index <= lastIndex) return;
      lastIndex = frame.index;
      if (frame.text.startsWith(text)) push(frame.text.slice(text.length));
      else text = frame.text; // cannot happen with a consistent server; trust the snapshot
    } else if (frame.type === "chat.done") {
      if (frame.content.startsWith(text)) push(frame.content.slice(text.length));
      finish(null);
      resolveDone(frame);
    } else {
      const error = new KintsugiError({
        code: frame.code,
        message: frame.message,
        details: { content: frame.content, message_id: frame.message_id },
        request: "chat.send",
      });
      if (frame.content.startsWith(text)) push(frame.content.slice(text.length));
      finish(error);
      rejectDone(error);
    }
    wake?.();
  };
  const onFrame = (frame: ChatFrame) => {
    if (frame.chat_id !== fields.chat_id) return;
    if (messageId === null) early.push(frame);
    else if (frame.message_id === messageId) apply(frame);
  };
  const offs = [
    client.on("chat.delta", onFrame),
    client.on("chat.snapshot", onFrame),
    client.on("chat.done", onFrame),
    client.on("chat.error", onFrame),
  ];
  const unsubscribe = () => offs.forEach((off) => off());

  const reply = client.request("chat.send", fields);
  reply.then(
    (ok) => {
      messageId = ok.message_id;
      for (const frame of early.splice(0)) if (frame.message_id === messageId) apply(frame);
    },
    (error: unknown) => {
      finish(error);
      rejectDone(error);
      wake?.();
    },
  );

  return {
    reply,
    done,
    get text() {
      return text;
    },
    async stop() {
      const ok = await reply;
      await client.request("chat.stop", { message_id: ok.message_id });
    },
    async *[Symbol.asyncIterator]() {
      try {
        for (;;) {
          while (pieces.length) yield pieces.shift()!;
          if (finished) {
            if (failure) throw failure;
            return;
          }
          await new Promise<void>((resolve) => (wake = resolve));
          wake = null;
        }
      } finally {
        if (!finished) unsubscribe();
      }
    },
  };
}
