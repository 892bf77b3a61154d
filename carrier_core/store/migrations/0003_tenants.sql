-- Clients: tenants own agents; API keys and end-user tokens act for a tenant; live
-- WebSocket connections and webhooks receive an agent's replies.
CREATE TABLE tenants (
    id          uuid PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Agents made before tenants existed belong to the local tenant (the one `carrier chat`
-- and `carrier dev` use); its id is uuid5(CARRIER_NAMESPACE, 'tenant:local').
INSERT INTO tenants (id, name) VALUES ('c2e4a629-ad3e-5dbd-8c79-a13894601b1c', 'local')
    ON CONFLICT DO NOTHING;
ALTER TABLE agents ADD COLUMN tenant_id uuid REFERENCES tenants(id) ON DELETE CASCADE;
UPDATE agents SET tenant_id = (SELECT id FROM tenants WHERE name = 'local') WHERE tenant_id IS NULL;
ALTER TABLE agents ALTER COLUMN tenant_id SET NOT NULL;
CREATE INDEX agents_tenant ON agents (tenant_id, created_at, id);

CREATE TABLE api_keys (
    id           uuid PRIMARY KEY,
    tenant_id    uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name         text NOT NULL DEFAULT '',
    -- The key's first characters, to tell keys apart in lists; never enough to use it.
    prefix       text NOT NULL,
    -- sha256 of the whole key: keys are 256 random bits, so a fast hash is enough.
    hash         bytea NOT NULL UNIQUE,
    -- NULL: every agent of the tenant; else only these.
    agent_ids    uuid[],
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at   timestamptz
);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id, created_at);

-- Live WebSocket connections, each listening to one room of one agent.
CREATE TABLE connections (
    id            text PRIMARY KEY,
    tenant_id     uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    agent_id      uuid NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    room_id       uuid NOT NULL,
    room          text NOT NULL,
    sender        text NOT NULL,
    -- The API key that opened it (NULL: an end user's token): revoking the key ends it.
    key_id        uuid REFERENCES api_keys(id) ON DELETE CASCADE,
    -- When an end user's token expires: the connection goes quiet then.
    expires_at    timestamptz,
    -- Where to push: the API Gateway Management API endpoint of the connection's stage.
    endpoint      text NOT NULL,
    connected_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX connections_room ON connections (room_id);

CREATE TABLE webhooks (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    agent_id    uuid NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    -- NULL: every room of the agent.
    room_id     uuid,
    room        text,
    url         text NOT NULL,
    secret      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhooks_agent ON webhooks (agent_id);

-- One reply to one webhook: kept after it succeeds or gives up, for inspection.
CREATE TABLE webhook_deliveries (
    id            uuid PRIMARY KEY,
    -- Page order, newest first.
    seq           bigint GENERATED ALWAYS AS IDENTITY,
    webhook_id    uuid NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
    memory_id     uuid NOT NULL,
    turn_id       uuid NOT NULL,
    payload       jsonb NOT NULL,
    status        text NOT NULL DEFAULT 'pending'
                  CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts      integer NOT NULL DEFAULT 0,
    last_status   integer,
    last_error    text,
    -- When the next attempt is due, so a delivery queued twice (a retried finish step, an
    -- SQS duplicate) is tried by one message at a time, and a client can see when.
    next_attempt_at timestamptz,
    -- When a sweep last queued it again (its message taken for lost): not again for a while.
    swept_at      timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (webhook_id, memory_id)
);
CREATE INDEX webhook_deliveries_webhook ON webhook_deliveries (webhook_id, seq);
CREATE INDEX webhook_deliveries_status ON webhook_deliveries (webhook_id, status, seq);
CREATE INDEX webhook_deliveries_turn ON webhook_deliveries (turn_id);
-- The sweep's: only the pending ones, few beside those kept.
CREATE INDEX webhook_deliveries_pending ON webhook_deliveries (created_at)
    WHERE status = 'pending';
