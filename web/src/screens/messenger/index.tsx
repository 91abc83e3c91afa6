/**
 * The messenger: the conversation list (unread counts, last message, presence) and the open
 * conversation (./Thread). Split view on wide screens; one pane at a time on phones
 * (`/messenger` = the list, `/messenger/:id` = the conversation, with Back and an edge swipe).
 */
import type { Conversation } from "@kintsugi/rt-client";
import { useEffect, useMemo, useState } from "preact/hooks";
import type { RouteProps } from "../../routes";
import { useClient, useMe, useOnResync } from "../../lib/session";
import { Link } from "../../lib/router";
import { Avatar, Button, EmptyState, IconButton } from "../../ui";
import { messengerFor, type Messenger as Model } from "./model";
import { Thread } from "./Thread";
import { Loading, NewChatDialog, NewGroupDialog } from "./dialogs";
import { conversationTitle, listTime, otherMember, previewText, useMedia, useSelect } from "./util";
import "./messenger.css";

export default function Messenger({ params }: RouteProps) {
  const client = useClient();
  const model = messengerFor(client);
  const meProfile = useMe();
  const me = meProfile?.user_id ?? client.hello?.user_id ?? null;
  const cid = params.conversationId ?? null;
  const wide = useMedia("(min-width: 1024px)");
  const conversations = useSelect(model.store, (s) => s.conversations);
  const loaded = useSelect(model.store, (s) => s.listLoaded);
  const conv = cid ? conversations[cid] : undefined;
  const [newChat, setNewChat] = useState(false);
  const [newGroup, setNewGroup] = useState(false);
  const [missing, setMissing] = useState(false);

  useOnResync(() => void model.loadList());

  useEffect(() => {
    setMissing(false);
    if (!cid || conv) return;
    let alive = true;
    void model.loadList().then(async () => {
      if (!alive || model.store.get().conversations[cid]) return;
      const found = await model.fetchConversation(cid);
      if (alive && !found) setMissing(true);
    });
    return () => {
      alive = false;
    };
  }, [cid, !!conv]);

  const detail = !!cid;
  const titleInList = wide || !detail;
  return (
    <section class={`screen screen--full msg-screen`} aria-labelledby={titleInList ? "msg-title" : "msg-thread-title"}>
      <div class={`split ${detail ? "split--detail" : ""}`}>
        <nav class="split__list msg-list" aria-label="Conversations">
          <header class="msg-list__header">
            {titleInList ? (
              <h1 id="msg-title" class="msg-list__title">
                Messenger
              </h1>
            ) : (
              <h2 class="msg-list__title">Messenger</h2>
            )}
            <div class="row msg-list__buttons">
              <IconButton label="New group" icon="⁂" onClick={() => setNewGroup(true)} />
              <IconButton label="New chat" icon="+" variant="primary" onClick={() => setNewChat(true)} />
            </div>
          </header>
          <ConversationList model={model} me={me} active={cid} loaded={loaded} conversations={conversations} onNew={() => setNewChat(true)} />
        </nav>
        <div class="split__detail msg-detail">
          {conv ? (
            <Thread key={conv.id} model={model} conv={conv} me={me} titleLevel={titleInList ? 2 : 1} />
          ) : cid ? (
            missing ? (
              <EmptyState title="Conversation not found" icon="?">
                <p>It does not exist, or you are not in it any more.</p>
                <p>
                  <Link href="/messenger">Back to conversations</Link>
                </p>
              </EmptyState>
            ) : (
              <Loading label="Loading conversation" />
            )
          ) : (
            <EmptyState title="Pick a conversation" icon="✉" action={<Button onClick={() => setNewChat(true)}>New chat</Button>}>
              Choose one on the left, or find someone by email or @handle.
            </EmptyState>
          )}
        </div>
      </div>
      <NewChatDialog
        open={newChat}
        onClose={() => setNewChat(false)}
        model={model}
        me={me}
        onNewGroup={() => {
          setNewChat(false);
          setNewGroup(true);
        }}
      />
      <NewGroupDialog open={newGroup} onClose={() => setNewGroup(false)} model={model} me={me} />
    </section>
  );
}

function activity(c: Conversation): string {
  return c.last_message?.created_at ?? c.created_at;
}

function ConversationList({
  model,
  me,
  active,
  loaded,
  conversations,
  onNew,
}: {
  model: Model;
  me: string | null;
  active: string | null;
  loaded: boolean;
  conversations: Record<string, Conversation>;
  onNew: () => void;
}) {
  const presence = useSelect(model.store, (s) => s.presence);
  const typing = useSelect(model.store, (s) => s.typing);
  const pending = useSelect(model.store, (s) => s.pending);
  const error = useSelect(model.store, (s) => s.listError);
  const [filter, setFilter] = useState("");
  useEffect(() => void model.loadList(), []);
  const list = useMemo(
    () =>
      Object.values(conversations)
        .sort((a, b) => activity(b).localeCompare(activity(a)))
        .filter((c) => !filter.trim() || conversationTitle(c, me).toLowerCase().includes(filter.trim().toLowerCase())),
    [conversations, filter, me],
  );
  if (!loaded) {
    if (error) {
      return (
        <div class="msg-list__empty" role="alert">
          <p>Could not load conversations: {error}</p>
          <Button variant="secondary" onClick={() => void model.loadList(true)}>
            Try again
          </Button>
        </div>
      );
    }
    return <Loading label="Loading conversations" />;
  }
  return (
    <>
      <div class="msg-list__search">
        <label class="sr-only" for="msg-filter">
          Search conversations
        </label>
        <input id="msg-filter" class="input" type="search" placeholder="Search" value={filter} onInput={(e) => setFilter((e.currentTarget as HTMLInputElement).value)} />
      </div>
      {list.length === 0 ? (
        <div class="msg-list__empty">
          <p class="muted">{filter ? "No conversation matches." : "No conversations yet."}</p>
          {!filter && <Button onClick={onNew}>Start a conversation</Button>}
        </div>
      ) : (
        <ul class="msg-list__items">
          {list.map((c) => {
            const title = conversationTitle(c, me);
            const other = otherMember(c, me);
            const status = other ? presence[other.user_id] : undefined;
            const someoneTyping = Object.keys(typing[c.id] ?? {}).some((u) => u !== me);
            const waiting = (pending[c.id] ?? []).length;
            const failed = (pending[c.id] ?? []).some((p) => p.state === "failed");
            const unread = c.unread;
            const label = [title, c.kind === "group" ? "group" : status === "online" ? "online" : null, unread ? `${unread} unread` : null].filter(Boolean).join(", ");
            return (
              <li key={c.id}>
                <Link
                  href={`/messenger/${c.id}`}
                  class={`msg-item ${active === c.id ? "msg-item--active" : ""} ${unread ? "msg-item--unread" : ""}`}
                  aria-current={active === c.id ? "page" : undefined}
                  aria-label={label}
                  data-testid="conversation"
                >
                  <Avatar name={title} status={other ? (status === "online" ? "online" : status === "offline" ? "offline" : null) : null} decorative />
                  <span class="msg-item__body">
                    <span class="msg-item__top">
                      <span class="msg-item__name">
                        {c.kind === "group" && <span aria-hidden="true">⁂ </span>}
                        {title}
                      </span>
                      <time class="msg-item__time" dateTime={activity(c)}>
                        {listTime(activity(c))}
                      </time>
                    </span>
                    <span class="msg-item__bottom">
                      <span class={`msg-item__preview ${someoneTyping ? "cyan" : ""}`}>
                        {someoneTyping ? "typing…" : failed ? "⚠ Not sent" : waiting ? `◷ ${waiting} waiting to send` : previewText(c.last_message, me, c)}
                      </span>
                      {unread > 0 && (
                        <span class="msg-item__unread" data-testid="unread">
                          {unread > 99 ? "99+" : unread}
                        </span>
                      )}
                    </span>
                  </span>
                </Link>
              </li>
            );
          })}
        </ul>
      )}
    </>
  );
}
