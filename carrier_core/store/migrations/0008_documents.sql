-- Knowledge documents: what an agent was given to know (a character's knowledge item, a file,
-- an upload), each cut into fragments, the `fragment` memories the KNOWLEDGE provider recalls.
-- Safe to run again (IF NOT EXISTS, ON CONFLICT, updates of what is not linked yet).
CREATE TABLE IF NOT EXISTS documents (
    id          uuid PRIMARY KEY,
    -- Page order (newest first); kept when a changed file replaces the document's content.
    seq         bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    agent_id    uuid NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    title       text NOT NULL,
    -- Where it came from: a file's absolute path, `upload:<file name>`, or
    -- `character:<sha256>` for a knowledge text of the character. The same source with new
    -- content replaces the document's fragments.
    source      text NOT NULL,
    content_type text NOT NULL,
    -- sha256 of the bytes given (the file, the upload, the text): the same content is
    -- stored once per agent.
    sha256      text NOT NULL,
    -- pending: fragments stored, not all embedded yet; ready: every fragment embedded (it
    -- can be recalled); failed: the last attempt to embed them failed (`error`); the next
    -- embed job of the agent tries again.
    status      text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'ready', 'failed')),
    error       text,
    fragments   integer NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (agent_id, source),
    UNIQUE (agent_id, sha256)
);
CREATE INDEX IF NOT EXISTS documents_agent_page ON documents (agent_id, seq DESC);
-- The embed step looks for the agent's documents still waiting: few, usually none.
CREATE INDEX IF NOT EXISTS documents_waiting ON documents (agent_id) WHERE status <> 'ready';

-- A fragment belongs to its document: removing the document removes its fragments.
ALTER TABLE memories ADD COLUMN IF NOT EXISTS document_id uuid
    REFERENCES documents(id) ON DELETE CASCADE;
CREATE INDEX IF NOT EXISTS memories_document ON memories (document_id)
    WHERE document_id IS NOT NULL;

-- Knowledge texts stored before documents existed: a `document` memory (dedupe key: the
-- text's sha256) and its `fragment` memories (metadata.document: the same sha256). Each
-- becomes a document of the same id, its fragments and the document memory linked to it.
INSERT INTO documents (id, agent_id, title, source, content_type, sha256, status, fragments,
                       created_at, updated_at)
SELECT m.id, m.agent_id, left(split_part(m.content->>'text', E'\n', 1), 80),
       'character:' || m.dedupe_key, 'text/plain', m.dedupe_key,
       CASE WHEN EXISTS (SELECT 1 FROM memories f WHERE f.agent_id = m.agent_id
                         AND f.kind = 'fragment' AND f.metadata->>'document' = m.dedupe_key
                         AND f.embedding IS NULL) THEN 'pending' ELSE 'ready' END,
       (SELECT count(*) FROM memories f WHERE f.agent_id = m.agent_id AND f.kind = 'fragment'
        AND f.metadata->>'document' = m.dedupe_key),
       m.created_at, m.created_at
FROM memories m
WHERE m.kind = 'document' AND m.room_id IS NULL AND m.dedupe_key ~ '^[0-9a-f]{64}$'
ON CONFLICT DO NOTHING;
UPDATE memories m SET document_id = d.id FROM documents d
WHERE m.agent_id = d.agent_id AND m.room_id IS NULL AND m.document_id IS NULL
  AND ((m.kind = 'fragment' AND m.metadata->>'document' = d.sha256)
       OR (m.kind = 'document' AND m.id = d.id));

-- Rows only, as every table of migration 0006 (its default privileges grant this too when
-- the same login migrates; said here for a database whose owner changed since).
GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE documents TO carrier_app;
