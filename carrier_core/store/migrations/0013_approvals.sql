-- Actions that wait for a person: an action that declares it needs approval pauses its turn
-- until someone answers (`carrier_core/turn/approval.py`). One row per paused action run,
-- keyed like the act step it belongs to, so a retried step finds its request again.
CREATE TABLE IF NOT EXISTS approvals (
    id            uuid PRIMARY KEY,
    turn_id       uuid NOT NULL REFERENCES turns(id) ON DELETE CASCADE,
    agent_id      uuid NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    -- The act step's key (act:<decide step>:<index>).
    step_key      text NOT NULL,
    action        text NOT NULL,
    arguments     jsonb NOT NULL DEFAULT '{}',
    status        text NOT NULL DEFAULT 'pending'
                  CHECK (status IN ('pending', 'approved', 'rejected', 'expired')),
    requested_at  timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,
    answered_at   timestamptz,
    -- Who answered: `key:<id>` for an API key, `user:<subject>` for an end user.
    answered_by   text,
    reason        text,
    -- The waiting state machine task's token (cloud and emulator); null in one process.
    task_token    text,
    -- When the execution waiting on the token was woken; the sweep wakes again an answered
    -- request whose wake failed (a throttle, a function that died after the answer).
    woken_at      timestamptz,
    -- When an approved action was let run: an approval is used once, so an act step run
    -- again after its handler (a retried invocation) does not act twice.
    used_at       timestamptz,
    UNIQUE (turn_id, step_key)
);
-- The sweep's: pending approvals by when they expire.
CREATE INDEX IF NOT EXISTS approvals_pending ON approvals (expires_at) WHERE status = 'pending';

-- Webhook deliveries of an approval request, beside those of replies.
ALTER TABLE webhook_deliveries ALTER COLUMN memory_id DROP NOT NULL;
ALTER TABLE webhook_deliveries ADD COLUMN IF NOT EXISTS approval_id uuid REFERENCES approvals(id) ON DELETE CASCADE;
CREATE UNIQUE INDEX IF NOT EXISTS webhook_deliveries_approval ON webhook_deliveries (webhook_id, approval_id)
    WHERE approval_id IS NOT NULL;
