-- Scheduled tasks (ElizaOS's Task): work a plugin's task worker (`name`) does for an agent
-- when it is due, alone (one-shot: then deleted) or every `metadata.updateInterval`
-- milliseconds (repeating). A task may belong to one of the agent's rooms, where what the
-- worker says is taken in as a message and answered. Run by carrier_core/tasks/schedule.py.
CREATE TABLE IF NOT EXISTS tasks (
    id           uuid PRIMARY KEY,
    tenant_id    uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    agent_id     uuid NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    -- The task worker that runs it, by the name a plugin registered it under.
    name         text NOT NULL,
    description  text NOT NULL DEFAULT '',
    room_id      uuid REFERENCES rooms(id) ON DELETE CASCADE,
    tags         text[] NOT NULL DEFAULT '{}',
    -- The worker's own values, and ElizaOS's `updateInterval` (ms): present, it repeats.
    metadata     jsonb NOT NULL DEFAULT '{}',
    -- When it is next run: a scheduler claims a due task by moving this on (repeating) or
    -- by marking it running (one-shot) in the transaction that locked its row, so each due
    -- time is run at most once however many schedulers look.
    due_at       timestamptz NOT NULL,
    -- pending: waiting for due_at; running: a one-shot task claimed (deleted once it ran;
    -- left running if its scheduler died, as it may have run); failed: a one-shot task
    -- whose run failed (last_error), kept to be seen.
    status       text NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'running', 'failed')),
    runs         integer NOT NULL DEFAULT 0,
    failures     integer NOT NULL DEFAULT 0,
    last_run_at  timestamptz,
    last_error   text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
-- The schedulers' question: what is due now, across every agent.
CREATE INDEX IF NOT EXISTS tasks_due ON tasks (due_at) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS tasks_agent ON tasks (agent_id, created_at, id);

-- Rows only, as every table of migration 0006 (its default privileges grant this too when
-- the same login migrates; said here for a database whose owner changed since).
GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE tasks TO carrier_app;
