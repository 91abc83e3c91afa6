/**
 * Agents (issue 15): /agents (the list), /agents/new and /agents/:agentId (the builder),
 * /agents/:agentId/chat (run the agent; ?run=<id> opens a past run). Every frame needs the
 * premium_starter tier: a lower tier gets tier_required, shown as an upsell.
 */
import type { Agent } from "@kintsugi/rt-client";
import { useState } from "preact/hooks";
import type { RouteProps } from "../../routes";
import { Link } from "../../lib/router";
import { useClient, useOnResync } from "../../lib/session";
import { Badge, EmptyState, Spinner, toast } from "../../ui";
import { isTierError, Upsell } from "./common";
import { Builder } from "./Builder";
import { AgentChat } from "./AgentChat";
import "./agents.css";

function AgentList() {
  const client = useClient();
  const [agents, setAgents] = useState<Agent[] | null>(null);
  const [locked, setLocked] = useState(false);
  useOnResync(() => {
    client
      .request("agent.list")
      .then((reply) => setAgents(reply.agents))
      .catch((error) => {
        if (isTierError(error)) setLocked(true);
        else toast.error(error);
        setAgents([]);
      });
  });
  return (
    <section class="screen" aria-labelledby="agents-title">
      <div class="agents-head">
        <h1 id="agents-title" class="screen-title">
          Agents
        </h1>
        {!locked && (
          <Link href="/agents/new" class="btn btn--primary btn--md">
            New agent
          </Link>
        )}
      </div>
      <p class="screen-lead">Assistants with your instructions, a model and tools bound to webhooks.</p>
      {locked ? (
        <Upsell />
      ) : agents === null ? (
        <div class="agents-loading">
          <Spinner label="Loading agents" />
        </div>
      ) : !agents.length ? (
        <EmptyState title="No agents yet" icon="⚙" action={<Link href="/agents/new">Create your first agent</Link>}>
          Give it instructions, pick a model and bind tools to n8n, Make or a signed webhook.
        </EmptyState>
      ) : (
        <ul class="agents-list" aria-label="Your agents">
          {agents.map((a) => (
            <li key={a.id} class="agents-item card card--cyan">
              <div class="agents-item__main">
                <h2 class="agents-item__name">{a.name}</h2>
                <p class="agents-item__meta">
                  <span>@{a.handle}</span> <Badge tone="cyan">{a.model}</Badge> <Badge tone="muted">v{a.version}</Badge>{" "}
                  <span class="dim">
                    {a.tools.length} tool{a.tools.length === 1 ? "" : "s"}
                  </span>
                </p>
              </div>
              <div class="row">
                <Link href={`/agents/${a.id}`} class="btn btn--secondary btn--md" aria-label={`Edit ${a.name}`}>
                  Edit
                </Link>
                <Link href={`/agents/${a.id}/chat`} class="btn btn--cyan btn--md" aria-label={`Chat with ${a.name}`}>
                  Chat
                </Link>
              </div>
            </li>
          ))}
        </ul>
      )}
    </section>
  );
}

export default function Agents({ params, path, query }: RouteProps) {
  const agentId = params.agentId;
  if (!agentId) return <AgentList />;
  if (path.endsWith("/chat")) return <AgentChat key={agentId} agentId={agentId} runId={query.get("run")} />;
  return <Builder key={agentId} agentId={agentId === "new" ? null : agentId} />;
}

