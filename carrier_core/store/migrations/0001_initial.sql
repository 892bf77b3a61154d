-- The whole state of every agent: Carrier's code holds none between steps.
CREATE EXTENSION IF NOT EXISTS vector;

CREATE TABLE agents (
    id          uuid PRIMARY KEY,
    name        text NOT NULL,
    character   jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE entities (
    id          uuid PRIMARY KEY,
    agent_id    uuid NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    names       text[] NOT NULL DEFAULT '{}',
    metadata    jsonb NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE worlds (
    id          uuid PRIMARY KEY,
    agent_id    uuid NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    name        text NOT NULL,
    metadata    jsonb NOT NULL DEFAULT '{}'
);

CREATE TABLE rooms (
    id          uuid PRIMARY KEY,
    agent_id    uuid NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    world_id    uuid REFERENCES worlds(id) ON DELETE SET NULL,
    name        text NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('dm', 'group')),
    source      text NOT NULL,
    metadata    jsonb NOT NULL DEFAULT '{}',
    -- The reflection evaluator's bookmark: messages after this seq are not yet reflected on.
    reflected_seq bigint NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE participants (
    room_id     uuid NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
    entity_id   uuid NOT NULL REFERENCES entities(id) ON DELETE CASCADE,
    joined_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (room_id, entity_id)
);

CREATE TABLE memories (
    id          uuid PRIMARY KEY,
    -- Store order: timestamps tie, this does not. Conversations are read in seq order.
    seq         bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    agent_id    uuid NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    entity_id   uuid NOT NULL,
    room_id     uuid REFERENCES rooms(id) ON DELETE CASCADE,
    world_id    uuid,
    kind        text NOT NULL CHECK (kind IN ('message', 'fact', 'document', 'fragment')),
    content     jsonb NOT NULL,
    embedding   vector(384),
    dedupe_key  text,
    -- The turn that wrote this memory (replies, facts), for reading a turn's results.
    turn_id     uuid,
    metadata    jsonb NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- Idempotent stores: a sender's message id in a room, a reply's place in its turn,
-- a knowledge text's hash.
CREATE UNIQUE INDEX memories_dedupe ON memories (agent_id, kind, room_id, dedupe_key)
    NULLS NOT DISTINCT WHERE dedupe_key IS NOT NULL;
-- Recent messages of a room, and facts about an entity.
CREATE INDEX memories_room_recent ON memories (room_id, kind, seq DESC);
CREATE INDEX memories_agent_entity ON memories (agent_id, kind, entity_id);
CREATE INDEX memories_turn ON memories (turn_id) WHERE turn_id IS NOT NULL;
-- Memories still waiting for the embed step.
CREATE INDEX memories_unembedded ON memories (agent_id, seq) WHERE embedding IS NULL;
CREATE INDEX memories_embedding ON memories USING hnsw (embedding vector_cosine_ops);

CREATE TABLE relationships (
    agent_id          uuid NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    source_entity_id  uuid NOT NULL,
    target_entity_id  uuid NOT NULL,
    tags              text[] NOT NULL DEFAULT '{}',
    metadata          jsonb NOT NULL DEFAULT '{}',
    updated_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (agent_id, source_entity_id, target_entity_id)
);

CREATE TABLE turns (
    id          uuid PRIMARY KEY,
    agent_id    uuid NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    room_id     uuid NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
    message_id  uuid NOT NULL UNIQUE REFERENCES memories(id) ON DELETE CASCADE,
    status      text NOT NULL,
    steps_taken integer NOT NULL DEFAULT 0,
    decision    jsonb,
    state       jsonb NOT NULL DEFAULT '{}',
    error       text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX turns_room ON turns (room_id, created_at);

-- What each step of a turn did: the turn's history, one row per step run.
CREATE TABLE turn_steps (
    id            bigserial PRIMARY KEY,
    turn_id       uuid NOT NULL REFERENCES turns(id) ON DELETE CASCADE,
    step          text NOT NULL,
    -- Identifies one run of a step within the turn (e.g. act:1:0), so a retry finds it.
    key           text,
    status        text NOT NULL CHECK (status IN ('ok', 'error', 'skipped')),
    detail        jsonb NOT NULL DEFAULT '{}',
    model_calls   integer NOT NULL DEFAULT 0,
    input_tokens  integer NOT NULL DEFAULT 0,
    output_tokens integer NOT NULL DEFAULT 0,
    started_at    timestamptz NOT NULL,
    finished_at   timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX turn_steps_turn ON turn_steps (turn_id, id);
CREATE UNIQUE INDEX turn_steps_key ON turn_steps (turn_id, key) WHERE key IS NOT NULL;
