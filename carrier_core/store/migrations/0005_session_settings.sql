-- Session settings live in the database, not in each connection's startup packet: RDS Proxy
-- refuses startup `options`, and PgBouncer (transaction pooling) refuses what it does not
-- know. Every new session of this database (or, where the login may not alter the
-- database, of this login) gets them.
--   hnsw.iterative_scan: filtered HNSW searches keep scanning until enough rows pass the
--   filter (pgvector 0.8), instead of returning fewer rows than asked.
DO $$
BEGIN
    -- Only a superuser may set a parameter of a library not yet loaded in the session (as
    -- on a deploy whose first migration is this one): using the vector type loads pgvector.
    PERFORM '[1]'::vector;
    EXECUTE format('ALTER DATABASE %I SET hnsw.iterative_scan = relaxed_order',
                   current_database());
EXCEPTION WHEN insufficient_privilege THEN
    EXECUTE 'ALTER ROLE CURRENT_USER SET hnsw.iterative_scan = relaxed_order';
END
$$;
-- And in this session too, which a pooler may hand on to others: the settings above reach
-- only sessions that start after them.
SET hnsw.iterative_scan = relaxed_order;
