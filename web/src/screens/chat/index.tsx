/**
 * AI chat: /chat (the list, and a new-chat composer on wide screens) and /chat/:chatId (a thread).
 */
import { useEffect, useState } from "preact/hooks";
import type { RouteProps } from "../../routes";
import { useClient, useFeatures, useOnResync } from "../../lib/session";
import { navigate } from "../../lib/router";
import { EmptyState, toast } from "../../ui";
import { loadChats, loadModels, wireChat } from "./streams";
import { ChatListPane } from "./ChatList";
import { ChatThread, NewChat } from "./ChatThread";
import "./chat.css";

export default function Chat({ params }: RouteProps) {
  const client = useClient();
  const features = useFeatures();
  const chatId = params.chatId ?? null;
  const [ready, setReady] = useState(false);

  useEffect(() => {
    wireChat(client);
    setReady(true);
    void loadModels(client).catch(() => undefined);
  }, [client]);

  useOnResync(() => {
    loadChats(client).catch((error) => toast.error(error));
  });

  const off = features.chat === "off";
  return (
    <section class="screen screen--full" aria-labelledby="chat-title">
      <h1 id="chat-title" class="sr-only">
        AI chat
      </h1>
      <div class={`split ${chatId ? "split--detail" : ""}`}>
        <ChatListPane activeId={chatId} />
        <div class="split__detail">
          {off ? (
            <div class="chat-empty">
              <EmptyState title="AI chat is off" icon="◆">
                This server has no model provider configured (OPENAI_API_KEY), so chats cannot be answered.
              </EmptyState>
            </div>
          ) : !ready ? null : chatId && chatId !== "new" ? (
            <ChatThread key={chatId} chatId={chatId} onDeleted={() => navigate("/chat", { replace: true })} />
          ) : (
            <NewChat />
          )}
        </div>
      </div>
    </section>
  );
}
