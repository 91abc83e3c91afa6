-- Messenger: direct and group conversations, messages with per-conversation seq, versions,
-- reactions, per-user hiding (delete for me) and read state as a high-water mark.

CREATE TABLE conversations (
    id         uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    kind       text        NOT NULL CHECK (kind IN ('direct', 'group')),
    title      text,
    direct_key text        UNIQUE,  -- "<smaller user id>:<larger user id>": one direct conversation per pair
    created_by uuid        REFERENCES users (id) ON DELETE SET NULL,
    last_seq   bigint      NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CHECK ((kind = 'direct') = (direct_key IS NOT NULL))
);
CREATE INDEX conversations_created_by_idx ON conversations (created_by);

CREATE TABLE conversation_members (
    conversation_id uuid        NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    user_id         uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role            text        NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
    read_seq        bigint      NOT NULL DEFAULT 0,
    joined_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (conversation_id, user_id)
);
CREATE INDEX conversation_members_user_id_idx ON conversation_members (user_id, conversation_id);

CREATE TABLE messages (
    id              uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    conversation_id uuid        NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    seq             bigint      NOT NULL,
    sender_id       uuid        REFERENCES users (id) ON DELETE SET NULL,
    client_msg_id   text        NOT NULL,
    text            text,
    reply_to        uuid        REFERENCES messages (id) ON DELETE SET NULL,
    forwarded_from  uuid        REFERENCES messages (id) ON DELETE SET NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    edited_at       timestamptz,
    deleted_at      timestamptz,  -- deleted for everyone: a tombstone stays
    pinned_at       timestamptz,
    search          tsvector    GENERATED ALWAYS AS (to_tsvector('simple', coalesce(text, ''))) STORED,
    UNIQUE (conversation_id, seq),       -- history paging and unread counts walk this index
    UNIQUE (sender_id, client_msg_id)    -- a retried send finds the first one
);
CREATE INDEX messages_reply_to_idx ON messages (reply_to);
CREATE INDEX messages_forwarded_from_idx ON messages (forwarded_from);
CREATE INDEX messages_pinned_idx ON messages (conversation_id) WHERE pinned_at IS NOT NULL;
CREATE INDEX messages_search_idx ON messages USING gin (search);

CREATE TABLE message_versions (
    message_id uuid        NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    version    integer     NOT NULL,
    text       text,
    replaced_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (message_id, version)
);

CREATE TABLE message_reactions (
    message_id uuid        NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    user_id    uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    emoji      text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (message_id, user_id, emoji)
);
CREATE INDEX message_reactions_user_id_idx ON message_reactions (user_id);

CREATE TABLE message_hidden (
    message_id uuid NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    PRIMARY KEY (user_id, message_id)
);
CREATE INDEX message_hidden_message_id_idx ON message_hidden (message_id);

ALTER TABLE users ADD COLUMN read_receipts boolean NOT NULL DEFAULT true;
