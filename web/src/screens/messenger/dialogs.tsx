/** Dialogs of the messenger: find a person, new group, group info, forward, delete. */
import type { Conversation, KintsugiClient, Message, Profile } from "@kintsugi/rt-client";
import { useEffect, useRef, useState } from "preact/hooks";
import { Avatar, Badge, Button, Input, Modal, Spinner, toast } from "../../ui";
import { describeError } from "../../lib/errors";
import { navigate } from "../../lib/router";
import type { Messenger, PresenceStatus } from "./model";
import { conversationTitle, previewText, useSelect } from "./util";

// --- finding people --------------------------------------------------------------------------------

const EMAIL = /^[^\s@]+@[^\s@]+\.[^\s@]+$/;

/**
 * Find people: typing searches your contacts (`user.search`); "Find" (or Enter) looks up an exact
 * email address or @handle (`user.lookup`), which finds anyone.
 */
function PeopleFinder({
  client,
  me,
  action,
  exclude = [],
  autoFocus,
}: {
  client: KintsugiClient;
  me: string | null;
  action: (p: Profile) => { label: string; run: () => void | Promise<void>; disabled?: boolean };
  exclude?: string[];
  autoFocus?: boolean;
}) {
  const [query, setQuery] = useState("");
  const [results, setResults] = useState<Profile[]>([]);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [searched, setSearched] = useState(false);
  const seq = useRef(0);
  const input = useRef<HTMLInputElement | null>(null);

  useEffect(() => {
    if (autoFocus) setTimeout(() => input.current?.focus(), 30);
  }, []);

  // Contacts as you type (debounced); an address or handle waits for "Find".
  useEffect(() => {
    const q = query.trim();
    setError(null);
    if (!q || EMAIL.test(q) || q.length > 64) {
      if (!q) setResults([]);
      return;
    }
    const id = ++seq.current;
    const t = setTimeout(async () => {
      try {
        const { profiles } = await client.request("user.search", { query: q, limit: 10 });
        if (id === seq.current) {
          setResults(profiles);
          setSearched(true);
        }
      } catch (e) {
        if (id === seq.current) setError(describeError(e).message);
      }
    }, 300);
    return () => clearTimeout(t);
  }, [query]);

  const lookup = async () => {
    const q = query.trim();
    if (!q) return;
    const id = ++seq.current;
    setBusy(true);
    setError(null);
    try {
      const fields = EMAIL.test(q) ? { email: q } : { handle: q.startsWith("@") ? q : `@${q}` };
      const { profile } = await client.request("user.lookup", fields);
      if (id !== seq.current) return;
      setResults((list) => [profile, ...list.filter((p) => p.user_id !== profile.user_id)]);
      setSearched(true);
    } catch (e) {
      if (id !== seq.current) return;
      const code = (e as { code?: string }).code;
      setError(code === "not_found" ? `Nobody found with ${EMAIL.test(q) ? "that email address" : "that handle"}.` : describeError(e).message);
    } finally {
      if (id === seq.current) setBusy(false);
    }
  };

  const shown = results.filter((p) => p.user_id !== me && !exclude.includes(p.user_id));
  return (
    <div class="msg-people">
      <form
        class="msg-people__form"
        onSubmit={(event) => {
          event.preventDefault();
          void lookup();
        }}
      >
        <Input
          label="Email, @handle or name"
          hint="Names search your contacts; an exact email or @handle finds anyone."
          value={query}
          inputRef={input}
          autocomplete="off"
          spellcheck={false}
          onInput={(event) => setQuery((event.currentTarget as HTMLInputElement).value)}
          error={error}
        />
        <Button type="submit" variant="secondary" loading={busy} disabled={!query.trim()}>
          Find
        </Button>
      </form>
      {shown.length > 0 ? (
        <ul class="msg-people__list" aria-label="People found">
          {shown.map((p) => {
            const a = action(p);
            return (
              <li key={p.user_id} class="msg-people__item">
                <Avatar name={p.display_name} src={p.avatar?.thumbnail_url ?? null} decorative />
                <span class="msg-people__name">
                  <strong>{p.display_name}</strong>
                  {p.handle && <span class="dim"> @{p.handle}</span>}
                </span>
                <Button size="sm" variant="primary" disabled={a.disabled} onClick={() => void a.run()}>
                  {a.label}
                </Button>
              </li>
            );
          })}
        </ul>
      ) : (
        searched && !busy && !error && query.trim() && <p class="dim msg-people__none">No contacts match. Press Find to look up an exact email or @handle.</p>
      )}
    </div>
  );
}

export function NewChatDialog({ open, onClose, model, me, onNewGroup }: { open: boolean; onClose: () => void; model: Messenger; me: string | null; onNewGroup: () => void }) {
  const [starting, setStarting] = useState<string | null>(null);
  return (
    <Modal open={open} onClose={onClose} title="New chat">
      {open && (
        <>
          <PeopleFinder
            client={model.client}
            me={me}
            autoFocus
            action={(p) => ({
              label: `Message ${p.display_name}`,
              disabled: starting === p.user_id,
              run: async () => {
                setStarting(p.user_id);
                try {
                  const conv = await model.createDirect(p.user_id);
                  onClose();
                  navigate(`/messenger/${conv.id}`);
                } catch (e) {
                  toast.error(e);
                } finally {
                  setStarting(null);
                }
              },
            })}
          />
          <p class="msg-dialog__alt">
            <Button variant="ghost" size="sm" onClick={onNewGroup}>
              + New group instead
            </Button>
          </p>
        </>
      )}
    </Modal>
  );
}

export function NewGroupDialog({ open, onClose, model, me }: { open: boolean; onClose: () => void; model: Messenger; me: string | null }) {
  const [title, setTitle] = useState("");
  const [picked, setPicked] = useState<Profile[]>([]);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    if (open) {
      setTitle("");
      setPicked([]);
      setError(null);
    }
  }, [open]);
  const create = async () => {
    if (!title.trim()) {
      setError("Give the group a name.");
      return;
    }
    setBusy(true);
    try {
      const conv = await model.createGroup(title.trim(), picked.map((p) => p.user_id));
      onClose();
      navigate(`/messenger/${conv.id}`);
    } catch (e) {
      setError(describeError(e).message);
    } finally {
      setBusy(false);
    }
  };
  return (
    <Modal
      open={open}
      onClose={onClose}
      title="New group"
      footer={
        <>
          <Button variant="secondary" onClick={onClose}>
            Cancel
          </Button>
          <Button onClick={() => void create()} loading={busy}>
            Create group
          </Button>
        </>
      }
    >
      {open && (
        <div class="stack">
          <Input label="Group name" value={title} maxLength={128} onInput={(e) => setTitle((e.currentTarget as HTMLInputElement).value)} error={error} />
          {picked.length > 0 && (
            <ul class="msg-chips" aria-label="Members to add">
              {picked.map((p) => (
                <li key={p.user_id} class="msg-chip">
                  {p.display_name}
                  <button type="button" class="msg-chip__remove" aria-label={`Remove ${p.display_name}`} onClick={() => setPicked((list) => list.filter((x) => x.user_id !== p.user_id))}>
                    ✕
                  </button>
                </li>
              ))}
            </ul>
          )}
          <PeopleFinder
            client={model.client}
            me={me}
            exclude={picked.map((p) => p.user_id)}
            action={(p) => ({ label: `Add ${p.display_name}`, run: () => setPicked((list) => [...list, p]) })}
          />
        </div>
      )}
    </Modal>
  );
}

export function InfoDialog({ open, onClose, model, conv, me }: { open: boolean; onClose: () => void; model: Messenger; conv: Conversation; me: string | null }) {
  const presence = useSelect(model.store, (s) => s.presence);
  const [adding, setAdding] = useState(false);
  const [confirmLeave, setConfirmLeave] = useState(false);
  const [confirmRemove, setConfirmRemove] = useState<string | null>(null);
  useEffect(() => {
    setConfirmLeave(false);
    setConfirmRemove(null);
    setAdding(false);
  }, [open]);
  const mine = conv.members.find((m) => m.user_id === me);
  const admin = mine?.role === "owner" || mine?.role === "admin";
  const group = conv.kind === "group";
  const leave = async () => {
    if (!confirmLeave) {
      setConfirmLeave(true);
      return;
    }
    try {
      await model.leave(conv.id);
      onClose();
      navigate("/messenger", { replace: true });
    } catch (e) {
      toast.error(e);
    }
  };
  const remove = async (userId: string) => {
    if (confirmRemove !== userId) {
      setConfirmRemove(userId);
      return;
    }
    setConfirmRemove(null);
    try {
      await model.client.request("conversation.remove_member", { conversation_id: conv.id, user_id: userId });
    } catch (e) {
      toast.error(e);
    }
  };
  return (
    <Modal open={open} onClose={onClose} title={group ? "Group info" : "Conversation info"} accent="cyan">
      {open && (
        <div class="stack">
          <p class="msg-info__title">
            <strong>{conversationTitle(conv, me)}</strong>
            <span class="dim"> · {group ? `${conv.members.length} members` : "Direct chat"}</span>
          </p>
          <ul class="msg-members" aria-label="Members">
            {conv.members.map((m) => {
              const status = presence[m.user_id] as PresenceStatus | undefined;
              return (
                <li key={m.user_id} class="msg-members__item">
                  <Avatar name={m.display_name} status={m.user_id === me ? "online" : status === "online" ? "online" : status === "offline" ? "offline" : null} decorative />
                  <span class="msg-members__name">
                    {m.display_name}
                    {m.user_id === me && " (you)"}
                    {m.handle && <span class="dim"> @{m.handle}</span>}
                  </span>
                  {m.role !== "member" && <Badge tone={m.role === "owner" ? "gold" : "cyan"}>{m.role}</Badge>}
                  {group && admin && m.user_id !== me && m.role !== "owner" && (mine?.role === "owner" || m.role === "member") && (
                    <Button size="sm" variant={confirmRemove === m.user_id ? "danger" : "ghost"} onClick={() => void remove(m.user_id)} aria-label={confirmRemove === m.user_id ? `Confirm removing ${m.display_name}` : `Remove ${m.display_name}`}>
                      {confirmRemove === m.user_id ? "Remove?" : "✕"}
                    </Button>
                  )}
                </li>
              );
            })}
          </ul>
          {group && admin && (
            <div class="stack">
              {!adding ? (
                <Button variant="secondary" onClick={() => setAdding(true)}>
                  + Add members
                </Button>
              ) : (
                <PeopleFinder
                  client={model.client}
                  me={me}
                  autoFocus
                  exclude={conv.members.map((m) => m.user_id)}
                  action={(p) => ({
                    label: `Add ${p.display_name}`,
                    run: async () => {
                      try {
                        await model.addMembers(conv.id, [p.user_id]);
                        toast.success(`${p.display_name} added.`);
                      } catch (e) {
                        toast.error(e);
                      }
                    },
                  })}
                />
              )}
            </div>
          )}
          {group && (
            <Button variant="danger" onClick={() => void leave()}>
              {confirmLeave ? "Confirm: leave group" : "Leave group"}
            </Button>
          )}
        </div>
      )}
    </Modal>
  );
}

export function ForwardDialog({ message, onClose, model, me }: { message: Message | null; onClose: () => void; model: Messenger; me: string | null }) {
  const conversations = useSelect(model.store, (s) => s.conversations);
  const [filter, setFilter] = useState("");
  const [done, setDone] = useState<Set<string>>(new Set());
  const [busy, setBusy] = useState<string | null>(null);
  useEffect(() => {
    setDone(new Set());
    setFilter("");
  }, [message?.id]);
  const list = Object.values(conversations)
    .map((c) => ({ c, title: conversationTitle(c, me) }))
    .filter(({ title }) => title.toLowerCase().includes(filter.trim().toLowerCase()))
    .sort((a, b) => a.title.localeCompare(b.title));
  return (
    <Modal open={!!message} onClose={onClose} title="Forward message">
      {message && (
        <div class="stack">
          <blockquote class="msg-forward__preview">{previewText(message, me)}</blockquote>
          <Input label="Search conversations" value={filter} onInput={(e) => setFilter((e.currentTarget as HTMLInputElement).value)} />
          <ul class="msg-people__list" aria-label="Conversations">
            {list.map(({ c, title }) => (
              <li key={c.id} class="msg-people__item">
                <Avatar name={title} decorative />
                <span class="msg-people__name">{title}</span>
                <Button
                  size="sm"
                  variant={done.has(c.id) ? "secondary" : "primary"}
                  disabled={done.has(c.id)}
                  loading={busy === c.id}
                  aria-label={done.has(c.id) ? `Forwarded to ${title}` : `Forward to ${title}`}
                  onClick={async () => {
                    setBusy(c.id);
                    try {
                      await model.forward(message.id, c.id);
                      setDone((s) => new Set([...s, c.id]));
                    } catch (e) {
                      toast.error(e);
                    } finally {
                      setBusy(null);
                    }
                  }}
                >
                  {done.has(c.id) ? "Sent" : "Forward"}
                </Button>
              </li>
            ))}
          </ul>
        </div>
      )}
    </Modal>
  );
}

export function DeleteDialog({ message, onClose, model, canEveryone }: { message: Message | null; onClose: () => void; model: Messenger; canEveryone: boolean }) {
  const [busy, setBusy] = useState(false);
  const run = async (scope: "me" | "everyone") => {
    if (!message) return;
    setBusy(true);
    try {
      await model.remove(message, scope);
      onClose();
    } catch (e) {
      toast.error(e);
    } finally {
      setBusy(false);
    }
  };
  return (
    <Modal
      open={!!message}
      onClose={onClose}
      title="Delete message"
      role="alertdialog"
      accent="pink"
      footer={
        <>
          <Button variant="secondary" onClick={onClose}>
            Cancel
          </Button>
          <Button variant="danger" onClick={() => void run("me")} disabled={busy}>
            Delete for me
          </Button>
          {canEveryone && (
            <Button variant="pink" onClick={() => void run("everyone")} disabled={busy}>
              Delete for everyone
            </Button>
          )}
        </>
      }
    >
      {message && <p>{canEveryone ? "Delete it only here, or for everyone in the conversation (a “message deleted” note stays)?" : "Delete this message for you? Others still see it."}</p>}
    </Modal>
  );
}

export function Loading({ label }: { label: string }) {
  return (
    <div class="msg-loading">
      <Spinner label={label} />
    </div>
  );
}
