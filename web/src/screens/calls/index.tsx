/** /calls: the call history (`call.history`, newest first, paged by `before`), with call-back buttons. */
import type { CallInfo } from "@kintsugi/rt-client";
import { useEffect, useState } from "preact/hooks";
import type { RouteProps } from "../../routes";
import { useClient, useEvent, useMe, useOnResync } from "../../lib/session";
import { Link } from "../../lib/router";
import { describeError } from "../../lib/errors";
import { Button, EmptyState, IconButton, Spinner, toast } from "../../ui";
import { messengerFor } from "../messenger/model";
import { conversationTitle, formatCallDuration, useSelect } from "../messenger/util";
import { callsFor } from "./manager";
import "./calls.css";

const PAGE = 30;

function outcome(call: CallInfo, me: string | null): { text: string; tone: "pink" | "cyan" | "muted" | "gold" } {
  const outgoing = call.caller_id === me;
  if (call.state === "ringing") return { text: outgoing ? "Ringing…" : "Ringing", tone: "gold" };
  if (call.state === "active") return { text: "In progress", tone: "gold" };
  switch (call.end_reason) {
    case "hangup":
    case "time_limit":
      if (call.answered_at) return { text: call.duration_s != null ? formatCallDuration(call.duration_s) : "Completed", tone: "cyan" };
      return { text: "Ended", tone: "muted" };
    case "missed":
      return { text: outgoing ? "No answer" : "Missed", tone: outgoing ? "muted" : "pink" };
    case "declined":
      return { text: "Declined", tone: "muted" };
    case "busy":
      return { text: "Busy", tone: "muted" };
    case "cancelled":
      return { text: outgoing ? "Cancelled" : "Missed", tone: outgoing ? "muted" : "pink" };
    case "failed":
      return { text: "Failed", tone: "pink" };
    default:
      return { text: "Ended", tone: "muted" };
  }
}

function when(iso: string): string {
  const d = new Date(iso);
  const now = new Date();
  const time = d.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" });
  if (d.toDateString() === now.toDateString()) return `Today ${time}`;
  const y = new Date(now);
  y.setDate(now.getDate() - 1);
  if (d.toDateString() === y.toDateString()) return `Yesterday ${time}`;
  return `${d.toLocaleDateString(undefined, { month: "short", day: "numeric", ...(d.getFullYear() !== now.getFullYear() ? { year: "numeric" } : {}) })} ${time}`;
}

export default function Calls(_props: RouteProps) {
  const client = useClient();
  const me = useMe()?.user_id ?? client.hello?.user_id ?? null;
  const model = messengerFor(client);
  const manager = callsFor(client);
  const conversations = useSelect(model.store, (s) => s.conversations);
  const active = useSelect(manager.store, (s) => s.active);
  const [calls, setCalls] = useState<CallInfo[]>([]);
  const [hasMore, setHasMore] = useState(false);
  const [loading, setLoading] = useState(true);
  const [error, setError] = useState<string | null>(null);

  const load = async (before: string | null) => {
    setLoading(true);
    setError(null);
    try {
      const reply = await client.request("call.history", { before, limit: PAGE }, { retry: true });
      setCalls((list) => {
        const base = before ? list : [];
        const ids = new Set(base.map((c) => c.id));
        return [...base, ...reply.calls.filter((c) => !ids.has(c.id))];
      });
      setHasMore(reply.has_more);
    } catch (e) {
      setError(describeError(e).message);
    } finally {
      setLoading(false);
    }
  };

  useOnResync(() => {
    void load(null);
    void model.loadList();
  });
  // A call that ends (or starts ringing) changes the first page.
  const refresh = () => setTimeout(() => void load(null), 300);
  useEvent("call.ended", refresh);
  useEvent("call.ringing", refresh);
  useEffect(() => {
    for (const c of calls) if (!conversations[c.conversation_id]) void model.fetchConversation(c.conversation_id);
  }, [calls]);

  const inCall = !!active && active.phase !== "ended";
  const call = async (conversationId: string, media: "audio" | "video") => {
    manager.unlockAudio();
    try {
      await manager.start(conversationId, media);
    } catch (e) {
      toast.error(e);
    }
  };
  const join = async (c: CallInfo) => {
    manager.unlockAudio();
    try {
      await manager.join(c.id, c.media, c.conversation_id);
    } catch (e) {
      toast.error(e);
    }
  };

  return (
    <section class="screen screen--narrow call-history" aria-labelledby="calls-title">
      <h1 id="calls-title" class="screen-title">
        Calls
      </h1>
      {error && (
        <div class="call-history__error" role="alert">
          <p>Could not load your calls: {error}</p>
          <Button variant="secondary" onClick={() => void load(null)}>
            Try again
          </Button>
        </div>
      )}
      {!loading && !error && calls.length === 0 ? (
        <EmptyState title="No calls yet" icon="☎" action={<Link href="/messenger" class="btn btn--primary btn--md">Open messenger</Link>}>
          Start an audio or video call from a conversation.
        </EmptyState>
      ) : (
        <ul class="call-history__list" aria-label="Call history">
          {calls.map((c) => {
            const conv = conversations[c.conversation_id];
            const title = conv ? conversationTitle(conv, me) : "Conversation";
            const outgoing = c.caller_id === me;
            const o = outcome(c, me);
            const live = c.state !== "ended";
            const mine = active?.call.id === c.id && active.phase !== "ended";
            return (
              <li key={c.id} class="call-row" data-testid="call-history-item" data-outcome={c.end_reason ?? c.state}>
                <span class={`call-row__dir ${o.tone}`} aria-hidden="true">
                  {outgoing ? "↗" : "↙"}
                </span>
                <div class="call-row__body">
                  <Link href={`/messenger/${c.conversation_id}`} class="call-row__title">
                    {title}
                  </Link>
                  <p class="call-row__meta">
                    <span>{outgoing ? "Outgoing" : "Incoming"} {c.media === "video" ? "video" : "audio"}</span>
                    <span aria-hidden="true"> · </span>
                    <span class={o.tone}>{o.text}</span>
                    <span aria-hidden="true"> · </span>
                    <time dateTime={c.created_at}>{when(c.created_at)}</time>
                  </p>
                </div>
                <div class="call-row__actions">
                  {live && !mine && c.state === "active" ? (
                    <Button size="sm" variant="cyan" disabled={inCall} onClick={() => void join(c)} aria-label={`Join call in ${title}`}>
                      Join
                    </Button>
                  ) : (
                    <>
                      <IconButton label={`Audio call ${title}`} icon="☎" disabled={inCall} onClick={() => void call(c.conversation_id, "audio")} />
                      <IconButton label={`Video call ${title}`} icon="🎥" disabled={inCall} onClick={() => void call(c.conversation_id, "video")} />
                    </>
                  )}
                </div>
              </li>
            );
          })}
        </ul>
      )}
      {loading && (
        <div class="call-history__loading">
          <Spinner label="Loading calls" />
        </div>
      )}
      {hasMore && !loading && (
        <div class="call-history__more">
          <Button variant="secondary" onClick={() => void load(calls[calls.length - 1]?.created_at ?? null)}>
            Load older calls
          </Button>
        </div>
      )}
    </section>
  );
}
