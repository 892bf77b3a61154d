-- Knowledge recall of one agent: its fragments are a small share of all memories, and a small
-- agent's a tiny one. A walk of the global HNSW index, filtered afterwards, found as few as a
-- quarter of an agent's true nearest fragments at 1M memories and took up to 250 ms
-- (bench/recall_scale.py, with the planner steered to walk it). Fragments get an index of
-- their own, walked for agents with a large knowledge base; a small one is read whole and
-- sorted, which is exact and as fast (Store.search_memories).
-- The search names the kind as a literal: a generic plan (psycopg prepares a statement run
-- often) may use a partial index only if the query implies its predicate without parameters.
CREATE INDEX IF NOT EXISTS memories_fragment_embedding ON memories
    USING hnsw (embedding vector_cosine_ops) WHERE kind = 'fragment';
