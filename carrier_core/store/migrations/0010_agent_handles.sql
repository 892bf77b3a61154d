-- One identity per agent: a tenant addresses each of its agents by a handle (a slug of the
-- character's name, `carrier_core.character.handle_for`) as well as by its id, so the API,
-- `carrier dev` and `carrier chat` all find the same agent, and a second agent of one name is
-- refused rather than made. Agents stored before get the slug of their name; a tenant's
-- second and later agents of one slug (the API used to make a new one per POST) get the
-- first 8 hex digits of their id after it, oldest first keeping the plain slug.
ALTER TABLE agents ADD COLUMN IF NOT EXISTS handle text;
WITH slugs AS (
    SELECT id, tenant_id, created_at,
           coalesce(nullif(trim(BOTH '-' FROM left(trim(BOTH '-' FROM
               lower(regexp_replace(name, '[^A-Za-z0-9]+', '-', 'g'))), 48)), ''), 'agent') AS slug
    FROM agents WHERE handle IS NULL
), numbered AS (
    SELECT id, slug, row_number() OVER (PARTITION BY tenant_id, slug ORDER BY created_at, id) AS n
    FROM slugs
)
UPDATE agents SET handle = CASE WHEN n = 1 THEN slug ELSE slug || '-' || left(agents.id::text, 8) END
FROM numbered WHERE agents.id = numbered.id;
ALTER TABLE agents ALTER COLUMN handle SET NOT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS agents_tenant_handle ON agents (tenant_id, handle);
