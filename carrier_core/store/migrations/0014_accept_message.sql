-- Taking a message in, in one round trip (`carrier_core/turn/ingest.py`): the sender, the
-- world (whoever speaks first owns it), the room and membership, the message, its turn, the
-- turn's `ingest` step, and the room's runner if it is free. The statements are those ingest
-- sent one by one, in the same order, in one transaction: the room row is locked by its
-- upsert before the message takes its place in line (seq), so a room's messages are numbered
-- in the order they commit.
--
-- A message whose client id was seen before (its dedupe key is taken) changes nothing here:
-- `turn_id` comes back null, and ingest compares the stored one and finds its turn the long
-- way. That is a redelivery, rare, and may be refused (a different text under one id), so
-- it must not rename its sender first. (Two deliveries racing in before either is stored
-- both get this far; the second stops at the message, having changed what the first did.)
CREATE OR REPLACE FUNCTION carrier_accept(
    p_entity uuid, p_agent uuid, p_name text,
    p_world uuid, p_world_name text,
    p_room uuid, p_room_name text, p_room_kind text, p_source text,
    p_message uuid, p_content jsonb, p_dedupe_key text,
    p_turn uuid, p_started_at timestamptz, p_lease_s double precision, p_take_expired boolean
)
RETURNS TABLE (joined boolean, message_id uuid, turn_id uuid, runner_generation bigint,
               plugins text[])
LANGUAGE plpgsql AS $$
DECLARE
    v_joined boolean;
    v_message uuid;
    v_generation bigint;
BEGIN
    IF p_dedupe_key IS NOT NULL AND EXISTS (SELECT 1 FROM memories m WHERE m.agent_id = p_agent
            AND m.kind = 'message' AND m.room_id = p_room AND m.dedupe_key = p_dedupe_key) THEN
        RETURN QUERY SELECT false, NULL::uuid, NULL::uuid, NULL::bigint, NULL::text[];
        RETURN;
    END IF;
    INSERT INTO entities (id, agent_id, names) VALUES (p_entity, p_agent, ARRAY[p_name])
        ON CONFLICT (id) DO UPDATE SET
        names = array_prepend(excluded.names[1], array_remove(entities.names, excluded.names[1]))
        WHERE entities.names[1] IS DISTINCT FROM excluded.names[1];
    IF p_world IS NOT NULL THEN
        INSERT INTO worlds (id, agent_id, name, metadata) VALUES (p_world, p_agent,
            coalesce(p_world_name, p_world::text),
            jsonb_build_object('ownership', jsonb_build_object('ownerId', p_entity::text),
                               'roles', jsonb_build_object(p_entity::text, 'OWNER')))
            ON CONFLICT (id) DO NOTHING;
    END IF;
    -- DO UPDATE locks the room row even when nothing changes (see above).
    INSERT INTO rooms (id, agent_id, world_id, name, kind, source)
        VALUES (p_room, p_agent, p_world, p_room_name, p_room_kind, p_source)
        ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, name = excluded.name
        WHERE (rooms.kind, rooms.name) IS DISTINCT FROM (excluded.kind, excluded.name);
    INSERT INTO participants (room_id, entity_id) VALUES (p_room, p_entity) ON CONFLICT DO NOTHING;
    v_joined := FOUND;
    INSERT INTO memories (id, agent_id, entity_id, room_id, world_id, kind, content, dedupe_key)
        VALUES (p_message, p_agent, p_entity, p_room, p_world, 'message', p_content, p_dedupe_key)
        ON CONFLICT (agent_id, kind, room_id, dedupe_key) WHERE dedupe_key IS NOT NULL
        DO NOTHING RETURNING id INTO v_message;
    IF v_message IS NULL THEN
        RETURN QUERY SELECT v_joined, NULL::uuid, NULL::uuid, NULL::bigint, NULL::text[];
        RETURN;
    END IF;
    INSERT INTO turns (id, agent_id, room_id, message_id, status)
        VALUES (p_turn, p_agent, p_room, v_message, 'queued');
    INSERT INTO turn_steps (turn_id, step, status, detail, started_at)
        VALUES (p_turn, 'ingest', 'ok', jsonb_build_object('message_id', v_message::text),
                p_started_at);
    UPDATE rooms r SET runner_generation = nextval('runner_generations'),
        runner_until = now() + p_lease_s * interval '1 second'
        WHERE r.id = p_room
          AND (r.runner_until IS NULL OR (p_take_expired AND r.runner_until < now()))
        RETURNING r.runner_generation INTO v_generation;
    RETURN QUERY SELECT v_joined, v_message, p_turn, v_generation,
        (SELECT coalesce(array(SELECT jsonb_array_elements_text(CASE WHEN
            jsonb_typeof(a.character -> 'plugins') = 'array' THEN a.character -> 'plugins'
            ELSE '[]' END)), '{}') FROM agents a WHERE a.id = p_agent);
END
$$;
