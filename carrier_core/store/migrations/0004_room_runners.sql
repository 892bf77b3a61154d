-- Per-room turn scheduling: one runner at a time drains a room's turns in arrival order.
-- The lease lives on the room row: whoever stores a message claims it when it is free,
-- the runner renews it as it goes and gives it back in the transaction that finds nothing
-- left, and a sweep takes over rooms whose runner stopped renewing.
-- Runner generations are drawn from one sequence, never reused: a room deleted and made
-- again (same id) must not name an execution that already ran (names are kept 90 days).
CREATE SEQUENCE runner_generations;
ALTER TABLE rooms
    -- Set at every claim: names the runner (its execution is room-<id>-g<generation>), so
    -- a repeated start is harmless and a superseded runner can tell.
    ADD COLUMN runner_generation bigint NOT NULL DEFAULT 0,
    -- NULL: no runner. Otherwise the lease's end; past it, the sweep looks at the runner.
    ADD COLUMN runner_until timestamptz;
CREATE INDEX rooms_runner_until ON rooms (runner_until) WHERE runner_until IS NOT NULL;

ALTER TABLE turns
    -- How many runners took the turn up (more than one: a runner stopped in it), and the
    -- last one's generation (a runner asking again for the same turn is no new attempt).
    ADD COLUMN attempts integer NOT NULL DEFAULT 0,
    ADD COLUMN runner_generation bigint,
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

-- A room's runner takes its next turn (carrier_core/turn/schedule.py: next_turn), in one
-- round trip. The room row is locked before the turns are read (each statement of a
-- function sees what committed before it ran), so a message stored meanwhile is either
-- read here or waits for this and then finds the room free. Returns no row when the runner
-- must stop: the room is gone, another runner has it, or nothing is left (then the lease
-- is given back). Otherwise the turn to run, marked running, with its attempt number; the
-- turns it answers too (coalesced double texts) point at it with answered_by.
CREATE FUNCTION carrier_next_turn(p_room uuid, p_generation bigint, p_lease_s double precision)
RETURNS TABLE (turn_id uuid, agent_id uuid, attempt integer, error text)
LANGUAGE plpgsql AS $$
DECLARE
    v_generation bigint;
    v_first record;
    v_chosen uuid;
    v_coalesced uuid[] := '{}';
BEGIN
    SELECT r.runner_generation INTO v_generation FROM rooms r WHERE r.id = p_room FOR UPDATE;
    IF NOT FOUND OR v_generation <> p_generation THEN
        RETURN;
    END IF;
    SELECT t.id, t.status, t.agent_id INTO v_first
        FROM turns t JOIN memories m ON m.id = t.message_id
        WHERE t.room_id = p_room AND t.status IN ('queued', 'running', 'retrying')
        ORDER BY m.seq LIMIT 1;
    IF NOT FOUND THEN
        UPDATE rooms r SET runner_until = NULL WHERE r.id = p_room;
        RETURN;
    END IF;
    v_chosen := v_first.id;
    -- Coalescing is looked up only when it could apply: the character is a large document.
    IF v_first.status = 'queued'
        AND EXISTS (SELECT 1 FROM turns t WHERE t.room_id = p_room AND t.id <> v_first.id
                    AND t.status IN ('queued', 'running', 'retrying'))
        AND (SELECT a.character -> 'settings' ->> 'double_texting' FROM agents a
             WHERE a.id = v_first.agent_id) = 'coalesce' THEN
        -- The oldest waiting turn is queued, so nothing of the room is under way (a failed
        -- turn queued again while a later one runs aside): the newest answers them all.
        SELECT array_agg(t.id ORDER BY m.seq) INTO v_coalesced
            FROM turns t JOIN memories m ON m.id = t.message_id
            WHERE t.room_id = p_room AND t.status IN ('queued', 'running', 'retrying');
        v_chosen := v_coalesced[cardinality(v_coalesced)];
        v_coalesced := v_coalesced[1:cardinality(v_coalesced) - 1];
        UPDATE turns t SET status = 'coalesced', answered_by = v_chosen, updated_at = now()
            WHERE t.id = ANY(v_coalesced);
    END IF;
    UPDATE rooms r SET runner_until = now() + p_lease_s * interval '1 second'
        WHERE r.id = p_room;
    RETURN QUERY UPDATE turns t SET status = 'running',
        attempts = t.attempts + (t.runner_generation IS DISTINCT FROM p_generation)::int,
        runner_generation = p_generation, updated_at = now() WHERE t.id = v_chosen
        RETURNING t.id, t.agent_id, t.attempts, t.error;
END
$$;
