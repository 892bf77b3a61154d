-- The runner's next turn and a turn's end commit without waiting for the write-ahead log
-- to reach disk: each function sets `synchronous_commit` off for its own transaction
-- (set_config's third argument: it ends with the transaction, so it is no session state a
-- pooler would have to keep). Losing such a commit in a database crash only leaves the
-- room's lease and its turns as they were before it: the room is taken up again when the
-- lease runs out (the sweep; in one process, the room's next message), and the turn's steps
-- find what they did, so nothing is said twice. In the cloud the turn's end shares its
-- transaction with the planning of its webhook deliveries: a plan is lost only with the end,
-- and made again when the turn ends again (its push, events and metrics are then sent
-- again too: they are at least once). A later full commit (a reply, a message accepted)
-- makes the lazy ones before it durable too, as the log is flushed in order. The messages
-- accepted, the replies and everything else commit as before.
--
-- The runner's next turn: otherwise as migration 0007 made it.
CREATE OR REPLACE FUNCTION carrier_next_turn(p_room uuid, p_generation bigint, p_lease_s double precision)
RETURNS TABLE (turn_id uuid, agent_id uuid, message_id uuid, attempt integer, error text)
LANGUAGE plpgsql AS $$
DECLARE
    v_generation bigint;
    v_first record;
    v_chosen uuid;
    v_coalesced uuid[] := '{}';
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
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

-- A turn's end, and with a runner the room's next turn, in one round trip: the finish step's
-- two halves (`Store.end_turn`). Ending sums up the turn's model calls for its metrics and
-- names its agent's plugins for the events of its end; nothing, if the turn had ended
-- already (the end's columns are null then). With a runner (`p_generation`), the room is
-- locked first, as `carrier_next_turn` and every runner lock it before its turns, and the
-- next turn is taken as `carrier_next_turn` takes it (its columns are null when there is
-- none). Committed lazily, as the next turn is: a lost end is found again by the sweep.
CREATE OR REPLACE FUNCTION carrier_end_turn(p_turn uuid, p_error text, p_generation bigint,
                                 p_lease_s double precision)
RETURNS TABLE (message_id uuid, status text, seconds double precision, calls bigint,
               input_tokens bigint, output_tokens bigint, cost_usd double precision,
               plugins text[], next_turn_id uuid, next_agent_id uuid, next_message_id uuid,
               next_attempt integer, next_error text)
LANGUAGE plpgsql AS $$
DECLARE
    v_room uuid;
    v_message uuid;
    v_status text;
    v_seconds double precision;
    v_calls bigint;
    v_input bigint;
    v_output bigint;
    v_cost double precision;
    v_plugins text[];
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    IF p_generation IS NOT NULL THEN
        SELECT t.room_id INTO v_room FROM turns t WHERE t.id = p_turn;
        PERFORM 1 FROM rooms r WHERE r.id = v_room FOR UPDATE;
    END IF;
    UPDATE turns t SET status = CASE WHEN p_error IS NULL THEN 'done' ELSE 'failed' END,
            error = p_error, updated_at = now()
        FROM (SELECT count(*) AS n, coalesce(sum(mc.input_tokens), 0) AS input_tokens,
                     coalesce(sum(mc.output_tokens), 0) AS output_tokens,
                     coalesce(sum(mc.cost_usd), 0) AS cost_usd
              FROM model_calls mc WHERE mc.turn_id = p_turn) c
        WHERE t.id = p_turn AND t.status IN ('queued', 'running', 'retrying')
        RETURNING t.message_id, t.status, extract(epoch FROM now() - t.created_at)::float8,
            c.n, c.input_tokens, c.output_tokens, c.cost_usd,
            (SELECT coalesce(array(SELECT jsonb_array_elements_text(CASE WHEN
                 jsonb_typeof(a.character -> 'plugins') = 'array' THEN a.character -> 'plugins'
                 ELSE '[]' END)), '{}') FROM agents a WHERE a.id = t.agent_id)
        INTO v_message, v_status, v_seconds, v_calls, v_input, v_output, v_cost, v_plugins;
    IF p_generation IS NULL THEN
        IF v_message IS NOT NULL THEN
            RETURN QUERY SELECT v_message, v_status, v_seconds, v_calls, v_input, v_output,
                v_cost, v_plugins, NULL::uuid, NULL::uuid, NULL::uuid, NULL::integer, NULL::text;
        END IF;
        RETURN;
    END IF;
    RETURN QUERY SELECT v_message, v_status, v_seconds, v_calls, v_input, v_output, v_cost,
            v_plugins, n.turn_id, n.agent_id, n.message_id, n.attempt, n.error
        FROM (SELECT 1) one LEFT JOIN carrier_next_turn(v_room, p_generation, p_lease_s) n
        ON true;
END
$$;
