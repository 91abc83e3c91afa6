import type { ChatInfo, SearchHit } from "@kintsugi/rt-client";
import type { ComponentChildren } from "preact";
import { useEffect, useRef, useState } from "preact/hooks";
import { Link, navigate } from "../../lib/router";
import { useClient } from "../../lib/session";
import { useStore } from "../../lib/store";
import { formatTime } from "../../lib/format";
import { tierLabel } from "../../lib/errors";
import { Button, Icon, IconButton, Input, Modal, Select, Spinner, toast } from "../../ui";
import { chatList, loadChats, models, newChatModel, upsertChat } from "./streams";

/**
 * A search snippet (`chat.search`): the server sends escaped text with `<b>` around matches. It is
 * still not trusted as HTML: parsed inertly and rebuilt from text nodes and <b> only.
 */
function Snippet({ html }: { html: string }) {
  const doc = new DOMParser().parseFromString(`<body>${html}</body>`, "text/html");
  const parts: ComponentChildren[] = [];
  doc.body.childNodes.forEach((node, i) => {
    if (node.nodeType === Node.TEXT_NODE) parts.push(node.textContent);
    else if (node.nodeName === "B") parts.push(<mark key={i}>{node.textContent}</mark>);
    else parts.push(node.textContent);
  });
  return <span class="chat-hit__snippet">{parts}</span>;
}

export function ModelPicker() {
  const state = useStore(models);
  const picked = useStore(newChatModel);
  if (!state.loaded) return null;
  if (!state.models.length) return <p class="muted chat-model-note">No models available.</p>;
  const value = picked && state.models.some((m) => m.id === picked && m.allowed) ? picked : state.defaultModel ?? state.models[0]!.id;
  return (
    <Select
      label="Model for new chats"
      value={value}
      onChange={(e) => newChatModel.set(e.currentTarget.value)}
      options={state.models.map((m) => ({
        value: m.id,
        label: m.allowed ? m.label : `${m.label} — needs ${tierLabel(m.tier_required ?? "premium")}`,
        disabled: !m.allowed,
      }))}
    />
  );
}

export function currentNewChatModel(): string | null {
  const state = models.get();
  const picked = newChatModel.get();
  if (picked && state.models.some((m) => m.id === picked && m.allowed)) return picked;
  return state.defaultModel;
}

export function ChatListPane({ activeId }: { activeId: string | null }) {
  const client = useClient();
  const list = useStore(chatList);
  const [query, setQuery] = useState("");
  const [hits, setHits] = useState<SearchHit[] | null>(null);
  const [searching, setSearching] = useState(false);
  const [renaming, setRenaming] = useState<ChatInfo | null>(null);
  const [deleting, setDeleting] = useState<ChatInfo | null>(null);
  const [title, setTitle] = useState("");
  const [busy, setBusy] = useState(false);
  const seq = useRef(0);

  useEffect(() => {
    const q = query.trim();
    if (!q) {
      setHits(null);
      setSearching(false);
      return;
    }
    const mine = ++seq.current;
    setSearching(true);
    const timer = setTimeout(() => {
      client.request("chat.search", { query: q, limit: 20 }).then(
        ({ results }) => {
          if (mine === seq.current) {
            setHits(results);
            setSearching(false);
          }
        },
        (error) => {
          if (mine === seq.current) setSearching(false);
          toast.error(error);
        },
      );
    }, 250);
    return () => clearTimeout(timer);
  }, [query, client]);

  const rename = async (event: Event) => {
    event.preventDefault();
    if (!renaming || !title.trim()) return;
    setBusy(true);
    try {
      const { chat } = await client.request("chat.rename", { chat_id: renaming.id, title: title.trim() });
      upsertChat(chat);
      setRenaming(null);
    } catch (error) {
      toast.error(error);
    } finally {
      setBusy(false);
    }
  };

  const remove = async () => {
    if (!deleting) return;
    setBusy(true);
    try {
      await client.request("chat.delete", { chat_id: deleting.id });
      chatList.set((s) => ({ ...s, chats: s.chats.filter((c) => c.id !== deleting.id) }));
      if (activeId === deleting.id) navigate("/chat", { replace: true });
      toast.success("Chat deleted");
      setDeleting(null);
    } catch (error) {
      toast.error(error);
    } finally {
      setBusy(false);
    }
  };

  return (
    <aside class="split__list chat-list" aria-label="Chats">
      <div class="chat-list__top">
        <Button block onClick={() => navigate("/chat/new")} aria-current={activeId === null || activeId === "new" ? "page" : undefined}>
          <Icon name="plus" size={16} /> New chat
        </Button>
        <Input label="Search chats" hideLabel type="search" placeholder="Search chats…" value={query} onInput={(e) => setQuery(e.currentTarget.value)} />
      </div>
      <div class="chat-list__scroll">
        {hits !== null ? (
          <div>
            <h2 class="chat-list__heading">{searching ? "Searching…" : `${hits.length} result${hits.length === 1 ? "" : "s"}`}</h2>
            <ul class="chat-list__items" aria-label="Search results">
              {hits.map((hit) => (
                <li key={`${hit.chat_id}-${hit.message_id ?? "t"}`}>
                  <Link href={`/chat/${hit.chat_id}`} class="chat-hit">
                    <span class="chat-item__title">{hit.chat_title || "Untitled"}</span>
                    <Snippet html={hit.snippet} />
                  </Link>
                </li>
              ))}
            </ul>
          </div>
        ) : (
          <>
            {!list.loaded && list.loading && (
              <div class="page-loading">
                <Spinner label="Loading chats" />
              </div>
            )}
            {list.loaded && list.chats.length === 0 && <p class="chat-list__none muted">No chats yet. Ask anything to start one.</p>}
            <ul class="chat-list__items">
              {list.chats.map((chat) => (
                <li key={chat.id} class={`chat-item ${chat.id === activeId ? "chat-item--active" : ""}`}>
                  <Link href={`/chat/${chat.id}`} class="chat-item__link" aria-current={chat.id === activeId ? "page" : undefined}>
                    <span class="chat-item__title">{chat.title || "Untitled chat"}</span>
                    <span class="chat-item__meta">
                      {chat.model} · {formatTime(chat.updated_at)}
                    </span>
                  </Link>
                  <IconButton
                    label={`Rename ${chat.title || "chat"}`}
                    icon={<Icon name="edit" />}
                    size="sm"
                    onClick={() => {
                      setTitle(chat.title);
                      setRenaming(chat);
                    }}
                  />
                  <IconButton label={`Delete ${chat.title || "chat"}`} icon={<Icon name="trash" />} size="sm" onClick={() => setDeleting(chat)} />
                </li>
              ))}
            </ul>
            {list.nextCursor && (
              <div class="chat-list__more">
                <Button variant="secondary" size="sm" loading={list.loading} onClick={() => loadChats(client, true).catch((e) => toast.error(e))}>
                  Load more
                </Button>
              </div>
            )}
          </>
        )}
      </div>
      <div class="chat-list__bottom">
        <ModelPicker />
      </div>

      <Modal open={!!renaming} onClose={() => setRenaming(null)} title="Rename chat">
        <form class="stack" onSubmit={rename}>
          <Input label="Title" value={title} maxLength={200} required onInput={(e) => setTitle(e.currentTarget.value)} />
          <div class="row" style={{ justifyContent: "flex-end" }}>
            <Button variant="secondary" onClick={() => setRenaming(null)}>
              Cancel
            </Button>
            <Button type="submit" loading={busy}>
              Save
            </Button>
          </div>
        </form>
      </Modal>
      <Modal
        open={!!deleting}
        onClose={() => setDeleting(null)}
        title="Delete chat?"
        role="alertdialog"
        accent="pink"
        footer={
          <>
            <Button variant="secondary" onClick={() => setDeleting(null)}>
              Cancel
            </Button>
            <Button variant="pink" loading={busy} onClick={remove}>
              Delete
            </Button>
          </>
        }
      >
        <p class="prose">
          “{deleting?.title || "Untitled chat"}” and all its messages will be deleted for good. A streaming answer in it is stopped first.
        </p>
      </Modal>
    </aside>
  );
}
