-- The usage ledger: every model call, its tokens, latency and estimated cost.
CREATE TABLE model_calls (
    id            bigserial PRIMARY KEY,
    agent_id      uuid NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    -- The turn that made the call; NULL for calls outside a turn (knowledge, reembed).
    turn_id       uuid REFERENCES turns(id) ON DELETE CASCADE,
    step          text,
    provider      text NOT NULL,
    model         text NOT NULL,
    role          text NOT NULL,
    task          text,
    status        text NOT NULL CHECK (status IN ('ok', 'error')),
    error         text,
    input_tokens  integer NOT NULL DEFAULT 0,
    output_tokens integer NOT NULL DEFAULT 0,
    latency_ms    integer NOT NULL DEFAULT 0,
    cost_usd      double precision NOT NULL DEFAULT 0,
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX model_calls_agent_time ON model_calls (agent_id, created_at);
CREATE INDEX model_calls_turn ON model_calls (turn_id) WHERE turn_id IS NOT NULL;
