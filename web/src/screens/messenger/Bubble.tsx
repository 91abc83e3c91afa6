/** One message of a timeline: text, attachments, quote, reactions, receipt, actions; and pending ones. */
import type { Attachment, Conversation, KintsugiClient, Message } from "@kintsugi/rt-client";
import { useEffect, useRef, useState } from "preact/hooks";
import type { PendingMessage, LocalAttachment } from "./model";
import { useAttachmentLinks, renew } from "./media";
import { formatBytes } from "../../lib/errors";
import { attachmentLabel, callText, memberName, previewText, REACTIONS, shortTime } from "./util";

export interface BubbleActions {
  reply(m: Message): void;
  edit(m: Message): void;
  remove(m: Message): void;
  forward(m: Message): void;
  pin(m: Message, pinned: boolean): void;
  react(m: Message, emoji: string): void;
  jumpTo(id: string): void;
  callBack(media: "audio" | "video"): void;
}

interface BubbleProps {
  client: KintsugiClient;
  message: Message;
  conv: Conversation;
  me: string | null;
  /** First of a run by the same sender (shows the name in groups). */
  first: boolean;
  quoted: Message | null | undefined;
  receipt: "sent" | "seen" | null;
  seenBy: number;
  canPin: boolean;
  canDeleteForEveryone: boolean;
  actions: BubbleActions;
  highlighted: boolean;
}

export function Bubble(props: BubbleProps) {
  const { message: m, conv, me, actions } = props;
  const mine = m.sender_id === me;
  const [menu, setMenu] = useState(false);
  const row = useRef<HTMLDivElement>(null);
  const swipe = useSwipeToReply(row, () => actions.reply(m), () => setMenu(true), !m.deleted && !m.call);

  if (m.call) {
    return (
      <div class="msg-call" data-testid="call-entry" id={`msg-${m.id}`} data-outcome={m.call.outcome}>
        <span class={`msg-call__icon ${m.call.outcome === "missed" ? "pink" : "cyan"}`} aria-hidden="true">
          {m.call.media === "video" ? "🎥" : "☎"}
        </span>
        <span class="msg-call__text">{callText(m.call, mine)}</span>
        <time class="msg-call__time dim" dateTime={m.created_at}>
          {shortTime(m.created_at)}
        </time>
        <button type="button" class="msg-call__back" onClick={() => actions.callBack(m.call!.media)}>
          Call back
        </button>
      </div>
    );
  }

  // An agent's answer has no sender: it is named by its agent, with the tools it used.
  const name = m.agent ? `${m.agent.name} (agent)` : memberName(conv, m.sender_id);
  const label = `${mine ? "You" : name}, ${shortTime(m.created_at)}`;
  return (
    <div
      ref={row}
      id={`msg-${m.id}`}
      class={`msg-row ${mine ? "msg-row--mine" : "msg-row--theirs"} ${props.highlighted ? "msg-row--highlight" : ""}`}
      style={swipe.offset ? { transform: `translateX(${swipe.offset}px)` } : undefined}
      {...swipe.handlers}
    >
      {swipe.offset > 20 && (
        <span class="msg-row__swipe" aria-hidden="true">
          ↩
        </span>
      )}
      <article
        class={`msg ${mine ? "msg--mine" : "msg--theirs"} ${m.deleted ? "msg--deleted" : ""} ${m.pinned ? "msg--pinned" : ""}`}
        data-testid="message"
        data-message-id={m.id}
        data-seq={m.seq}
        data-status={mine ? props.receipt ?? "sent" : undefined}
        aria-label={label}
      >
        {(m.agent || (conv.kind === "group" && !mine && props.first)) && <p class="msg__author">{name}</p>}
        {m.agent && (m.agent.tools_used ?? []).length > 0 && (
          <p class="msg__tools">Used: {(m.agent.tools_used ?? []).map((t) => `${t.tool}${t.status === "ok" ? "" : " (failed)"}`).join(", ")}</p>
        )}
        {m.forwarded_from && !m.deleted && <p class="msg__forwarded">↪ Forwarded</p>}
        {m.reply_to && !m.deleted && (
          <button type="button" class="msg__quote" onClick={() => actions.jumpTo(m.reply_to!)} aria-label={`Reply to: ${props.quoted ? previewText(props.quoted, me) : "original message"}. Show it`}>
            <span class="msg__quote-name">{props.quoted ? (props.quoted.sender_id === me ? "You" : memberName(conv, props.quoted.sender_id)) : "Reply"}</span>
            <span class="msg__quote-text">{props.quoted ? previewText(props.quoted, me) : "Original message"}</span>
          </button>
        )}
        {m.deleted ? (
          <p class="msg__text msg__text--deleted">Message deleted</p>
        ) : (
          <>
            {!!m.attachments?.length && (
              <div class="msg__media">
                {m.attachments.map((a) => (
                  <AttachmentView key={a.id} client={props.client} attachment={a} />
                ))}
              </div>
            )}
            {m.text && <p class="msg__text">{m.text}</p>}
          </>
        )}
        <footer class="msg__meta">
          {m.pinned && <span aria-label="Pinned">📌</span>}
          {m.edited_at && !m.deleted && <span class="msg__edited">edited</span>}
          <time dateTime={m.created_at}>{shortTime(m.created_at)}</time>
          {mine && !m.deleted && <Receipt state={props.receipt ?? "sent"} seenBy={props.seenBy} group={conv.kind === "group"} />}
        </footer>
        {!!m.reactions?.length && !m.deleted && (
          <ul class="msg__reactions" aria-label="Reactions">
            {m.reactions.map((r) => {
              const minePressed = !!me && r.user_ids.includes(me);
              return (
                <li key={r.emoji}>
                  <button
                    type="button"
                    class={`msg__reaction ${minePressed ? "msg__reaction--mine" : ""}`}
                    aria-pressed={minePressed}
                    aria-label={`${r.emoji} ${r.user_ids.length}${minePressed ? ", you reacted" : ""}`}
                    title={r.user_ids.map((u) => (u === me ? "You" : memberName(conv, u))).join(", ")}
                    onClick={() => actions.react(m, r.emoji)}
                  >
                    <span aria-hidden="true">{r.emoji}</span> <span aria-hidden="true">{r.user_ids.length}</span>
                  </button>
                </li>
              );
            })}
          </ul>
        )}
      </article>
      {!m.deleted && (
        <ActionsMenu
          open={menu}
          setOpen={setMenu}
          message={m}
          mine={mine}
          canPin={props.canPin}
          canDeleteForEveryone={props.canDeleteForEveryone}
          actions={actions}
        />
      )}
    </div>
  );
}

function Receipt({ state, seenBy, group }: { state: "sent" | "seen" | "pending" | "waiting" | "failed"; seenBy: number; group: boolean }) {
  const text =
    state === "seen" ? (group && seenBy ? `Seen by ${seenBy}` : "Seen") : state === "sent" ? "Sent" : state === "failed" ? "Not sent" : state === "waiting" ? "Waiting for network" : "Sending";
  const glyph = state === "seen" ? "✓✓" : state === "sent" ? "✓" : state === "failed" ? "!" : "◷";
  return (
    <span class={`msg__receipt msg__receipt--${state}`} data-testid="receipt" data-state={state} aria-label={text} title={text}>
      <span aria-hidden="true">{glyph}</span>
    </span>
  );
}

/** The "…" menu of a message: reactions, reply, edit, forward, pin, delete. */
function ActionsMenu(props: {
  open: boolean;
  setOpen: (open: boolean) => void;
  message: Message;
  mine: boolean;
  canPin: boolean;
  canDeleteForEveryone: boolean;
  actions: BubbleActions;
}) {
  const { open, setOpen, message: m, actions } = props;
  const box = useRef<HTMLDivElement>(null);
  const button = useRef<HTMLButtonElement>(null);
  useEffect(() => {
    if (!open) return;
    const first = box.current?.querySelector<HTMLElement>("[role=menuitem]");
    first?.focus();
    const outside = (event: PointerEvent) => {
      if (!box.current?.contains(event.target as Node) && event.target !== button.current) setOpen(false);
    };
    document.addEventListener("pointerdown", outside);
    return () => document.removeEventListener("pointerdown", outside);
  }, [open]);
  const close = (focus = true) => {
    setOpen(false);
    if (focus) button.current?.focus();
  };
  const run = (fn: () => void) => () => {
    close(false);
    fn();
  };
  const onKey = (event: KeyboardEvent) => {
    const items = [...(box.current?.querySelectorAll<HTMLElement>("[role=menuitem]") ?? [])];
    const index = items.indexOf(document.activeElement as HTMLElement);
    if (event.key === "Escape") {
      event.preventDefault();
      event.stopPropagation();
      close();
    } else if (event.key === "ArrowDown" || event.key === "ArrowRight") {
      event.preventDefault();
      items[(index + 1) % items.length]?.focus();
    } else if (event.key === "ArrowUp" || event.key === "ArrowLeft") {
      event.preventDefault();
      items[(index - 1 + items.length) % items.length]?.focus();
    } else if (event.key === "Home") {
      event.preventDefault();
      items[0]?.focus();
    } else if (event.key === "End") {
      event.preventDefault();
      items[items.length - 1]?.focus();
    } else if (event.key === "Tab") {
      close(false);
    }
  };
  const editable = props.mine && !!m.text && !m.forwarded_from;
  return (
    <div class="msg-actions">
      <button
        ref={button}
        type="button"
        class="msg-actions__toggle"
        aria-label="Message actions"
        aria-haspopup="menu"
        aria-expanded={open}
        onClick={() => setOpen(!open)}
      >
        <span aria-hidden="true">⋯</span>
      </button>
      {open && (
        <div ref={box} class={`msg-menu ${props.mine ? "msg-menu--mine" : ""}`} role="menu" aria-label="Message actions" onKeyDown={onKey}>
          <div class="msg-menu__reactions" role="group" aria-label="React">
            {REACTIONS.map((emoji) => (
              <button key={emoji} type="button" role="menuitem" class="msg-menu__emoji" aria-label={`React with ${emoji}`} onClick={run(() => actions.react(m, emoji))}>
                {emoji}
              </button>
            ))}
          </div>
          <button type="button" role="menuitem" onClick={run(() => actions.reply(m))}>
            ↩ Reply
          </button>
          {editable && (
            <button type="button" role="menuitem" onClick={run(() => actions.edit(m))}>
              ✎ Edit
            </button>
          )}
          <button type="button" role="menuitem" onClick={run(() => actions.forward(m))}>
            ↪ Forward
          </button>
          {props.canPin && (
            <button type="button" role="menuitem" onClick={run(() => actions.pin(m, !m.pinned))}>
              📌 {m.pinned ? "Unpin" : "Pin"}
            </button>
          )}
          {m.text && (
            <button type="button" role="menuitem" onClick={run(() => void navigator.clipboard?.writeText(m.text ?? "").catch(() => undefined))}>
              ❐ Copy text
            </button>
          )}
          <button type="button" role="menuitem" class="msg-menu__danger" onClick={run(() => actions.remove(m))}>
            ✕ Delete
          </button>
        </div>
      )}
    </div>
  );
}

/** Swipe right on a message (touch) to reply; a long press opens its menu. */
function useSwipeToReply(
  ref: { current: HTMLElement | null },
  onReply: () => void,
  onLongPress: () => void,
  enabled: boolean,
) {
  const [offset, setOffset] = useState(0);
  const start = useRef<{ x: number; y: number; id: number; horizontal: boolean | null; timer: ReturnType<typeof setTimeout> | null } | null>(null);
  const end = () => {
    const s = start.current;
    if (s?.timer) clearTimeout(s.timer);
    start.current = null;
    setOffset(0);
  };
  if (!enabled) return { offset: 0, handlers: {} };
  return {
    offset,
    handlers: {
      onPointerDown: (e: PointerEvent) => {
        if (e.pointerType !== "touch") return;
        // Leave the left edge to the "swipe back to the list" gesture.
        if (e.clientX < 28) return;
        const timer = setTimeout(() => {
          if (start.current && !start.current.horizontal) {
            start.current = null;
            onLongPress();
          }
        }, 550);
        start.current = { x: e.clientX, y: e.clientY, id: e.pointerId, horizontal: null, timer };
      },
      onPointerMove: (e: PointerEvent) => {
        const s = start.current;
        if (!s || s.id !== e.pointerId) return;
        const dx = e.clientX - s.x;
        const dy = e.clientY - s.y;
        if (s.horizontal === null && (Math.abs(dx) > 8 || Math.abs(dy) > 8)) {
          s.horizontal = Math.abs(dx) > Math.abs(dy) * 1.5 && dx > 0;
          if (s.timer) clearTimeout(s.timer);
          s.timer = null;
          if (!s.horizontal) {
            start.current = null;
            return;
          }
          ref.current?.setPointerCapture?.(e.pointerId);
        }
        if (s.horizontal) setOffset(Math.max(0, Math.min(dx, 96)));
      },
      onPointerUp: (e: PointerEvent) => {
        const s = start.current;
        if (s && s.horizontal && e.clientX - s.x > 64) onReply();
        end();
      },
      onPointerCancel: end,
    },
  };
}

// --- attachments -----------------------------------------------------------------------------------

export function AttachmentView({ client, attachment: a }: { client: KintsugiClient; attachment: Attachment }) {
  const links = useAttachmentLinks(client, a);
  const onError = () => renew(client, a.id);
  const type = a.content_type;
  const name = a.filename ?? attachmentLabel(a.kind, type).replace(/^\S+\s/, "");
  if ((a.kind === "image" || type.startsWith("image/")) && (links.thumbnailUrl || links.url)) {
    const ratio = a.width && a.height ? `${a.width} / ${a.height}` : undefined;
    return (
      <a class="msg-img" href={links.url ?? "#"} target="_blank" rel="noopener noreferrer" aria-label={`Open photo ${a.filename ?? ""}`.trim()}>
        <img src={links.thumbnailUrl ?? links.url ?? ""} alt={a.filename ? `Photo: ${a.filename}` : "Photo"} loading="lazy" decoding="async" style={ratio ? { aspectRatio: ratio } : undefined} onError={onError} />
      </a>
    );
  }
  if (type.startsWith("audio/") || a.kind === "voice") {
    return (
      <div class="msg-audio">
        <span class="msg-audio__label">
          {a.kind === "voice" ? "🎤 Voice message" : `🎵 ${name}`}
          {a.duration_ms ? ` · ${Math.round(a.duration_ms / 1000)} s` : ""}
        </span>
        {links.url && <audio controls preload="metadata" src={links.url} onError={onError} aria-label={a.kind === "voice" ? "Voice message" : name} />}
      </div>
    );
  }
  if (type.startsWith("video/")) {
    return links.url ? <video class="msg-video" controls preload="metadata" playsInline src={links.url} onError={onError} aria-label={`Video ${name}`} /> : null;
  }
  return (
    <a class="msg-file" href={links.url ?? "#"} target="_blank" rel="noopener noreferrer" download={a.filename ?? true}>
      <span aria-hidden="true">📎</span>
      <span class="msg-file__name">{name}</span>
      <span class="msg-file__size dim">{formatBytes(a.size)}</span>
    </a>
  );
}

function LocalAttachmentView({ a }: { a: LocalAttachment }) {
  if (a.kind === "image" && a.previewUrl) return <img class="msg-img msg-img--local" src={a.previewUrl} alt={`Photo: ${a.name}`} />;
  if (a.kind === "voice" && a.previewUrl) {
    return (
      <div class="msg-audio">
        <span class="msg-audio__label">🎤 Voice message{a.durationMs ? ` · ${Math.round(a.durationMs / 1000)} s` : ""}</span>
        <audio controls src={a.previewUrl} aria-label="Voice message" />
      </div>
    );
  }
  if (a.kind === "video" && a.previewUrl) return <video class="msg-video" controls playsInline src={a.previewUrl} aria-label={`Video ${a.name}`} />;
  return (
    <span class="msg-file">
      <span aria-hidden="true">📎</span>
      <span class="msg-file__name">{a.name}</span>
      <span class="msg-file__size dim">{formatBytes(a.size)}</span>
    </span>
  );
}

/** A message the outbox still holds (or whose upload runs or failed). */
export function PendingBubble({ p, quoted, me, onRetry, onDiscard }: { p: PendingMessage; quoted: Message | null | undefined; me: string | null; onRetry: () => void; onDiscard: () => void }) {
  const state = p.state === "failed" ? "failed" : p.state === "waiting" || p.state === "retrying" ? "waiting" : "pending";
  const status =
    p.state === "uploading"
      ? `Uploading ${Math.round(p.progress * 100)} %`
      : p.state === "failed"
        ? `Not sent: ${p.error ?? "error"}`
        : p.state === "waiting"
          ? "Waiting for network"
          : p.state === "retrying"
            ? "Retrying…"
            : "Sending…";
  return (
    <div class="msg-row msg-row--mine" id={`pending-${p.client_msg_id}`}>
      <article class={`msg msg--mine msg--pending ${p.state === "failed" ? "msg--failed" : ""}`} data-testid="message" data-status={state} data-client-msg-id={p.client_msg_id} aria-label={`You, ${status}`}>
        {p.reply_to && (
          <div class="msg__quote">
            <span class="msg__quote-name">Reply</span>
            <span class="msg__quote-text">{quoted ? previewText(quoted, me) : "Original message"}</span>
          </div>
        )}
        {!!p.attachments.length && (
          <div class="msg__media">
            {p.attachments.map((a, i) => (
              <LocalAttachmentView key={i} a={a} />
            ))}
          </div>
        )}
        {!p.attachments.length && p.mediaIds.length > 0 && <p class="msg__text dim">📎 {p.mediaIds.length} attachment(s)</p>}
        {p.text && <p class="msg__text">{p.text}</p>}
        <footer class="msg__meta">
          <span class="msg__status">{status}</span>
          <Receipt state={state} seenBy={0} group={false} />
        </footer>
        {p.state === "failed" && (
          <div class="msg__retry">
            <button type="button" class="btn btn--pink btn--sm" onClick={onRetry}>
              Retry
            </button>
            <button type="button" class="btn btn--ghost btn--sm" onClick={onDiscard}>
              Discard
            </button>
          </div>
        )}
      </article>
    </div>
  );
}
