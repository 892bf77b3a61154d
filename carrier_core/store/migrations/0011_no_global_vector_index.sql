-- Writes that stay flat as memories grow. No recall walks an index over every memory's
-- embedding any more: facts about a person and a room's earlier messages are compared exactly
-- among the newest memories their filter matches (read through b-tree indexes), knowledge
-- has its own index (0009). The global HNSW index only cost: keeping it up to date was most
-- of an insert's time at 1M memories (bench/turn_overhead.py), and a walk of it, filtered
-- afterwards, missed most of a small filter's rows (bench/recall_scale.py).
DROP INDEX IF EXISTS memories_embedding;
