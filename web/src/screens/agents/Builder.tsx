/** The agent builder: /agents/new and /agents/:agentId. */
import type { Agent, AgentTestToolReply, ModelInfo, ToolInput } from "@kintsugi/rt-client";
import { useEffect, useState } from "preact/hooks";
import { Link, navigate } from "../../lib/router";
import { isKintsugiError, useClient } from "../../lib/session";
import { describeError, tierLabel } from "../../lib/errors";
import { Badge, Button, Card, Input, Modal, Select, Spinner, TextArea, toast } from "../../ui";
import { BackToAgents, isTierError, Upsell } from "./common";

type Kind = "n8n" | "make" | "hmac";

interface ToolDraft {
  key: number;
  name: string;
  description: string;
  parameters: string;
  kind: Kind;
  url: string;
  headerName: string;
  /** A new secret (empty: keep the saved one, if any). */
  secret: string;
  hasSecret: boolean;
  sample: string;
}

interface Draft {
  name: string;
  handle: string;
  instructions: string;
  model: string;
  temperature: string;
  stepLimit: string;
  starters: string[];
  tools: ToolDraft[];
}

let keys = 0;
const EXAMPLE_SCHEMA = JSON.stringify({ type: "object", properties: { query: { type: "string" } }, required: ["query"] }, null, 2);

function newTool(): ToolDraft {
  return { key: ++keys, name: "", description: "", parameters: EXAMPLE_SCHEMA, kind: "n8n", url: "", headerName: "", secret: "", hasSecret: false, sample: '{"query": "test"}' };
}

function fromAgent(a: Agent): Draft {
  return {
    name: a.name,
    handle: a.handle,
    instructions: a.instructions,
    model: a.model,
    temperature: String(a.temperature),
    stepLimit: String(a.step_limit),
    starters: [...a.conversation_starters],
    tools: a.tools.map((t) => ({
      key: ++keys,
      name: t.name,
      description: t.description,
      parameters: JSON.stringify(t.parameters, null, 2),
      kind: t.endpoint.kind,
      url: t.endpoint.url,
      headerName: t.endpoint.header_name ?? "",
      secret: "",
      hasSecret: t.endpoint.has_secret,
      sample: "{}",
    })),
  };
}

/** Why `text` is not a usable parameters schema, or null. */
export function schemaProblem(text: string): string | null {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    return `Not valid JSON: ${(error as Error).message}`;
  }
  if (!value || typeof value !== "object" || Array.isArray(value)) return "The schema must be a JSON object.";
  if ((value as Record<string, unknown>).type !== "object") return 'The schema\'s top-level "type" must be "object".';
  return null;
}

function parseObject(text: string): Record<string, unknown> | string {
  try {
    const value = JSON.parse(text) as unknown;
    if (!value || typeof value !== "object" || Array.isArray(value)) return "The arguments must be a JSON object.";
    return value as Record<string, unknown>;
  } catch (error) {
    return `Not valid JSON: ${(error as Error).message}`;
  }
}

const KINDS = [
  { value: "n8n", label: "n8n (header auth)" },
  { value: "make", label: "Make (API key)" },
  { value: "hmac", label: "Signed (HMAC)" },
];

function ToolEditor({
  tool,
  index,
  agentId,
  errors,
  onChange,
  onRemove,
}: {
  tool: ToolDraft;
  index: number;
  agentId: string | null;
  errors: Record<string, string>;
  onChange: (patch: Partial<ToolDraft>) => void;
  onRemove: () => void;
}) {
  const client = useClient();
  const [testing, setTesting] = useState(false);
  const [result, setResult] = useState<AgentTestToolReply | null>(null);
  const [testError, setTestError] = useState<string | null>(null);
  const prefix = `tools[${index}]`;
  const label = tool.name || `tool ${index + 1}`;
  const localSchema = schemaProblem(tool.parameters);
  const err = (field: string) => errors[`${prefix}.${field}`] ?? null;

  const test = async () => {
    setResult(null);
    setTestError(null);
    const args = parseObject(tool.sample);
    if (typeof args === "string") {
      setTestError(args);
      return;
    }
    if (!agentId) return;
    setTesting(true);
    try {
      setResult(await client.request("agent.test_tool", { agent_id: agentId, tool: tool.name, arguments: args }));
    } catch (error) {
      const field = isKintsugiError(error) && typeof error.details?.field === "string" ? `${error.details.field}: ` : "";
      setTestError(field + describeError(error).message);
    } finally {
      setTesting(false);
    }
  };

  return (
    <fieldset class="agents-tool card card--none">
      <legend class="agents-tool__legend caps">Tool {index + 1}</legend>
      <div class="agents-grid">
        <Input label={`Tool ${index + 1} name`} value={tool.name} maxLength={64} placeholder="lookup_order" error={err("name")} onInput={(e) => onChange({ name: e.currentTarget.value })} />
        <Select
          label={`Tool ${index + 1} webhook kind`}
          value={tool.kind}
          options={KINDS}
          error={err("endpoint.kind")}
          onChange={(e) => onChange({ kind: e.currentTarget.value as Kind })}
        />
      </div>
      <TextArea label={`Tool ${index + 1} description`} value={tool.description} maxLength={1024} rows={2} autoGrow error={err("description")} onInput={(e) => onChange({ description: e.currentTarget.value })} />
      <TextArea
        label={`Tool ${index + 1} parameters (JSON Schema)`}
        class="agents-code"
        value={tool.parameters}
        rows={6}
        autoGrow
        maxRows={16}
        spellcheck={false}
        error={localSchema ?? err("parameters")}
        hint='A JSON Schema whose top-level "type" is "object".'
        onInput={(e) => onChange({ parameters: e.currentTarget.value })}
      />
      <Input
        label={`Tool ${index + 1} webhook URL`}
        type="url"
        value={tool.url}
        placeholder="https://n8n.example.com/webhook/…"
        error={err("endpoint.url")}
        onInput={(e) => onChange({ url: e.currentTarget.value })}
      />
      <div class="agents-grid">
        {tool.kind === "n8n" && (
          <Input
            label={`Tool ${index + 1} header name`}
            value={tool.headerName}
            placeholder="Authorization"
            error={err("endpoint.header_name")}
            onInput={(e) => onChange({ headerName: e.currentTarget.value })}
          />
        )}
        <div class="agents-secret">
          {tool.hasSecret && (
            <p class="agents-secret__saved">
              <Badge tone="ok">Secret saved</Badge>
            </p>
          )}
          <Input
            label={tool.hasSecret ? `Tool ${index + 1} replace secret` : `Tool ${index + 1} secret`}
            type="password"
            autoComplete="new-password"
            value={tool.secret}
            placeholder={tool.hasSecret ? "Leave empty to keep it" : tool.kind === "hmac" ? "HMAC key" : tool.kind === "make" ? "Make API key" : "Header value"}
            error={err("endpoint.secret")}
            onInput={(e) => onChange({ secret: e.currentTarget.value })}
          />
        </div>
      </div>
      <div class="agents-test">
        <TextArea
          label={`Tool ${index + 1} sample arguments (JSON)`}
          class="agents-code"
          value={tool.sample}
          rows={2}
          autoGrow
          spellcheck={false}
          onInput={(e) => onChange({ sample: e.currentTarget.value })}
        />
        <div class="row">
          <Button variant="cyan" onClick={test} loading={testing} disabled={!agentId || !tool.name} aria-label={`Test tool ${label}`}>
            Test tool
          </Button>
          <Button variant="danger" onClick={onRemove} aria-label={`Remove tool ${label}`}>
            Remove
          </Button>
          {!agentId && <span class="dim">Save the agent to test its tools.</span>}
        </div>
        {testError && (
          <p class="agents-test__error" role="alert">
            {testError}
          </p>
        )}
        {result && (
          <div class="agents-test__result" role="status" aria-label={`Test result of ${label}`}>
            <p class="row">
              <Badge tone={result.ok ? "ok" : "danger"}>{result.ok ? "OK" : "Failed"}</Badge>
              <span>Status {result.status ?? "—"}</span>
              <span>{result.duration_ms} ms</span>
              {result.retried > 0 && <span>retried {result.retried}×</span>}
              {result.error && <span class="agents-test__code">{result.error}</span>}
            </p>
            {result.body && <pre class="agents-pre">{result.body}</pre>}
          </div>
        )}
      </div>
    </fieldset>
  );
}

export function Builder({ agentId }: { agentId: string | null }) {
  const client = useClient();
  const [agent, setAgent] = useState<Agent | null>(null);
  const [draft, setDraft] = useState<Draft | null>(agentId ? null : { name: "", handle: "", instructions: "", model: "", temperature: "1", stepLimit: "6", starters: [], tools: [] });
  const [models, setModels] = useState<ModelInfo[]>([]);
  const [locked, setLocked] = useState(false);
  const [missing, setMissing] = useState(false);
  const [saving, setSaving] = useState(false);
  const [errors, setErrors] = useState<Record<string, string>>({});
  const [formError, setFormError] = useState<string | null>(null);
  const [confirming, setConfirming] = useState(false);
  const [deleting, setDeleting] = useState(false);

  useEffect(() => {
    client
      .request("chat.models")
      .then((reply) => {
        setModels(reply.models);
        setDraft((d) => (d && !d.model ? { ...d, model: reply.models.find((m) => m.allowed)?.id ?? reply.default ?? "" } : d));
      })
      .catch(() => undefined);
    const load = agentId ? client.request("agent.get", { agent_id: agentId }).then((r) => r.agent) : client.request("agent.list").then(() => null);
    load
      .then((a) => {
        if (a) {
          setAgent(a);
          setDraft(fromAgent(a));
        }
      })
      .catch((error) => {
        if (isTierError(error)) setLocked(true);
        else if (isKintsugiError(error) && error.code === "not_found") setMissing(true);
        else toast.error(error);
      });
  }, [client, agentId]);

  const title = agentId ? agent?.name || "Edit agent" : "New agent";
  const shell = (body: preact.ComponentChildren) => (
    <section class="screen screen--narrow" aria-labelledby="agent-builder-title">
      <BackToAgents />
      <h1 id="agent-builder-title" class="screen-title">
        {title}
      </h1>
      {body}
    </section>
  );
  if (locked) return shell(<Upsell />);
  if (missing) return shell(<p>This agent does not exist, or it is not yours. <Link href="/agents">Back to agents</Link></p>);
  if (!draft) return shell(<Spinner label="Loading agent" />);

  // An edited field drops its (now stale) error.
  const FIELD: Record<string, string> = { stepLimit: "step_limit", starters: "conversation_starters" };
  const dropErrors = (stale: (key: string) => boolean) => {
    if (Object.keys(errors).some(stale)) setErrors(Object.fromEntries(Object.entries(errors).filter(([k]) => !stale(k))));
  };
  const set = (patch: Partial<Draft>) => {
    setDraft({ ...draft, ...patch });
    const fields = Object.keys(patch).filter((k) => k !== "tools").map((k) => FIELD[k] ?? k);
    dropErrors((k) => fields.some((f) => k === f || k.startsWith(`${f}[`)));
  };
  const setTool = (i: number, patch: Partial<ToolDraft>) => {
    setDraft({ ...draft, tools: draft.tools.map((t, j) => (j === i ? { ...t, ...patch } : t)) });
    const fields = Object.keys(patch).map((k) => ({ headerName: "endpoint.header_name", url: "endpoint.url", secret: "endpoint.secret", kind: "endpoint" })[k] ?? k);
    dropErrors((k) => k === "tools" || fields.some((f) => k.startsWith(`tools[${i}].${f}`)));
  };

  const save = async (event: Event) => {
    event.preventDefault();
    setErrors({});
    setFormError(null);
    const local: Record<string, string> = {};
    const tools: ToolInput[] = [];
    draft.tools.forEach((t, i) => {
      const problem = schemaProblem(t.parameters);
      if (problem) {
        local[`tools[${i}].parameters`] = problem;
        return;
      }
      tools.push({
        name: t.name.trim(),
        description: t.description,
        parameters: JSON.parse(t.parameters) as Record<string, unknown>,
        endpoint: {
          kind: t.kind,
          url: t.url.trim(),
          ...(t.kind === "n8n" && t.headerName.trim() ? { header_name: t.headerName.trim() } : {}),
          ...(t.secret ? { secret: t.secret } : {}),
        },
      });
    });
    if (Object.keys(local).length) {
      setErrors(local);
      setFormError("Fix the marked fields first.");
      return;
    }
    const fields = {
      name: draft.name.trim(),
      handle: draft.handle.trim(),
      instructions: draft.instructions,
      model: draft.model,
      temperature: Number(draft.temperature),
      step_limit: Number(draft.stepLimit),
      conversation_starters: draft.starters.map((s) => s.trim()).filter(Boolean),
      tools,
    };
    setSaving(true);
    try {
      const reply = agent ? await client.request("agent.update", { agent_id: agent.id, ...fields }) : await client.request("agent.create", fields);
      setAgent(reply.agent);
      setDraft(fromAgent(reply.agent));
      toast.success(`Saved: version ${reply.agent.version}`);
      if (!agent) navigate(`/agents/${reply.agent.id}`, { replace: true });
    } catch (error) {
      const field = isKintsugiError(error) && typeof error.details?.field === "string" ? error.details.field : null;
      const message = describeError(error).message;
      if (field) setErrors({ [field]: message });
      setFormError(field ? `${field}: ${message}` : message);
    } finally {
      setSaving(false);
    }
  };

  const remove = async () => {
    if (!agent) return;
    setDeleting(true);
    try {
      await client.request("agent.delete", { agent_id: agent.id });
      toast.success("Agent deleted");
      setConfirming(false);
      navigate("/agents", { replace: true });
    } catch (error) {
      toast.error(error);
    } finally {
      setDeleting(false);
    }
  };

  const modelOptions = models.length
    ? models.map((m) => ({ value: m.id, label: m.allowed ? m.label : `${m.label} — needs ${tierLabel(m.tier_required ?? "a higher plan")}`, disabled: !m.allowed }))
    : [{ value: draft.model, label: draft.model || "Loading models…" }];

  return shell(
    <form class="stack agents-form" onSubmit={save} noValidate aria-label="Agent">
      {agent && (
        <p class="row">
          <Badge tone="gold">Version {agent.version}</Badge>
          <Link href={`/agents/${agent.id}/chat`} class="btn btn--cyan btn--sm">
            Chat with it
          </Link>
        </p>
      )}
      <Card title="Identity" accent="gold" titleId="agent-identity">
        <div class="agents-grid">
          <Input label="Name" value={draft.name} maxLength={64} required error={errors.name} onInput={(e) => set({ name: e.currentTarget.value })} />
          <Input label="Handle" value={draft.handle} placeholder="@weatherbot" maxLength={33} required error={errors.handle} hint="3–32 of a–z, 0–9, _ starting with a letter." onInput={(e) => set({ handle: e.currentTarget.value })} />
        </div>
        <TextArea label="Instructions" value={draft.instructions} rows={5} autoGrow maxRows={20} maxLength={20000} error={errors.instructions} onInput={(e) => set({ instructions: e.currentTarget.value })} />
      </Card>
      <Card title="Model and limits" accent="cyan" titleId="agent-model">
        <Select label="Model" value={draft.model} options={modelOptions} error={errors.model} onChange={(e) => set({ model: e.currentTarget.value })} />
        <div class="agents-grid">
          <Input label="Temperature" type="number" min={0} max={2} step={0.1} value={draft.temperature} error={errors.temperature} hint="0 to 2" onInput={(e) => set({ temperature: e.currentTarget.value })} />
          <Input label="Step limit" type="number" min={1} max={20} step={1} value={draft.stepLimit} error={errors.step_limit} hint="Model turns per message, 1 to 20" onInput={(e) => set({ stepLimit: e.currentTarget.value })} />
        </div>
      </Card>
      <Card title="Conversation starters" accent="pink" titleId="agent-starters">
        {draft.starters.map((s, i) => (
          <div class="agents-starter" key={i}>
            <Input
              label={`Starter ${i + 1}`}
              value={s}
              maxLength={200}
              error={errors[`conversation_starters[${i}]`]}
              onInput={(e) => set({ starters: draft.starters.map((x, j) => (j === i ? e.currentTarget.value : x)) })}
            />
            <Button variant="ghost" aria-label={`Remove starter ${i + 1}`} onClick={() => set({ starters: draft.starters.filter((_, j) => j !== i) })}>
              ✕
            </Button>
          </div>
        ))}
        {errors.conversation_starters && <p class="field__error">{errors.conversation_starters}</p>}
        <Button variant="secondary" size="sm" disabled={draft.starters.length >= 6} onClick={() => set({ starters: [...draft.starters, ""] })}>
          Add starter
        </Button>
      </Card>
      <Card title="Tools" accent="gold" titleId="agent-tools">
        <p class="dim">Each tool is a POST of {"{tool, arguments}"} to a webhook; its answer goes back to the model.</p>
        {draft.tools.map((t, i) => (
          <ToolEditor key={t.key} tool={t} index={i} agentId={agent?.id ?? null} errors={errors} onChange={(p) => setTool(i, p)} onRemove={() => set({ tools: draft.tools.filter((_, j) => j !== i) })} />
        ))}
        {errors.tools && <p class="field__error">{errors.tools}</p>}
        <Button variant="secondary" size="sm" disabled={draft.tools.length >= 16} onClick={() => set({ tools: [...draft.tools, newTool()] })}>
          Add tool
        </Button>
      </Card>
      {formError && (
        <p class="agents-form__error" role="alert">
          {formError}
        </p>
      )}
      <div class="row agents-actions">
        <Button type="submit" loading={saving}>
          {agent ? "Save new version" : "Create agent"}
        </Button>
        {agent && (
          <Button variant="danger" onClick={() => setConfirming(true)}>
            Delete agent
          </Button>
        )}
      </div>
      {agent && (
        <Modal
          open={confirming}
          onClose={() => setConfirming(false)}
          title="Delete this agent?"
          role="alertdialog"
          accent="pink"
          footer={
            <div class="row">
              <Button variant="danger" loading={deleting} onClick={remove}>
                Delete
              </Button>
              <Button variant="secondary" onClick={() => setConfirming(false)}>
                Cancel
              </Button>
            </div>
          }
        >
          <p class="prose">
            {agent.name} (@{agent.handle}) leaves your list and its handle becomes free. Runs already going keep their version.
          </p>
        </Modal>
      )}
    </form>,
  );
}
