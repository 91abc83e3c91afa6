-- Agent runs (agent.chat.*): a conversation with an agent at the version it began with, and the tool
-- calls it made. history holds the OpenAI-format messages without the system message (the agent's
-- instructions come from the version); tool secrets never appear in it.

CREATE TABLE agent_runs (
    id uuid PRIMARY KEY,
    agent_id uuid NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    version_id uuid NOT NULL REFERENCES agent_versions (id) ON DELETE CASCADE,
    owner_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    status text NOT NULL CHECK (status IN ('running', 'answered', 'step_limit', 'stopped', 'failed')),
    history jsonb NOT NULL DEFAULT '[]'::jsonb,
    prompt_tokens bigint NOT NULL DEFAULT 0,
    completion_tokens bigint NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
-- The FKs, and agent.chat.list (an owner's runs, newest first).
CREATE INDEX agent_runs_owner_id_created_at_idx ON agent_runs (owner_id, created_at);
CREATE INDEX agent_runs_agent_id_idx ON agent_runs (agent_id);
CREATE INDEX agent_runs_version_id_idx ON agent_runs (version_id);

CREATE TABLE agent_run_steps (
    run_id uuid NOT NULL REFERENCES agent_runs (id) ON DELETE CASCADE,
    seq integer NOT NULL CHECK (seq >= 1),
    tool text NOT NULL,
    arguments jsonb,
    status text NOT NULL CHECK (status IN ('running', 'ok', 'error')),
    duration_ms integer,
    summary text,
    created_at timestamptz NOT NULL DEFAULT now(),
    -- The FK, and a run's steps in order.
    PRIMARY KEY (run_id, seq)
);
