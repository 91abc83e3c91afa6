-- Token limits (reservations against the usage ledger) and Stripe subscriptions.

-- A reservation holds tokens for an answer in flight; it is deleted in the transaction that writes the
-- answer's ledger row. One left behind by a dead node stops counting at expires_at.
CREATE TABLE usage_reservations (
    id         uuid        PRIMARY KEY,
    user_id    uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    amount     integer     NOT NULL CHECK (amount >= 0),
    expires_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX usage_reservations_user_id_idx ON usage_reservations (user_id, expires_at);

-- One Stripe customer per user, created once and reused.
CREATE TABLE billing_customers (
    user_id            uuid        PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    stripe_customer_id text        NOT NULL UNIQUE,
    created_at         timestamptz NOT NULL DEFAULT now()
);

-- The user's subscription as last fetched from Stripe.
CREATE TABLE subscriptions (
    user_id                uuid        PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    stripe_subscription_id text        NOT NULL UNIQUE,
    status                 text        NOT NULL,
    price_id               text,
    tier                   text        NOT NULL,
    current_period_end     timestamptz,
    cancel_at_period_end   boolean     NOT NULL DEFAULT false,
    updated_at             timestamptz NOT NULL DEFAULT now()
);

-- Webhook events already applied: the insert shares the transaction of the effect, so a replay is a no-op.
CREATE TABLE stripe_events (
    id          text        PRIMARY KEY,
    type        text        NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);
