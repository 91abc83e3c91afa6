-- AI chat: chats, their message trees, and the usage ledger every generation writes to.

CREATE TABLE chats (
    id             uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id        uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    title          text        NOT NULL DEFAULT '',
    model          text        NOT NULL,
    system_prompt  text,
    active_leaf_id uuid,       -- the newest message of the branch shown; see chat_messages
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    search         tsvector    GENERATED ALWAYS AS (to_tsvector('simple', title)) STORED
);
-- chat.list pages by (updated_at, id) within one user.
CREATE INDEX chats_user_updated_idx ON chats (user_id, updated_at DESC, id DESC);
CREATE INDEX chats_search_idx ON chats USING gin (search);

-- A tree: editing or regenerating adds a sibling; nothing is overwritten.
CREATE TABLE chat_messages (
    id                uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    chat_id           uuid        NOT NULL REFERENCES chats (id) ON DELETE CASCADE,
    parent_id         uuid        REFERENCES chat_messages (id) ON DELETE CASCADE,
    role              text        NOT NULL CHECK (role IN ('user', 'assistant')),
    content           text        NOT NULL DEFAULT '',
    status            text        NOT NULL CHECK (status IN ('complete', 'streaming', 'stopped', 'error')),
    model             text,
    finish_reason     text,
    error_code        text,
    tokens            integer     NOT NULL DEFAULT 0,  -- this message's own length in tokens (estimated)
    prompt_tokens     integer,
    completion_tokens integer,
    created_at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    search            tsvector    GENERATED ALWAYS AS (to_tsvector('simple', content)) STORED
);
CREATE INDEX chat_messages_chat_id_idx ON chat_messages (chat_id, created_at);
CREATE INDEX chat_messages_parent_id_idx ON chat_messages (parent_id, created_at);
CREATE INDEX chat_messages_streaming_idx ON chat_messages (chat_id) WHERE status = 'streaming';
CREATE INDEX chat_messages_search_idx ON chat_messages USING gin (search);

ALTER TABLE chats
    ADD CONSTRAINT chats_active_leaf_fk FOREIGN KEY (active_leaf_id) REFERENCES chat_messages (id)
    ON DELETE SET NULL DEFERRABLE INITIALLY DEFERRED;
CREATE INDEX chats_active_leaf_id_idx ON chats (active_leaf_id);

-- One row per generation (and per title). The billing module turns this into limits; it is the truth.
CREATE TABLE usage_ledger (
    id                bigserial   PRIMARY KEY,
    user_id           uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    chat_id           uuid        REFERENCES chats (id) ON DELETE SET NULL,
    message_id        uuid        REFERENCES chat_messages (id) ON DELETE SET NULL,
    purpose           text        NOT NULL CHECK (purpose IN ('answer', 'title')),
    model             text        NOT NULL,
    prompt_tokens     integer     NOT NULL CHECK (prompt_tokens >= 0),
    completion_tokens integer     NOT NULL CHECK (completion_tokens >= 0),
    source            text        NOT NULL CHECK (source IN ('provider', 'estimated')),
    created_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX usage_ledger_user_created_idx ON usage_ledger (user_id, created_at);
CREATE INDEX usage_ledger_chat_id_idx ON usage_ledger (chat_id);
CREATE INDEX usage_ledger_message_id_idx ON usage_ledger (message_id);
