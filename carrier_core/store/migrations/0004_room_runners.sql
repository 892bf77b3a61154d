-- Per-room turn scheduling: one runner at a time drains a room's turns in arrival order.
-- The lease lives on the room row: whoever stores a message claims it when it is free,
-- the runner renews it as it goes and gives it back in the transaction that finds nothing
-- left, and a sweep takes over rooms whose runner stopped renewing.
ALTER TABLE rooms
    -- Bumped at every claim: names the runner (its execution is room-<id>-g<generation>),
    -- so a repeated start is harmless and a superseded runner can tell.
    ADD COLUMN runner_generation bigint NOT NULL DEFAULT 0,
    -- NULL: no runner. Otherwise the lease's end; past it, the sweep looks at the runner.
    ADD COLUMN runner_until timestamptz;
CREATE INDEX rooms_runner_until ON rooms (runner_until) WHERE runner_until IS NOT NULL;

ALTER TABLE turns
    -- How many times a runner took the turn up (more than once: its last runner stopped).
    ADD COLUMN attempts integer NOT NULL DEFAULT 0,
    -- Coalesced double texts: the later turn of the room that answered this message too.
    ADD COLUMN answered_by uuid REFERENCES turns(id) ON DELETE SET NULL;

-- Statuses: queued (waiting for its room's runner), running, retrying (a model call failed
-- and is tried again; the error says why), done, failed, coalesced (see answered_by).
UPDATE turns SET status = 'queued' WHERE status = 'received';
UPDATE turns SET status = 'running' WHERE status IN ('acting', 'evaluating', 'deciding');
ALTER TABLE turns ADD CONSTRAINT turns_status CHECK
    (status IN ('queued', 'running', 'retrying', 'done', 'failed', 'coalesced'));
-- The turns a room still owes an answer, for its runner and for the sweep.
CREATE INDEX turns_unfinished ON turns (room_id)
    WHERE status IN ('queued', 'running', 'retrying');
-- The turns a turn answered together with its own.
CREATE INDEX turns_answered_by ON turns (answered_by) WHERE answered_by IS NOT NULL;
