-- Calls: who called which conversation, who answered on which device, how it ended.

CREATE TABLE calls (
    id              uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    conversation_id uuid        NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    caller_id       uuid        REFERENCES users (id) ON DELETE SET NULL,
    media           text        NOT NULL CHECK (media IN ('audio', 'video')),
    mode            text        NOT NULL CHECK (mode IN ('p2p', 'sfu', 'livekit')),
    state           text        NOT NULL DEFAULT 'ringing' CHECK (state IN ('ringing', 'active', 'ended')),
    max_participants integer    NOT NULL,
    created_at      timestamptz NOT NULL,
    ring_deadline   timestamptz NOT NULL,   -- unanswered by then: missed
    end_deadline    timestamptz NOT NULL,   -- the caller's tier's longest call
    answered_at     timestamptz,
    ended_at        timestamptz,
    end_reason      text        CHECK (end_reason IN
                        ('hangup', 'declined', 'missed', 'busy', 'cancelled', 'failed', 'time_limit')),
    sfu_node        text                    -- the node whose SFU carries the call (mode 'sfu')
);
-- One live call per conversation: a second call.start joins it (glare resolves here, atomically).
CREATE UNIQUE INDEX calls_one_live_per_conversation ON calls (conversation_id) WHERE state <> 'ended';
CREATE INDEX calls_conversation_idx ON calls (conversation_id, created_at DESC);
CREATE INDEX calls_caller_idx ON calls (caller_id);
-- What the sweeper looks for on every node.
CREATE INDEX calls_ring_deadline_idx ON calls (ring_deadline) WHERE state = 'ringing';
CREATE INDEX calls_end_deadline_idx ON calls (end_deadline) WHERE state <> 'ended';

CREATE TABLE call_participants (
    call_id    uuid        NOT NULL REFERENCES calls (id) ON DELETE CASCADE,
    user_id    uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    state      text        NOT NULL CHECK (state IN ('ringing', 'joined', 'declined', 'left', 'missed')),
    party_id   text,                        -- the device (socket) in the call, while joined
    joined_at  timestamptz,
    left_at    timestamptz,
    PRIMARY KEY (call_id, user_id)
);
-- History, and "is this user in a call already?" (busy).
CREATE INDEX call_participants_user_idx ON call_participants (user_id, call_id);
CREATE INDEX call_participants_joined_idx ON call_participants (user_id) WHERE state = 'joined';

-- A call's entry in the conversation's timeline ("missed call", "call, 12:34").
ALTER TABLE messages ADD COLUMN call jsonb;  -- {call_id, media, outcome, duration_s}: written by the calls module

CREATE INDEX call_participants_party_idx ON call_participants (party_id) WHERE state = 'joined';
