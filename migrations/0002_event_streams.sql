-- Durable socket events: one stream per user, positions without holes (see docs/delivery.md).

-- The event itself, stored once however many users receive it.
CREATE TABLE durable_events (
    id         bigserial   PRIMARY KEY,
    type       text        NOT NULL,
    body       bytea       NOT NULL,  -- the JSON frame as sent, without "pos"
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX durable_events_created_at_idx ON durable_events (created_at);

-- Each user's stream: its epoch and the last position handed out. The row is locked while a
-- position is taken, so a user's positions commit in order and never leave a gap.
CREATE TABLE event_streams (
    user_id  uuid   PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    epoch    uuid   NOT NULL DEFAULT gen_random_uuid(),
    last_pos bigint NOT NULL DEFAULT 0
);

CREATE TABLE stream_entries (
    user_id  uuid   NOT NULL REFERENCES event_streams (user_id) ON DELETE CASCADE,
    pos      bigint NOT NULL,
    event_id bigint NOT NULL REFERENCES durable_events (id) ON DELETE CASCADE,
    PRIMARY KEY (user_id, pos)
);
CREATE INDEX stream_entries_event_id_idx ON stream_entries (event_id);

ALTER TABLE users ADD COLUMN last_seen_at timestamptz;
