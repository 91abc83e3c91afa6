-- Agents in conversations (docs/agents.md, "Agents in conversations"): an agent is a member of a
-- conversation through conversation_agents; its owner added it and pays for its answers. A message an
-- agent wrote has sender_id NULL and agent_id set; `agent` keeps what members saw (name, handle, the
-- tools it used) as it was when it answered.

CREATE TABLE conversation_agents (
    conversation_id uuid        NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    agent_id        uuid        NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    added_by        uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,  -- the agent's owner
    created_at      timestamptz NOT NULL DEFAULT now(),
    run_started_at  timestamptz,  -- a run is going (one per agent and conversation at a time)
    PRIMARY KEY (conversation_id, agent_id)
);
CREATE INDEX conversation_agents_agent_id_idx ON conversation_agents (agent_id);
CREATE INDEX conversation_agents_added_by_idx ON conversation_agents (added_by);

ALTER TABLE messages ADD COLUMN agent_id uuid REFERENCES agents (id) ON DELETE SET NULL;
ALTER TABLE messages ADD COLUMN agent jsonb;
CREATE INDEX messages_agent_id_idx ON messages (agent_id);
