-- The runner's next turn also names its message, so every step of the turn can put the
-- message id beside the turn id on its log lines, traces and metrics (the correlation ids,
-- carrier_aws/observability.py) without a query of its own. A function's result type
-- cannot be changed in place: it is made again, otherwise as migration 0004 made it.
DROP FUNCTION carrier_next_turn(uuid, bigint, double precision);
CREATE FUNCTION carrier_next_turn(p_room uuid, p_generation bigint, p_lease_s double precision)
RETURNS TABLE (turn_id uuid, agent_id uuid, message_id uuid, attempt integer, error text)
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
        RETURNING t.id, t.agent_id, t.message_id, t.attempts, t.error;
END
$$;
