/** One conversation: header (call buttons), pinned message, the timeline with history paging, typing, composer. */
import type { Conversation, Message } from "@kintsugi/rt-client";
import { Fragment } from "preact";
import { useCallback, useEffect, useLayoutEffect, useMemo, useRef, useState } from "preact/hooks";
import { Avatar, Button, IconButton, toast } from "../../ui";
import { Link, navigate } from "../../lib/router";
import { callsFor } from "../calls/manager";
import { Bubble, PendingBubble, type BubbleActions } from "./Bubble";
import { Composer } from "./Composer";
import { DeleteDialog, ForwardDialog, InfoDialog, Loading } from "./dialogs";
import type { Messenger, PendingMessage, Thread as ThreadState } from "./model";
import { conversationTitle, dayLabel, memberName, otherMember, prefersReducedMotion, previewText, useSelect } from "./util";

const EMPTY: PendingMessage[] = [];
const NO_TYPING: Record<string, number> = {};

export function Thread({ model, conv, me, titleLevel }: { model: Messenger; conv: Conversation; me: string | null; titleLevel: 1 | 2 }) {
  const cid = conv.id;
  const thread = useSelect(model.store, (s) => s.threads[cid]) as ThreadState | undefined;
  const pending = useSelect(model.store, (s) => s.pending[cid] ?? EMPTY);
  const typing = useSelect(model.store, (s) => s.typing[cid] ?? NO_TYPING);
  const presence = useSelect(model.store, (s) => s.presence);
  const calls = callsFor(model.client);
  const activeCall = useSelect(calls.store, (s) => s.active);

  const [replyTo, setReplyTo] = useState<Message | null>(null);
  const [editing, setEditing] = useState<Message | null>(null);
  const [forwarding, setForwarding] = useState<Message | null>(null);
  const [deleting, setDeleting] = useState<Message | null>(null);
  const [info, setInfo] = useState(false);
  const [highlight, setHighlight] = useState<string | null>(null);
  const [atBottom, setAtBottom] = useState(true);
  const textarea = useRef<HTMLTextAreaElement | null>(null);
  const log = useRef<HTMLDivElement>(null);

  const messages = thread?.messages ?? [];
  const byId = useMemo(() => new Map(messages.map((m) => [m.id, m])), [messages]);

  useEffect(() => {
    void model.open(cid);
    setReplyTo(null);
    setEditing(null);
    setAtBottom(true);
  }, [cid]);

  // --- scrolling: stick to the bottom, keep the position when older pages arrive ---------------
  const anchor = useRef<{ height: number; top: number } | null>(null);
  const firstId = messages[0]?.id;
  const lastKey = `${messages[messages.length - 1]?.id ?? ""}:${pending.length}`;
  const stick = useRef(true);
  const opened = useRef<string | null>(null);

  useLayoutEffect(() => {
    const el = log.current;
    if (!el) return;
    if (anchor.current) {
      el.scrollTop = el.scrollHeight - anchor.current.height + anchor.current.top;
      anchor.current = null;
    }
  }, [firstId]);

  useLayoutEffect(() => {
    const el = log.current;
    if (!el || !thread?.loaded) return;
    if (opened.current !== cid) {
      opened.current = cid;
      el.scrollTop = el.scrollHeight;
      stick.current = true;
      return;
    }
    if (stick.current) el.scrollTop = el.scrollHeight;
  }, [lastKey, thread?.loaded, cid]);

  // Content that grows after it was laid out (a reaction, an image or audio player loading, the
  // composer growing) keeps the view at the bottom when it was there.
  const inner = useRef<HTMLDivElement>(null);
  useEffect(() => {
    const el = log.current;
    if (!el || typeof ResizeObserver === "undefined") return;
    const observer = new ResizeObserver(() => {
      if (stick.current && !anchor.current) el.scrollTop = el.scrollHeight;
    });
    observer.observe(el);
    if (inner.current) observer.observe(inner.current);
    return () => observer.disconnect();
  }, [cid]);

  const loadOlder = useCallback(() => {
    const el = log.current;
    const t = model.thread(cid);
    if (!el || t.loading || !t.hasMore || !t.loaded) return;
    anchor.current = { height: el.scrollHeight, top: el.scrollTop };
    void model.loadOlder(cid);
  }, [cid]);

  const onScroll = () => {
    const el = log.current;
    if (!el) return;
    const bottom = el.scrollHeight - el.scrollTop - el.clientHeight < 48;
    stick.current = bottom;
    if (bottom !== atBottom) setAtBottom(bottom);
    if (el.scrollTop < 160) loadOlder();
  };

  // A first page shorter than the view: load more until it scrolls (or there is no more).
  useEffect(() => {
    const el = log.current;
    if (el && thread?.loaded && !thread.loading && thread.hasMore && el.scrollHeight <= el.clientHeight + 20) loadOlder();
  }, [thread?.loaded, thread?.loading, messages.length]);

  // --- read receipts: read what is on screen while the page is visible ---------------------------
  useEffect(() => {
    model.visible = cid;
    return () => {
      if (model.visible === cid) model.visible = null;
    };
  }, [cid]);
  useEffect(() => {
    const read = () => {
      if (document.visibilityState === "visible" && stick.current && model.thread(cid).loaded) model.markRead(cid);
    };
    read();
    document.addEventListener("visibilitychange", read);
    window.addEventListener("focus", read);
    return () => {
      document.removeEventListener("visibilitychange", read);
      window.removeEventListener("focus", read);
    };
  }, [cid, lastKey, atBottom, thread?.loaded, conv.unread]);

  // --- actions ---------------------------------------------------------------------------------
  const mine = conv.members.find((m) => m.user_id === me);
  const isAdmin = mine?.role === "owner" || mine?.role === "admin";
  const canPin = conv.kind === "direct" || isAdmin;
  const jumpTo = (id: string) => {
    const el = document.getElementById(`msg-${id}`);
    if (!el) {
      toast("That message is further back: scroll up to load it.", { tone: "info" });
      return;
    }
    el.scrollIntoView({ block: "center", behavior: prefersReducedMotion() ? "auto" : "smooth" });
    setHighlight(id);
    setTimeout(() => setHighlight((h) => (h === id ? null : h)), 1600);
  };
  const wrap = (p: Promise<unknown>) => p.catch((e) => toast.error(e));
  const actions: BubbleActions = {
    reply: (m) => {
      setEditing(null);
      setReplyTo(m);
    },
    edit: (m) => {
      setReplyTo(null);
      setEditing(m);
    },
    remove: (m) => setDeleting(m),
    forward: (m) => setForwarding(m),
    pin: (m, pinned) => void wrap(model.pin(m.id, pinned)),
    react: (m, emoji) => void wrap(model.react(m.id, emoji)),
    jumpTo,
    callBack: (media) => void startCall(media),
  };

  const startCall = async (media: "audio" | "video") => {
    calls.unlockAudio();
    try {
      await calls.start(cid, media);
    } catch (e) {
      toast.error(e);
    }
  };

  // --- receipts: the highest read mark among the others ------------------------------------------
  const others = conv.members.filter((m) => m.user_id !== me);
  const seenCount = (seq: number) => others.filter((m) => (m.read_seq ?? 0) >= seq).length;

  const title = conversationTitle(conv, me);
  const other = otherMember(conv, me);
  const status = other ? presence[other.user_id] : undefined;
  const subtitle = conv.kind === "group" ? `${conv.members.length} members` : status === "online" ? "Online" : status === "offline" ? "Offline" : "";
  const typers = Object.keys(typing).filter((u) => u !== me);
  const typingText = typers.length === 0 ? "" : typers.length === 1 ? `${memberName(conv, typers[0])} is typing…` : typers.length === 2 ? `${memberName(conv, typers[0])} and ${memberName(conv, typers[1])} are typing…` : `${typers.length} people are typing…`;
  const pinned = [...messages].reverse().find((m) => m.pinned && !m.deleted);
  const inCall = !!activeCall && activeCall.phase !== "ended";
  const Title = titleLevel === 1 ? "h1" : "h2";
  const canDeleteEveryone = (m: Message | null) => !!m && (m.sender_id === me || (conv.kind === "group" && isAdmin));

  // --- swipe from the left edge back to the list (phones) ------------------------------------------
  const edge = useRef<{ x: number; y: number; id: number } | null>(null);
  const swipeBack = {
    onPointerDown: (e: PointerEvent) => {
      if (e.pointerType === "touch" && e.clientX < 28) edge.current = { x: e.clientX, y: e.clientY, id: e.pointerId };
    },
    onPointerUp: (e: PointerEvent) => {
      const s = edge.current;
      edge.current = null;
      if (s && s.id === e.pointerId && e.clientX - s.x > 80 && Math.abs(e.clientY - s.y) < 60) navigate("/messenger");
    },
    onPointerCancel: () => (edge.current = null),
  };

  let lastDay = "";
  let lastSender: string | null = null;
  return (
    <div class="msg-thread" {...swipeBack}>
      <header class="msg-thread__header">
        <Link href="/messenger" class="msg-back" aria-label="Back to conversations">
          <span aria-hidden="true">←</span>
        </Link>
        <Avatar name={title} status={other ? (status === "online" ? "online" : status === "offline" ? "offline" : null) : null} decorative />
        <div class="msg-thread__title">
          <Title class="msg-thread__name" id="msg-thread-title">
            {title}
          </Title>
          {subtitle && <p class={`msg-thread__sub ${status === "online" ? "cyan" : "dim"}`}>{subtitle}</p>}
        </div>
        <div class="msg-thread__actions">
          <IconButton label="Start audio call" icon="☎" disabled={inCall} onClick={() => void startCall("audio")} />
          <IconButton label="Start video call" icon="🎥" disabled={inCall} onClick={() => void startCall("video")} />
          <IconButton label={conv.kind === "group" ? "Group info" : "Conversation info"} icon={<span class="msg-info-icon">i</span>} onClick={() => setInfo(true)} />
        </div>
      </header>
      {pinned && (
        <div class="msg-pinned">
          <button type="button" class="msg-pinned__jump" onClick={() => jumpTo(pinned.id)} aria-label={`Pinned message: ${previewText(pinned, me)}. Show it`}>
            <span class="msg-pinned__label caps">📌 Pinned</span>
            <span class="msg-pinned__text">{previewText(pinned, me)}</span>
          </button>
          {canPin && <IconButton label="Unpin message" icon="✕" size="sm" onClick={() => void wrap(model.pin(pinned.id, false))} />}
        </div>
      )}
      <div class="msg-log" ref={log} onScroll={onScroll} role="log" aria-label={`Messages with ${title}`} aria-live="polite" aria-relevant="additions" tabIndex={0}>
        <div class="msg-log__inner" ref={inner}>
        {thread?.loading && <Loading label="Loading older messages" />}
        {thread?.error && (
          <div class="msg-log__error" role="alert">
            <p>Could not load messages: {thread.error}</p>
            <Button size="sm" variant="secondary" onClick={() => void model.retry(cid)}>
              Try again
            </Button>
          </div>
        )}
        {thread?.loaded && !thread.hasMore && (
          <p class="msg-log__start dim">{messages.length ? "This is the beginning of the conversation." : "No messages yet. Say hello!"}</p>
        )}
        {messages.map((m) => {
          const day = dayLabel(m.created_at);
          const newDay = day !== lastDay;
          lastDay = day;
          const first = newDay || lastSender !== m.sender_id || !!m.call;
          lastSender = m.call ? null : m.sender_id;
          const mineMsg = m.sender_id === me;
          const seen = mineMsg ? seenCount(m.seq) : 0;
          return (
            <Fragment key={m.id}>
              {newDay && (
                <p class="msg-day" role="separator">
                  <span>{day}</span>
                </p>
              )}
              <Bubble
                client={model.client}
                message={m}
                conv={conv}
                me={me}
                first={first}
                quoted={m.reply_to ? byId.get(m.reply_to) ?? null : null}
                receipt={mineMsg ? (seen > 0 ? "seen" : "sent") : null}
                seenBy={seen}
                canPin={canPin}
                canDeleteForEveryone={canDeleteEveryone(m)}
                actions={actions}
                highlighted={highlight === m.id}
              />
            </Fragment>
          );
        })}
        {pending.map((p) => (
          <PendingBubble
            key={p.client_msg_id}
            p={p}
            me={me}
            quoted={p.reply_to ? byId.get(p.reply_to) : null}
            onRetry={() => model.retrySend(cid, p.client_msg_id)}
            onDiscard={() => model.discard(cid, p.client_msg_id)}
          />
        ))}
        </div>
      </div>
      <div class="msg-typing" data-testid="typing" aria-live="polite" hidden={!typingText}>
        {typingText && (
          <>
            <span class="msg-typing__dots" aria-hidden="true">
              <i />
              <i />
              <i />
            </span>
            {typingText}
          </>
        )}
      </div>
      {!atBottom && (
        <button
          type="button"
          class="msg-jump"
          onClick={() => {
            const el = log.current;
            if (el) el.scrollTo({ top: el.scrollHeight, behavior: prefersReducedMotion() ? "auto" : "smooth" });
          }}
        >
          ↓ Latest{conv.unread ? ` (${conv.unread})` : ""}
        </button>
      )}
      <Composer
        model={model}
        conv={conv}
        me={me}
        replyTo={replyTo}
        editing={editing}
        onCancelReply={() => setReplyTo(null)}
        onCancelEdit={() => setEditing(null)}
        textareaRef={textarea}
      />
      <InfoDialog open={info} onClose={() => setInfo(false)} model={model} conv={conv} me={me} />
      <ForwardDialog message={forwarding} onClose={() => setForwarding(null)} model={model} me={me} />
      <DeleteDialog message={deleting} onClose={() => setDeleting(null)} model={model} canEveryone={canDeleteEveryone(deleting)} />
    </div>
  );
}
