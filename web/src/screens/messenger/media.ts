/**
 * Signed media URLs (docs/media.md, "Signed URLs"): attachments carry `url` / `thumbnail_url` valid
 * until `expires_at`. Expired (or about to expire) links, and links an element failed to load, are
 * renewed with `media.links` in batches of up to 100 ids; the fresh ones are kept here by media id.
 */
import type { Attachment, KintsugiClient, MediaLinks } from "@kintsugi/rt-client";
import { useEffect, useState } from "preact/hooks";
import { createStore, useStore } from "../../lib/store";

const MARGIN_MS = 60_000;
const links = createStore<Record<string, MediaLinks>>({});
const queued = new Set<string>();
const asked = new Map<string, number>();
let timer: ReturnType<typeof setTimeout> | null = null;
let clientRef: KintsugiClient | null = null;

function fresh(expiresAt: string | null | undefined): boolean {
  if (!expiresAt) return true;
  const t = Date.parse(expiresAt);
  return Number.isNaN(t) || t - Date.now() > MARGIN_MS;
}

/** Ask for new links for this media id (batched; at most once per 20 s per id). */
export function renew(client: KintsugiClient, mediaId: string): void {
  clientRef = client;
  const last = asked.get(mediaId) ?? 0;
  if (Date.now() - last < 20_000) return;
  queued.add(mediaId);
  if (!timer) timer = setTimeout(flush, 40);
}

async function flush(): Promise<void> {
  timer = null;
  const client = clientRef;
  const ids = [...queued].slice(0, 100);
  ids.forEach((id) => queued.delete(id));
  if (queued.size) timer = setTimeout(flush, 40);
  if (!client || !ids.length) return;
  const now = Date.now();
  ids.forEach((id) => asked.set(id, now));
  try {
    const reply = await client.request("media.links", { media_ids: ids });
    links.set((all) => {
      const next = { ...all };
      for (const l of reply.links) next[l.media_id] = l;
      return next;
    });
  } catch {
    /* the element keeps its old link; a later render asks again */
  }
}

export interface ResolvedLinks {
  url: string | null;
  thumbnailUrl: string | null;
}

/**
 * The attachment's current links: the renewed ones when we have them, else its own; expired ones
 * trigger a renewal (the element re-renders with the new URL). `onError` → `renew()`.
 */
export function useAttachmentLinks(client: KintsugiClient, attachment: Attachment): ResolvedLinks {
  const all = useStore(links);
  const renewed = all[attachment.id];
  const own = { url: attachment.url ?? null, thumbnailUrl: attachment.thumbnail_url ?? null, expires: attachment.expires_at };
  const useRenewed = renewed && (!own.url || !fresh(own.expires) || Date.parse(renewed.expires_at) > Date.parse(own.expires ?? "0"));
  const current = useRenewed
    ? { url: renewed.url, thumbnailUrl: renewed.thumbnail_url, expires: renewed.expires_at }
    : own;
  const stale = !current.url || !fresh(current.expires);
  useEffect(() => {
    if (stale) renew(client, attachment.id);
  }, [stale, attachment.id, client]);
  // Re-check when the link is about to expire while on screen.
  const [, tick] = useState(0);
  useEffect(() => {
    if (!current.expires) return;
    const ms = Date.parse(current.expires) - Date.now() - MARGIN_MS;
    if (!(ms > 0) || ms > 2 ** 31 - 1) return;
    const t = setTimeout(() => tick((n) => n + 1), ms + 1000);
    return () => clearTimeout(t);
  }, [current.expires]);
  return { url: current.url, thumbnailUrl: current.thumbnailUrl };
}
