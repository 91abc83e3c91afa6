import type { ChatInfo, MessageInfo } from "@kintsugi/rt-client";
import { useCallback, useEffect, useLayoutEffect, useMemo, useRef, useState } from "preact/hooks";
import { Link, navigate } from "../../lib/router";
import { isKintsugiError, KintsugiError, useClient, useEvent } from "../../lib/session";
import { useStore } from "../../lib/store";
import { describeError } from "../../lib/errors";
import { formatNumber } from "../../lib/format";
import { handleCodeCopy, renderMarkdown } from "../../lib/markdown";
import { useUsage } from "../../lib/usage";
import { Badge, Button, EmptyState, Icon, IconButton, Spinner, TextArea, toast } from "../../ui";
import { answerUsage, streams, upsertChat, type StreamEntry } from "./streams";
import { currentNewChatModel, ModelPicker } from "./ChatList";

const finePointer = () => typeof matchMedia !== "undefined" && matchMedia("(pointer: fine)").matches;
const reducedMotion = () => typeof matchMedia !== "undefined" && matchMedia("(prefers-reduced-motion: reduce)").matches;

/**
 * The typing effect: reveals `text` progressively, catching up faster the further behind it is (so
 * it never lags the real stream by more than a few frames). History and reduced motion show at once.
 */
function useTypewriter(text: string, animate: boolean): string {
  const [shown, setShown] = useState(animate ? 0 : text.length);
  const shownRef = useRef(shown);
  useEffect(() => {
    if (!animate || reducedMotion()) {
      shownRef.current = text.length;
      setShown(text.length);
      return;
    }
    if (shownRef.current >= text.length) {
      if (shownRef.current > text.length) {
        shownRef.current = text.length;
        setShown(text.length);
      }
      return;
    }
    let frame = requestAnimationFrame(function tick() {
      const behind = text.length - shownRef.current;
      if (behind <= 0) return;
      shownRef.current += Math.max(1, Math.ceil(behind / 6));
      setShown(shownRef.current);
      if (shownRef.current < text.length) frame = requestAnimationFrame(tick);
    });
    return () => cancelAnimationFrame(frame);
  }, [text, animate]);
  return text.slice(0, shown);
}

function Markdown({ text, streaming }: { text: string; streaming: boolean }) {
  // Rendering is cheap at chat sizes; the typewriter re-renders at most once per frame.
  const html = useMemo(() => renderMarkdown(text), [text]);
  return (
    <div
      class={`md prose ${streaming ? "caret" : ""}`}
      onClick={(e) => handleCodeCopy(e as unknown as MouseEvent)}
      // Safe: markdown-it with html:false — see lib/markdown.ts.
      dangerouslySetInnerHTML={{ __html: html }}
    />
  );
}

function AnswerBody({ message, entry, animate }: { message: MessageInfo; entry: StreamEntry | undefined; animate: boolean }) {
  const known = entry && entry.lastIndex !== null;
  const text = known ? entry!.text : message.content;
  const streaming = entry ? entry.status === "streaming" : message.status === "streaming";
  // Once animating, keep animating until caught up (also after the answer is done).
  const [typing] = useState(() => animate || streaming);
  const display = useTypewriter(text, typing);
  if (streaming && !display) {
    return (
      <div class="chat-msg__thinking">
        <Spinner size="sm" label="The model is answering" /> <span class="dim">Thinking…</span>
      </div>
    );
  }
  return <Markdown text={display} streaming={streaming} />;
}

interface MessageProps {
  message: MessageInfo;
  entry: StreamEntry | undefined;
  animate: boolean;
  busy: boolean;
  isLastAnswer: boolean;
  onSwitch: (messageId: string) => void;
  onRegenerate: (messageId: string) => void;
  onEdit: (messageId: string, content: string) => Promise<boolean>;
  onStop: (messageId: string) => void;
}

function BranchSwitcher({ message, onSwitch, busy }: { message: MessageInfo; onSwitch: (id: string) => void; busy: boolean }) {
  const siblings = message.siblings ?? [];
  if (siblings.length < 2) return null;
  const index = siblings.indexOf(message.id);
  const what = message.role === "user" ? "question" : "answer";
  return (
    <div class="chat-branch" role="group" aria-label={`Versions of this ${what}`}>
      <IconButton size="sm" label={`Previous version of this ${what}`} icon={<Icon name="left" />} disabled={busy || index <= 0} onClick={() => onSwitch(siblings[index - 1]!)} />
      <span class="chat-branch__pos" aria-live="polite">
        {index + 1}/{siblings.length}
      </span>
      <IconButton size="sm" label={`Next version of this ${what}`} icon={<Icon name="right" />} disabled={busy || index >= siblings.length - 1} onClick={() => onSwitch(siblings[index + 1]!)} />
    </div>
  );
}

function ChatMessage({ message, entry, animate, busy, isLastAnswer, onSwitch, onRegenerate, onEdit, onStop }: MessageProps) {
  const [editing, setEditing] = useState(false);
  const [draft, setDraft] = useState(message.content);
  const [saving, setSaving] = useState(false);
  const status = entry?.status ?? message.status;
  const streaming = status === "streaming";
  const usage = entry?.usage ?? answerUsage(message.id);
  const errorCode = entry?.errorCode ?? message.error_code ?? null;

  if (message.role === "user") {
    return (
      <li class="chat-msg chat-msg--user">
        <div class="chat-msg__who caps">You</div>
        {editing ? (
          <form
            class="stack chat-edit"
            onSubmit={async (e) => {
              e.preventDefault();
              if (!draft.trim()) return;
              setSaving(true);
              const ok = await onEdit(message.id, draft.trim());
              setSaving(false);
              if (ok) setEditing(false);
            }}
          >
            <TextArea label="Edit your question" value={draft} autoGrow onInput={(e) => setDraft(e.currentTarget.value)} />
            <div class="row">
              <Button type="submit" size="sm" loading={saving}>
                Save & ask
              </Button>
              <Button size="sm" variant="secondary" onClick={() => setEditing(false)}>
                Cancel
              </Button>
            </div>
          </form>
        ) : (
          <div class="chat-msg__text prose">{message.content}</div>
        )}
        <div class="chat-msg__tools">
          <BranchSwitcher message={message} onSwitch={onSwitch} busy={busy} />
          {!editing && (
            <IconButton
              size="sm"
              label="Edit question"
              icon={<Icon name="edit" />}
              disabled={busy}
              onClick={() => {
                setDraft(message.content);
                setEditing(true);
              }}
            />
          )}
        </div>
      </li>
    );
  }

  return (
    <li class={`chat-msg chat-msg--assistant ${status === "error" ? "chat-msg--error" : ""}`} aria-busy={streaming || undefined}>
      <div class="chat-msg__who caps">
        {message.model ?? "Assistant"}
        {status === "stopped" && <Badge tone="muted">Stopped</Badge>}
        {status === "error" && <Badge tone="danger">Failed</Badge>}
        {(entry?.finishReason ?? message.finish_reason) === "length" && <Badge tone="muted">Cut at length limit</Badge>}
      </div>
      <AnswerBody message={message} entry={entry} animate={animate} />
      {status === "error" && (
        <p class="chat-msg__error" role="alert">
          {errorCode ? describeError(new KintsugiError({ code: errorCode, message: entry?.errorMessage ?? "The answer failed." })).message : "The answer failed."}
        </p>
      )}
      <div class="chat-msg__tools">
        <BranchSwitcher message={message} onSwitch={onSwitch} busy={busy} />
        {streaming ? (
          <Button size="sm" variant="pink" onClick={() => onStop(message.id)}>
            <Icon name="stop" size={14} /> Stop
          </Button>
        ) : (
          <>
            <IconButton size="sm" label="Regenerate answer" icon={<Icon name="refresh" />} disabled={busy} onClick={() => onRegenerate(message.id)} />
            <IconButton
              size="sm"
              label="Copy answer"
              icon={<Icon name="copy" />}
              onClick={() => {
                void navigator.clipboard?.writeText(entry?.text || message.content).then(() => toast.success("Copied"));
              }}
            />
          </>
        )}
        {usage && !streaming && (
          <span class="chat-msg__usage" title={usage.source === "estimated" ? "Counted locally (estimate)" : "Reported by the provider"}>
            {formatNumber(usage.prompt_tokens)} in · {formatNumber(usage.completion_tokens)} out tokens{usage.source === "estimated" ? " (est.)" : ""}
          </span>
        )}
      </div>
    </li>
  );
}

function Composer({ onSend, streamingId, onStop, disabled, autoFocus, placeholder }: { onSend: (text: string) => Promise<boolean>; streamingId: string | null; onStop: () => void; disabled?: boolean; autoFocus?: boolean; placeholder?: string }) {
  const [text, setText] = useState("");
  const [sending, setSending] = useState(false);
  const ref = useRef<HTMLTextAreaElement | null>(null);
  const usage = useUsage();
  const exhausted = usage && usage.limit >= 0 && usage.used >= usage.limit;
  useEffect(() => {
    if (autoFocus && finePointer()) ref.current?.focus();
  }, [autoFocus]);
  const submit = async (event?: Event) => {
    event?.preventDefault();
    const value = text.trim();
    if (!value || sending || streamingId) return;
    setSending(true);
    const ok = await onSend(value);
    setSending(false);
    if (ok) setText("");
    ref.current?.focus();
  };
  return (
    <form class="chat-composer" onSubmit={submit}>
      {exhausted && (
        <p class="chat-composer__limit" role="status">
          Token limit reached for this window. <Link href="/usage">See usage</Link> · <Link href="/pricing">Upgrade</Link>
        </p>
      )}
      <div class="chat-composer__row">
        <TextArea
          label="Message"
          hideLabel
          placeholder={placeholder ?? (finePointer() ? "Ask anything…  (Enter to send, Shift+Enter for a new line)" : "Ask anything…")}
          value={text}
          rows={1}
          autoGrow
          maxRows={8}
          textareaRef={ref}
          disabled={disabled}
          onInput={(e) => setText(e.currentTarget.value)}
          onKeyDown={(e) => {
            if (e.key === "Enter" && !e.shiftKey && !e.isComposing && finePointer()) {
              e.preventDefault();
              void submit();
            }
          }}
        />
        {streamingId ? (
          <Button variant="pink" onClick={onStop} class="chat-composer__send">
            <Icon name="stop" size={14} /> Stop
          </Button>
        ) : (
          <Button type="submit" loading={sending} disabled={disabled || !text.trim()} class="chat-composer__send">
            Send
          </Button>
        )}
      </div>
    </form>
  );
}

/** /chat with no chat open: pick a model, ask — a chat is created on the first message. */
export function NewChat() {
  const client = useClient();
  const send = async (text: string) => {
    try {
      const { chat } = await client.request("chat.create", { model: currentNewChatModel(), title: null });
      upsertChat(chat);
      // Send first, then open it: the stream registry follows the answer from its first delta.
      await client.request("chat.send", { chat_id: chat.id, content: text, parent_id: null });
      navigate(`/chat/${chat.id}`, { replace: true });
      return true;
    } catch (error) {
      toast.error(error);
      return false;
    }
  };
  return (
    <div class="chat-thread">
      <header class="chat-thread__head">
        <Link href="/chat" class="chat-back" aria-label="Back to chats">
          <Icon name="left" />
        </Link>
        <h2 class="chat-thread__title">New chat</h2>
      </header>
      <div class="chat-thread__scroll">
        <div class="chat-empty">
          <EmptyState title="Ask anything" icon="◆">
            Answers stream in as they are written. Markdown and code are rendered; you can stop, regenerate, or edit a question to branch.
          </EmptyState>
          <div class="chat-new-model">
            <ModelPicker />
          </div>
        </div>
      </div>
      <Composer onSend={send} streamingId={null} onStop={() => undefined} autoFocus />
    </div>
  );
}

export function ChatThread({ chatId, onDeleted }: { chatId: string; onDeleted: () => void }) {
  const client = useClient();
  const allStreams = useStore(streams);
  const [chat, setChat] = useState<ChatInfo | null>(null);
  const [messages, setMessages] = useState<MessageInfo[]>([]);
  const [hasMore, setHasMore] = useState(false);
  const [loading, setLoading] = useState(true);
  const [missing, setMissing] = useState(false);
  const [busy, setBusy] = useState(false);
  const scroller = useRef<HTMLDivElement>(null);
  const stick = useRef(true);
  // Answers that started while this thread was open get the typing effect; history does not.
  const live = useRef(new Set<string>());

  const apply = useCallback((reply: { chat: ChatInfo; messages: MessageInfo[]; has_more: boolean }) => {
    setChat(reply.chat);
    setMessages(reply.messages);
    setHasMore(reply.has_more);
    upsertChat(reply.chat);
  }, []);

  const refetch = useCallback(async () => {
    try {
      apply(await client.request("chat.get", { chat_id: chatId, before: null, limit: 50 }));
      setMissing(false);
    } catch (error) {
      if (isKintsugiError(error) && error.code === "not_found") setMissing(true);
      else toast.error(error);
    } finally {
      setLoading(false);
    }
  }, [client, chatId, apply]);

  useEffect(() => {
    setLoading(true);
    void refetch();
  }, [refetch]);
  useEvent("resync", () => void refetch());
  useEvent("connected", ({ resuming }) => {
    if (!resuming) void refetch();
  });

  // Keep the branch in step with answers started anywhere (this tab, another tab, another device).
  const refetchSoon = useRef<ReturnType<typeof setTimeout> | null>(null);
  const scheduleRefetch = (ms: number) => {
    if (refetchSoon.current) clearTimeout(refetchSoon.current);
    refetchSoon.current = setTimeout(() => void refetch(), ms);
  };
  useEffect(() => () => void (refetchSoon.current && clearTimeout(refetchSoon.current)), []);
  useEvent("chat.started", (e) => {
    if (e.chat_id !== chatId) return;
    live.current.add(e.message_id);
    setMessages((list) => {
      const next = [...list];
      const cut = (id: string | null) => {
        const at = id ? next.findIndex((m) => m.id === id) : -1;
        next.splice(at + 1);
      };
      if (e.user_message) {
        cut(e.user_message.parent_id);
        next.push(e.user_message);
      } else {
        cut(e.parent_id);
      }
      next.push({ id: e.message_id, parent_id: e.parent_id, role: "assistant", content: "", status: "streaming", created_at: new Date().toISOString(), model: e.model, siblings: [e.message_id] });
      return next;
    });
    stick.current = true;
    scheduleRefetch(300); // siblings ("2/3") of the new versions
  });
  useEvent("chat.done", (e) => e.chat_id === chatId && scheduleRefetch(200));
  useEvent("chat.error", (e) => e.chat_id === chatId && scheduleRefetch(200));
  useEvent("chat.updated", ({ chat: updated }) => {
    if (updated.id !== chatId) return;
    setChat(updated);
    if (chat && updated.active_leaf_id !== chat.active_leaf_id) scheduleRefetch(100);
  });
  useEvent("chat.deleted", ({ chat_id }) => {
    if (chat_id !== chatId) return;
    toast("This chat was deleted.");
    onDeleted();
  });

  const streamingMessage = messages.find((m) => (allStreams.get(m.id)?.status ?? m.status) === "streaming") ?? null;

  // Auto-scroll while the reader is at the bottom.
  const lastText = messages.length ? allStreams.get(messages[messages.length - 1]!.id)?.text.length ?? 0 : 0;
  useLayoutEffect(() => {
    const el = scroller.current;
    if (el && stick.current) el.scrollTop = el.scrollHeight;
  }, [messages, lastText]);
  useEffect(() => {
    if (!streamingMessage) return;
    // the typewriter keeps growing the text after the stream's frames: follow it for a while
    let frame = 0;
    const follow = () => {
      const el = scroller.current;
      if (el && stick.current) el.scrollTop = el.scrollHeight;
      frame = requestAnimationFrame(follow);
    };
    frame = requestAnimationFrame(follow);
    return () => cancelAnimationFrame(frame);
  }, [streamingMessage?.id]);

  const act = async (fn: () => Promise<unknown>) => {
    setBusy(true);
    try {
      await fn();
      return true;
    } catch (error) {
      toast.error(error);
      return false;
    } finally {
      setBusy(false);
    }
  };

  const send = (text: string) => act(() => client.request("chat.send", { chat_id: chatId, content: text, parent_id: null }));
  const stop = (messageId: string) => void act(() => client.request("chat.stop", { message_id: messageId }));
  const regenerate = (messageId: string) => void act(() => client.request("chat.regenerate", { message_id: messageId }));
  const edit = (messageId: string, content: string) => act(() => client.request("chat.edit", { message_id: messageId, content }));
  const switchTo = (messageId: string) => void act(async () => apply(await client.request("chat.switch", { message_id: messageId })));
  const loadOlder = () =>
    void act(async () => {
      const first = messages[0];
      if (!first) return;
      const el = scroller.current;
      const before = el ? el.scrollHeight - el.scrollTop : 0;
      const reply = await client.request("chat.get", { chat_id: chatId, before: first.id, limit: 50 });
      setMessages((list) => [...reply.messages.filter((m) => !list.some((x) => x.id === m.id)), ...list]);
      setHasMore(reply.has_more);
      stick.current = false;
      requestAnimationFrame(() => {
        if (el) el.scrollTop = el.scrollHeight - before;
      });
    });

  const lastAnswerId = [...messages].reverse().find((m) => m.role === "assistant")?.id;

  return (
    <div class="chat-thread">
      <header class="chat-thread__head">
        <Link href="/chat" class="chat-back" aria-label="Back to chats">
          <Icon name="left" />
        </Link>
        <h2 class="chat-thread__title" title={chat?.title}>
          {chat?.title || (loading ? "Loading…" : "Untitled chat")}
        </h2>
        {chat && <Badge tone="cyan">{chat.model}</Badge>}
      </header>
      <div
        class="chat-thread__scroll"
        ref={scroller}
        onScroll={(e) => {
          const el = e.currentTarget;
          stick.current = el.scrollHeight - el.scrollTop - el.clientHeight < 80;
        }}
      >
        {loading && !messages.length ? (
          <div class="page-loading">
            <Spinner size="lg" label="Loading chat" />
          </div>
        ) : missing ? (
          <div class="chat-empty">
            <EmptyState title="Chat not found" icon="?" action={<Link href="/chat">Back to chats</Link>}>
              It was deleted, or it is not yours.
            </EmptyState>
          </div>
        ) : (
          <>
            {hasMore && (
              <div class="chat-older">
                <Button size="sm" variant="secondary" onClick={loadOlder} disabled={busy}>
                  Load earlier messages
                </Button>
              </div>
            )}
            {!messages.length && (
              <div class="chat-empty">
                <EmptyState title="Empty chat" icon="◆">
                  Ask the first question below.
                </EmptyState>
              </div>
            )}
            <ol class="chat-msgs" aria-label="Messages">
              {messages.map((m) => (
                <ChatMessage
                  key={m.id}
                  message={m}
                  entry={allStreams.get(m.id)}
                  animate={live.current.has(m.id)}
                  busy={busy || !!streamingMessage}
                  isLastAnswer={m.id === lastAnswerId}
                  onSwitch={switchTo}
                  onRegenerate={regenerate}
                  onEdit={edit}
                  onStop={stop}
                />
              ))}
            </ol>
            <div class="sr-only" aria-live="polite">
              {streamingMessage ? "The model is answering." : ""}
            </div>
          </>
        )}
      </div>
      {!missing && <Composer onSend={send} streamingId={streamingMessage?.id ?? null} onStop={() => streamingMessage && stop(streamingMessage.id)} disabled={loading && !messages.length} />}
    </div>
  );
}
