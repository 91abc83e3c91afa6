-- Agents (the builder): an agent row per agent, pointing at its current version; every change adds an
-- immutable version row whose config (jsonb) holds the instructions, model, tools and their endpoints.
-- Endpoint secrets inside config are AES-GCM ciphertexts ("v1.<key id>.<base64url>"), never plaintext.

CREATE TABLE agents (
    id uuid PRIMARY KEY,
    owner_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- lower-case, as people's handles: 3 to 32 of a-z, 0-9 and _, starting with a letter
    handle text NOT NULL CHECK (handle ~ '^[a-z][a-z0-9_]{2,31}$'),
    current_version integer NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    -- soft delete: chats already running still resolve their version
    deleted_at timestamptz
);
-- Unique among live agents whatever its case (a deleted agent frees its handle).
CREATE UNIQUE INDEX agents_handle_key ON agents (lower(handle)) WHERE deleted_at IS NULL;
-- The FK, and agent.list (an owner's live agents).
CREATE INDEX agents_owner_id_deleted_at_idx ON agents (owner_id, deleted_at);

CREATE TABLE agent_versions (
    id uuid PRIMARY KEY,
    agent_id uuid NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    version integer NOT NULL CHECK (version >= 1),
    config jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
-- The FK, and a version by number.
CREATE UNIQUE INDEX agent_versions_agent_id_version_key ON agent_versions (agent_id, version);
