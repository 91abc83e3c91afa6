-- Web Push: one browser subscription per login (session), pushed to while the user has no socket open.

CREATE TABLE push_subscriptions (
    id              uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    -- The push service's URL for this browser (RFC 8030); it is the subscription's identity.
    endpoint        text        NOT NULL CHECK (char_length(endpoint) <= 2048),
    -- The browser's P-256 public key and auth secret (RFC 8291), base64url without padding.
    p256dh          text        NOT NULL,
    auth            text        NOT NULL,
    user_id         uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    session_id      uuid        NOT NULL REFERENCES auth_sessions (id) ON DELETE CASCADE,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    last_success_at timestamptz,
    -- Refusals in a row (4xx other than 404/410, or failures after every retry); reset by a success.
    failures        integer     NOT NULL DEFAULT 0 CHECK (failures >= 0)
);
-- One row per endpoint: subscribing again (or from another account in the same browser) updates it.
CREATE UNIQUE INDEX push_subscriptions_endpoint_key ON push_subscriptions (endpoint);
-- Who to push to (every subscription of the recipients), and the FK.
CREATE INDEX push_subscriptions_user_id_idx ON push_subscriptions (user_id);
-- A login's subscription (replaced on subscribe), and the FK.
CREATE INDEX push_subscriptions_session_id_idx ON push_subscriptions (session_id);
