-- Uploaded files (attachments, images, voice messages). The bytes live in the storage (a local directory
-- or an S3 bucket) under storage_key; a row is written only once they are stored.

CREATE TABLE media (
    id           uuid        PRIMARY KEY,
    owner_id     uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind         text        NOT NULL CHECK (kind IN ('file', 'image', 'voice')),
    -- Sniffed from the bytes, never the client's word.
    content_type text        NOT NULL,
    size         bigint      NOT NULL CHECK (size > 0),
    sha256       text        NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    filename     text        CHECK (char_length(filename) BETWEEN 1 AND 255),
    width        integer     CHECK (width > 0),
    height       integer     CHECK (height > 0),
    duration_ms  integer     CHECK (duration_ms > 0),
    storage_key  text        NOT NULL UNIQUE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    CHECK ((width IS NULL) = (height IS NULL))
);
-- The FK, and "this user's uploads, newest first".
CREATE INDEX media_owner_id_idx ON media (owner_id, created_at DESC);
