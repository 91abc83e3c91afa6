/**
 * Usage: tokens used of the limit in the current 6-hour window, the reset countdown, the warnings
 * the server sends (80 %, 100 %), and the history (usage.history) as an inline SVG chart.
 */
import type { UsageRow } from "@kintsugi/rt-client";
import { useEffect, useMemo, useRef, useState } from "preact/hooks";
import type { RouteProps } from "../../routes";
import { Link } from "../../lib/router";
import { useClient, useEvent, useOnResync } from "../../lib/session";
import { refreshUsage, useUsage } from "../../lib/usage";
import { formatCompact, formatDuration, formatNumber } from "../../lib/format";
import { tierLabel } from "../../lib/errors";
import { Badge, Card, EmptyState, ProgressBar, Spinner, Tabs, toast } from "../../ui";
import "./usage.css";

function useNow(intervalMs = 1000): number {
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    const timer = setInterval(() => setNow(Date.now()), intervalMs);
    return () => clearInterval(timer);
  }, [intervalMs]);
  return now;
}

function WindowCard() {
  const usage = useUsage();
  const client = useClient();
  const now = useNow();
  useEffect(() => {
    void refreshUsage(client);
  }, [client]);
  const resetPassed = usage ? Date.parse(usage.reset_at) <= now : false;
  useEffect(() => {
    // The window rolled over: ask for the fresh one.
    if (resetPassed) void refreshUsage(client);
  }, [resetPassed, client]);
  if (!usage) {
    return (
      <Card title="This window">
        <Spinner label="Loading usage" />
      </Card>
    );
  }
  const unlimited = usage.limit < 0;
  const pct = unlimited || usage.limit === 0 ? 0 : Math.round((usage.used / usage.limit) * 100);
  const resetMs = Date.parse(usage.reset_at) - now;
  const level = unlimited ? null : pct >= 100 ? 100 : pct >= 80 ? 80 : usage.warned;
  return (
    <Card title="This window" accent={level === 100 ? "pink" : "gold"} actions={<Badge tone="cyan">{tierLabel(usage.tier)}</Badge>}>
      <div class="usage-big">
        <span class="usage-big__used">{formatNumber(usage.used)}</span>
        <span class="usage-big__of">{unlimited ? "tokens · no limit" : `of ${formatNumber(usage.limit)} tokens`}</span>
      </div>
      {!unlimited && (
        <ProgressBar label="Tokens used in this window" value={usage.used} max={usage.limit} valueText={`${pct}% — ${formatNumber(usage.used)} of ${formatNumber(usage.limit)} tokens`} />
      )}
      <dl class="usage-facts">
        <div>
          <dt>Used</dt>
          <dd>{unlimited ? "—" : `${pct}%`}</dd>
        </div>
        <div>
          <dt>Left</dt>
          <dd>{unlimited ? "∞" : formatNumber(Math.max(0, usage.limit - usage.used))}</dd>
        </div>
        <div>
          <dt>Resets in</dt>
          <dd>
            <time dateTime={usage.reset_at} title={new Date(usage.reset_at).toLocaleString()}>
              {formatDuration(resetMs)}
            </time>
          </dd>
        </div>
      </dl>
      {level !== null && level >= 80 && (
        <p class={`usage-warning usage-warning--${level}`} role="status">
          {level >= 100 ? (
            <>
              You have used this window's tokens. New questions are refused until it resets at {new Date(usage.reset_at).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })}.{" "}
              <Link href="/pricing">Upgrade your plan</Link> for a higher limit.
            </>
          ) : (
            <>
              Over 80% of this window's tokens are used. <Link href="/pricing">See plans</Link>.
            </>
          )}
        </p>
      )}
      <p class="muted usage-note">Windows are fixed 6-hour blocks (00:00, 06:00, 12:00, 18:00 UTC) shared by everyone; prompts and answers both count.</p>
    </Card>
  );
}

type Range = "7d" | "30d" | "models";

function dayKeys(days: number): string[] {
  const keys: string[] = [];
  const today = new Date();
  for (let i = days - 1; i >= 0; i--) {
    const d = new Date(Date.UTC(today.getUTCFullYear(), today.getUTCMonth(), today.getUTCDate() - i));
    keys.push(d.toISOString().slice(0, 10));
  }
  return keys;
}

/** A stacked bar chart (prompt + completion tokens), inline SVG, with a data table for screen readers. */
function BarChart({ rows, labels, title }: { rows: UsageRow[]; labels: (key: string) => string; title: string }) {
  // Drawn 1:1 in CSS pixels at the figure's width, so text stays readable on phones.
  const figure = useRef<HTMLElement>(null);
  const [width, setWidth] = useState(720);
  useEffect(() => {
    const el = figure.current;
    if (!el) return;
    const observer = new ResizeObserver(([entry]) => entry && setWidth(Math.max(240, Math.round(entry.contentRect.width))));
    observer.observe(el);
    return () => observer.disconnect();
  }, []);
  const max = Math.max(1, ...rows.map((r) => r.total_tokens));
  const height = 240;
  const pad = { top: 16, right: 8, bottom: 36, left: 56 };
  const innerW = width - pad.left - pad.right;
  const innerH = height - pad.top - pad.bottom;
  const slot = innerW / Math.max(1, rows.length);
  const bar = Math.max(4, Math.min(48, slot * 0.7));
  const ticks = [0, 0.5, 1].map((t) => Math.round(max * t));
  const every = Math.ceil(rows.length / Math.max(2, Math.floor(innerW / 64)));
  return (
    <figure class="usage-chart" ref={figure}>
      <svg viewBox={`0 0 ${width} ${height}`} width={width} height={height} role="img" aria-labelledby="usage-chart-title" class="usage-chart__svg">
        <title id="usage-chart-title">{title}</title>
        {ticks.map((t) => {
          const y = pad.top + innerH - (t / max) * innerH;
          return (
            <g key={t}>
              <line x1={pad.left} x2={width - pad.right} y1={y} y2={y} class="usage-chart__grid" />
              <text x={pad.left - 6} y={y + 4} text-anchor="end" class="usage-chart__tick">
                {formatCompact(t)}
              </text>
            </g>
          );
        })}
        {rows.map((r, i) => {
          const x = pad.left + i * slot + (slot - bar) / 2;
          const hp = (r.prompt_tokens / max) * innerH;
          const hc = (r.completion_tokens / max) * innerH;
          const base = pad.top + innerH;
          return (
            <g key={r.key}>
              <rect x={x} y={base - hp} width={bar} height={hp} class="usage-chart__prompt">
                <title>{`${labels(r.key)}: ${formatNumber(r.prompt_tokens)} prompt tokens`}</title>
              </rect>
              <rect x={x} y={base - hp - hc} width={bar} height={hc} class="usage-chart__completion">
                <title>{`${labels(r.key)}: ${formatNumber(r.completion_tokens)} completion tokens`}</title>
              </rect>
              {i % every === 0 && (
                <text x={x + bar / 2} y={height - pad.bottom + 18} text-anchor="middle" class="usage-chart__label">
                  {labels(r.key)}
                </text>
              )}
            </g>
          );
        })}
        <line x1={pad.left} x2={width - pad.right} y1={pad.top + innerH} y2={pad.top + innerH} class="usage-chart__axis" />
      </svg>
      <figcaption class="usage-legend">
        <span>
          <i class="usage-legend__swatch usage-legend__swatch--prompt" aria-hidden="true" /> Prompt
        </span>
        <span>
          <i class="usage-legend__swatch usage-legend__swatch--completion" aria-hidden="true" /> Completion
        </span>
      </figcaption>
      <details class="usage-table">
        <summary>Show as a table</summary>
        <table>
          <caption class="sr-only">{title}</caption>
          <thead>
            <tr>
              <th scope="col">{rows.length && /^\d{4}-/.test(rows[0]!.key) ? "Day" : "Model"}</th>
              <th scope="col">Prompt</th>
              <th scope="col">Completion</th>
              <th scope="col">Total</th>
              <th scope="col">Requests</th>
            </tr>
          </thead>
          <tbody>
            {rows.map((r) => (
              <tr key={r.key}>
                <th scope="row">{labels(r.key)}</th>
                <td>{formatNumber(r.prompt_tokens)}</td>
                <td>{formatNumber(r.completion_tokens)}</td>
                <td>{formatNumber(r.total_tokens)}</td>
                <td>{formatNumber(r.requests)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </details>
    </figure>
  );
}

function HistoryCard() {
  const client = useClient();
  const [range, setRange] = useState<Range>("7d");
  const [rows, setRows] = useState<UsageRow[] | null>(null);
  const [version, setVersion] = useState(0);
  useOnResync(() => setVersion((v) => v + 1));
  useEvent("usage.updated", () => setVersion((v) => v + 1));
  useEffect(() => {
    let alive = true;
    const days = range === "30d" ? 30 : range === "7d" ? 7 : 30;
    const to = new Date();
    const from = new Date(Date.UTC(to.getUTCFullYear(), to.getUTCMonth(), to.getUTCDate() - days + 1));
    setRows(null);
    client
      .request("usage.history", { from: from.toISOString(), to: new Date(to.getTime() + 60_000).toISOString(), group_by: range === "models" ? "model" : "day" })
      .then(
        (reply) => alive && setRows(reply.rows),
        (error) => {
          if (alive) setRows([]);
          toast.error(error);
        },
      );
    return () => {
      alive = false;
    };
  }, [client, range, version]);

  const filled = useMemo(() => {
    if (!rows || range === "models") return rows;
    const byKey = new Map(rows.map((r) => [r.key, r]));
    return dayKeys(range === "30d" ? 30 : 7).map((key) => byKey.get(key) ?? { key, prompt_tokens: 0, completion_tokens: 0, total_tokens: 0, requests: 0 });
  }, [rows, range]);

  const total = (rows ?? []).reduce((sum, r) => sum + r.total_tokens, 0);
  const label = (key: string) => (range === "models" ? key : new Date(`${key}T00:00:00Z`).toLocaleDateString(undefined, { month: "short", day: "numeric", timeZone: "UTC" }));
  return (
    <Card title="History" accent="cyan">
      <Tabs
        label="History range"
        value={range}
        onChange={(id) => setRange(id as Range)}
        tabs={[
          { id: "7d", label: "7 days" },
          { id: "30d", label: "30 days" },
          { id: "models", label: "By model" },
        ]}
      >
        {filled === null ? (
          <Spinner label="Loading history" />
        ) : !rows?.length ? (
          <EmptyState title="No usage yet" icon="▮">
            Ask the AI something and it shows up here.
          </EmptyState>
        ) : (
          <>
            <p class="muted">
              {formatNumber(total)} tokens in {formatNumber(rows.reduce((s, r) => s + r.requests, 0))} requests {range === "models" ? "over 30 days" : `over ${range === "7d" ? 7 : 30} days`}.
            </p>
            <BarChart rows={filled} labels={label} title={`Tokens per ${range === "models" ? "model" : "day"}, prompt and completion`} />
          </>
        )}
      </Tabs>
    </Card>
  );
}

export default function Usage(_props: RouteProps) {
  return (
    <section class="screen" aria-labelledby="usage-title">
      <h1 id="usage-title" class="screen-title">
        Usage
      </h1>
      <div class="grid usage-grid">
        <WindowCard />
        <HistoryCard />
      </div>
    </section>
  );
}
