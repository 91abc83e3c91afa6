/** Chat with an agent: /agents/:agentId/chat (?run=<id> opens a past run to read or continue). */
import type { Agent, AgentDone, AgentRunInfo, AgentRunStep, AgentStep, RunUsage } from "@kintsugi/rt-client";
import { useEffect, useRef, useState } from "preact/hooks";
import { Link, navigate } from "../../lib/router";
import { isKintsugiError, KintsugiError, useClient, useEvent } from "../../lib/session";
import { describeError } from "../../lib/errors";
import { formatTime } from "../../lib/format";
import { Badge, Button, EmptyState, Spinner, TextArea, toast } from "../../ui";
import { BackToAgents, isTierError, Upsell } from "./common";

interface Step {
  key: string;
  tool: string;
  arguments: unknown;
  status: "running" | "ok" | "error";
  durationMs: number | null;
  summary: string | null;
  error: string | null;
}

interface Answer {
  text: string;
  steps: Step[];
  status: "running" | AgentDone["status"];
  error: string | null;
  usage: RunUsage | null;
}

interface Live {
  pieces: string[];
  steps: Map<string, Step>;
  done: AgentDone | null;
}

interface HistoryItem {
  user: string;
  answer: Answer | null;
}

function stepFromEvent(e: AgentStep): Step {
  return { key: e.call_id, tool: e.tool, arguments: e.arguments, status: e.status, durationMs: e.duration_ms ?? null, summary: e.summary ?? null, error: e.error ?? null };
}

function parseJson(text: unknown): unknown {
  if (typeof text !== "string") return text;
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

/** The stored conversation (OpenAI messages + finished steps) as user turns and their answers. */
function fromHistory(messages: Record<string, unknown>[], steps: AgentRunStep[], runStatus: AgentRunInfo["status"]): HistoryItem[] {
  const items: HistoryItem[] = [];
  let s = 0;
  for (const m of messages) {
    if (m.role === "user") {
      items.push({ user: typeof m.content === "string" ? m.content : JSON.stringify(m.content), answer: null });
    } else if (m.role === "assistant") {
      const item = items[items.length - 1] ?? (items.push({ user: "", answer: null }), items[items.length - 1]!);
      item.answer ??= { text: "", steps: [], status: "answered", error: null, usage: null };
      const calls = Array.isArray(m.tool_calls) ? (m.tool_calls as { id?: string; function?: { name?: string; arguments?: string } }[]) : [];
      for (const call of calls) {
        const stored = steps[s++];
        item.answer.steps.push({
          key: call.id ?? `step-${s}`,
          tool: stored?.tool ?? call.function?.name ?? "tool",
          arguments: stored?.arguments ?? parseJson(call.function?.arguments),
          status: stored?.status ?? "ok",
          durationMs: stored?.duration_ms ?? null,
          summary: stored?.summary ?? null,
          error: null,
        });
      }
      if (typeof m.content === "string" && m.content) item.answer.text += (item.answer.text ? "\n\n" : "") + m.content;
    }
  }
  const last = items[items.length - 1];
  if (last?.answer && runStatus !== "running") last.answer.status = runStatus;
  return items;
}

function StepView({ step }: { step: Step }) {
  const tone = step.status === "ok" ? "ok" : step.status === "error" ? "danger" : "cyan";
  return (
    <li class={`agents-step agents-step--${step.status}`} aria-label={`Tool ${step.tool}: ${step.status}`}>
      <div class="agents-step__head">
        <span class="agents-step__tool">⚙ {step.tool}</span>
        <Badge tone={tone}>{step.status === "running" ? "Running" : step.status === "ok" ? "OK" : "Error"}</Badge>
        {step.durationMs !== null && <span class="dim">{step.durationMs} ms</span>}
        {step.error && <span class="agents-test__code">{step.error}</span>}
        {step.status === "running" && <Spinner size="sm" label={`${step.tool} is running`} />}
      </div>
      <pre class="agents-pre agents-step__args" aria-label="Arguments">
        {JSON.stringify(step.arguments, null, 1)}
      </pre>
      {step.summary && <p class="agents-step__summary">{step.summary}</p>}
    </li>
  );
}

function AnswerView({ answer, name }: { answer: Answer | null; name: string }) {
  if (!answer) return null;
  const streaming = answer.status === "running";
  return (
    <li class="agents-msg agents-msg--agent" aria-busy={streaming || undefined} data-testid="agent-answer">
      <div class="agents-msg__who caps">
        {name}
        {answer.status === "stopped" && <Badge tone="muted">Stopped</Badge>}
        {answer.status === "failed" && <Badge tone="danger">Failed</Badge>}
        {answer.status === "step_limit" && <Badge tone="pink">Step limit</Badge>}
        {answer.status === "answered" && <Badge tone="ok">Done</Badge>}
      </div>
      {answer.steps.length > 0 && (
        <ol class="agents-steps" aria-label="Tool steps">
          {answer.steps.map((s) => (
            <StepView key={s.key} step={s} />
          ))}
        </ol>
      )}
      {answer.text ? (
        <div class={`agents-msg__text prose ${streaming ? "caret" : ""}`}>{answer.text}</div>
      ) : streaming ? (
        <div class="agents-msg__thinking">
          <Spinner size="sm" label="The agent is working" /> <span class="dim">Thinking…</span>
        </div>
      ) : null}
      {answer.error && (
        <p class="agents-test__error" role="alert">
          {answer.error}
        </p>
      )}
      {answer.usage && !streaming && (
        <p class="agents-msg__usage dim">
          {answer.usage.prompt_tokens} in · {answer.usage.completion_tokens} out tokens
        </p>
      )}
    </li>
  );
}

function liveAnswer(live: Live | undefined): Answer | null {
  if (!live) return null;
  const done = live.done;
  return {
    text: done ? done.text : live.pieces.join(""),
    steps: [...live.steps.values()],
    status: done ? done.status : "running",
    error: done?.status === "failed" ? describeError(new KintsugiError({ code: done.error_code ?? "provider_error", message: done.error ?? "The run failed." })).message : null,
    usage: done?.usage ?? null,
  };
}

export function AgentChat({ agentId, runId: routeRunId }: { agentId: string; runId: string | null }) {
  const client = useClient();
  const [agent, setAgent] = useState<Agent | null>(null);
  const [locked, setLocked] = useState(false);
  const [missing, setMissing] = useState(false);
  const [runs, setRuns] = useState<AgentRunInfo[]>([]);
  const [runId, setRunId] = useState<string | null>(routeRunId);
  const [history, setHistory] = useState<HistoryItem[]>([]);
  const [historyRunning, setHistoryRunning] = useState(false);
  const [loadingRun, setLoadingRun] = useState(false);
  const [sent, setSent] = useState<Map<number, string>>(new Map());
  const [text, setText] = useState("");
  const [sending, setSending] = useState(false);
  // Every run's live events, whether or not the run is known yet (a delta may beat the send's reply).
  const live = useRef(new Map<string, Map<number, Live>>());
  const [, setTick] = useState(0);
  const ownRun = useRef<string | null>(null);
  const scroller = useRef<HTMLDivElement>(null);

  const refreshRuns = () =>
    client
      .request("agent.chat.list", { agent_id: agentId })
      .then((r) => setRuns(r.runs))
      .catch(() => undefined);

  useEffect(() => {
    client
      .request("agent.get", { agent_id: agentId })
      .then((r) => setAgent(r.agent))
      .catch((error) => {
        if (isTierError(error)) setLocked(true);
        else if (isKintsugiError(error) && error.code === "not_found") setMissing(true);
        else toast.error(error);
      });
    void refreshRuns();
  }, [client, agentId]);

  // Open a past run (or a new one with no ?run).
  useEffect(() => {
    if (routeRunId && routeRunId === ownRun.current) return;
    setRunId(routeRunId);
    setSent(new Map());
    setHistory([]);
    setHistoryRunning(false);
    if (!routeRunId) return;
    setLoadingRun(true);
    client
      .request("agent.chat.get", { run_id: routeRunId })
      .then((r) => {
        setHistory(fromHistory(r.messages, r.steps, r.run.status));
        setHistoryRunning(r.run.status === "running");
      })
      .catch((error) => toast.error(error))
      .finally(() => setLoadingRun(false));
  }, [client, routeRunId]);

  const turnOf = (run: string, turn: number): Live => {
    let turns = live.current.get(run);
    if (!turns) live.current.set(run, (turns = new Map()));
    let entry = turns.get(turn);
    if (!entry) turns.set(turn, (entry = { pieces: [], steps: new Map(), done: null }));
    return entry;
  };
  useEvent("agent.delta", (e) => {
    turnOf(e.run_id, e.turn).pieces[e.index] = e.text;
    setTick((n) => n + 1);
  });
  useEvent("agent.step", (e) => {
    turnOf(e.run_id, e.turn).steps.set(e.call_id, stepFromEvent(e));
    setTick((n) => n + 1);
  });
  useEvent("agent.done", (e) => {
    turnOf(e.run_id, e.turn).done = e;
    setTick((n) => n + 1);
    if (e.run_id === runId) void refreshRuns();
  });

  // Follow the newest text.
  useEffect(() => {
    const el = scroller.current;
    if (el) el.scrollTop = el.scrollHeight;
  });

  const name = agent?.name ?? "Agent";
  const liveTurns = runId ? live.current.get(runId) : undefined;
  const base = history.length;
  const extraTurns = [...new Set([...sent.keys(), ...(liveTurns ? [...liveTurns.keys()] : [])])].filter((t) => t > base).sort((a, b) => a - b);
  const items: HistoryItem[] = [
    ...history.map((h, i) => {
      const l = liveTurns?.get(i + 1);
      return l ? { user: h.user, answer: liveAnswer(l) } : i === base - 1 && historyRunning ? { user: h.user, answer: { ...(h.answer ?? { text: "", steps: [], error: null, usage: null }), status: "running" as const } } : h;
    }),
    ...extraTurns.map((t) => ({ user: sent.get(t) ?? "", answer: liveAnswer(liveTurns?.get(t)) ?? { text: "", steps: [], status: "running" as const, error: null, usage: null } })),
  ];
  const running = items.some((i) => i.answer?.status === "running");

  const send = async (content: string) => {
    const value = content.trim();
    if (!value || sending || running) return;
    setSending(true);
    try {
      const reply = await client.request("agent.chat.send", { agent_id: agentId, content: value, ...(runId ? { run_id: runId } : {}) });
      setText("");
      setSent((m) => new Map(m).set(reply.turn, value));
      if (reply.run_id !== runId) {
        ownRun.current = reply.run_id;
        setRunId(reply.run_id);
        navigate(`/agents/${agentId}/chat?run=${reply.run_id}`, { replace: true });
      }
      void refreshRuns();
    } catch (error) {
      if (isTierError(error)) setLocked(true);
      else toast.error(error);
    } finally {
      setSending(false);
    }
  };

  const stop = () => {
    if (runId) client.request("agent.chat.stop", { run_id: runId }).catch((error) => toast.error(error));
  };

  const newRun = () => {
    ownRun.current = null;
    navigate(`/agents/${agentId}/chat`);
  };

  if (locked || missing) {
    return (
      <section class="screen screen--narrow" aria-labelledby="agent-chat-title">
        <BackToAgents />
        <h1 id="agent-chat-title" class="screen-title">
          Agent chat
        </h1>
        {locked ? <Upsell /> : <p>This agent does not exist, or it is not yours.</p>}
      </section>
    );
  }

  return (
    <section class="screen agents-chat-screen" aria-labelledby="agent-chat-title">
      <BackToAgents />
      <div class="agents-head">
        <h1 id="agent-chat-title" class="screen-title">
          {agent ? `Chat: ${agent.name}` : "Agent chat"}
        </h1>
        <div class="row">
          <Link href={`/agents/${agentId}`} class="btn btn--secondary btn--sm">
            Edit agent
          </Link>
          <Button size="sm" variant="cyan" onClick={newRun} disabled={!runId}>
            New run
          </Button>
        </div>
      </div>
      <div class="agents-chat">
        <aside class="agents-runs" aria-label="Past runs">
          <details open={typeof matchMedia !== "undefined" && matchMedia("(min-width: 900px)").matches}>
            <summary class="agents-runs__summary caps">Past runs ({runs.length})</summary>
            {runs.length ? (
              <ul class="agents-runs__list">
                {runs.map((r) => (
                  <li key={r.id}>
                    <Link
                      href={`/agents/${agentId}/chat?run=${r.id}`}
                      class={`agents-run ${r.id === runId ? "agents-run--active" : ""}`}
                      aria-current={r.id === runId ? "page" : undefined}
                      onClick={() => (ownRun.current = null)}
                    >
                      <span>{formatTime(r.created_at)}</span>
                      <Badge tone={r.status === "answered" ? "ok" : r.status === "failed" ? "danger" : r.status === "running" ? "cyan" : "muted"}>{r.status.replace("_", " ")}</Badge>
                    </Link>
                  </li>
                ))}
              </ul>
            ) : (
              <p class="dim">No runs yet.</p>
            )}
          </details>
        </aside>
        <div class="agents-thread">
          <div class="agents-thread__scroll" ref={scroller}>
            {loadingRun ? (
              <Spinner label="Loading run" />
            ) : !items.length ? (
              <div class="agents-empty">
                <EmptyState title={agent ? `Ask ${agent.name}` : "Ask the agent"} icon="⚙">
                  Tool calls show up here as they run, then the answer streams in.
                </EmptyState>
                {agent && agent.conversation_starters.length > 0 && (
                  <div class="agents-starters" role="group" aria-label="Conversation starters">
                    {agent.conversation_starters.map((s) => (
                      <Button key={s} variant="secondary" size="sm" onClick={() => void send(s)} disabled={sending}>
                        {s}
                      </Button>
                    ))}
                  </div>
                )}
              </div>
            ) : (
              <ol class="agents-msgs" aria-label="Agent conversation">
                {items.map((item, i) => [
                  item.user ? (
                    <li key={`u${i}`} class="agents-msg agents-msg--user">
                      <div class="agents-msg__who caps">You</div>
                      <div class="agents-msg__text prose">{item.user}</div>
                    </li>
                  ) : null,
                  <AnswerView key={`a${i}`} answer={item.answer} name={name} />,
                ])}
              </ol>
            )}
            <div class="sr-only" aria-live="polite">
              {running ? "The agent is answering." : ""}
            </div>
          </div>
          <form
            class="agents-composer"
            onSubmit={(e) => {
              e.preventDefault();
              void send(text);
            }}
          >
            <TextArea
              label="Message to the agent"
              hideLabel
              placeholder={runId ? "Continue this run…" : "Ask the agent…"}
              value={text}
              rows={1}
              autoGrow
              maxRows={6}
              onInput={(e) => setText(e.currentTarget.value)}
              onKeyDown={(e) => {
                if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
                  e.preventDefault();
                  void send(text);
                }
              }}
            />
            {running ? (
              <Button variant="pink" onClick={stop}>
                Stop
              </Button>
            ) : (
              <Button type="submit" loading={sending} disabled={!text.trim()}>
                Send
              </Button>
            )}
          </form>
        </div>
      </div>
    </section>
  );
}
