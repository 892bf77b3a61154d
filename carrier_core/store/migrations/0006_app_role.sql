-- Least privilege: the deployed functions connect as a login that belongs to the group role
-- carrier_app, which may read and write the rows of Carrier's tables and nothing else: no
-- DDL, no TRUNCATE, no roles, no other tables. Migrations (and `carrier reembed`, which
-- changes a column) keep running as the tables' owner. Logins are made outside migrations,
-- because only a deploy knows their passwords: the stack's migrate function makes its own
-- (carrier_core/store/roles.py); for a database you bring, see the README.
--
-- Making a role needs CREATEROLE (an RDS master user has it). A login without it stops here
-- rather than leaving the functions a role with no grants.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'carrier_app') THEN
        CREATE ROLE carrier_app NOLOGIN;
    END IF;
EXCEPTION
    WHEN insufficient_privilege THEN
        RAISE EXCEPTION 'this login may not create the role carrier_app (it lacks CREATEROLE):'
            ' have an administrator run CREATE ROLE carrier_app NOLOGIN, then migrate again';
    -- Another database of the same server made it meanwhile (roles are server-wide).
    WHEN duplicate_object OR unique_violation THEN
        NULL;
END
$$;

-- Where the tables are: the schema these migrations create them in (the first one of the
-- search path, usually public). GRANT CONNECT matters only where PUBLIC's was revoked; a login
-- that does not own the database merely gets a warning.
DO $$
BEGIN
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO carrier_app', current_database());
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO carrier_app', current_schema());
END
$$;

-- Rows only: not TRUNCATE (it skips row locks and triggers), REFERENCES or TRIGGER.
GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE
    tenants, api_keys, connections, webhooks, webhook_deliveries, agents, entities, worlds,
    rooms, participants, memories, relationships, turns, turn_steps, model_calls
    TO carrier_app;
-- A cold start checks the schema's version; only migrations write it.
GRANT SELECT ON TABLE schema_migrations TO carrier_app;
-- nextval only (USAGE): not setval (UPDATE), which could rewind runner_generations and name
-- a runner's execution again. Identity columns (memories.seq, webhook_deliveries.seq) need no
-- grant of their own.
GRANT USAGE ON SEQUENCE runner_generations, turn_steps_id_seq, model_calls_id_seq TO carrier_app;
-- PUBLIC may execute functions by default; granted anyway in case an administrator revoked it.
GRANT EXECUTE ON FUNCTION carrier_next_turn(uuid, bigint, double precision) TO carrier_app;

-- What later migrations add (made by this same login) is granted alike when it is made.
DO $$
BEGIN
    EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %I'
                   ' GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO carrier_app',
                   current_schema());
    EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %I GRANT USAGE ON SEQUENCES TO carrier_app',
                   current_schema());
    EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %I GRANT EXECUTE ON FUNCTIONS TO carrier_app',
                   current_schema());
END
$$;
