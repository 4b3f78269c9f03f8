-- Bots and their content: pages by (bot, url), and chunks with their vectors (pgvector).
-- A chunk an ingest staged carries that ingest's id in staged_by until the ingest's
-- commit names it on a page (or its discard removes it).

CREATE EXTENSION IF NOT EXISTS vector;

CREATE TABLE bots (
    id     text COLLATE "C" PRIMARY KEY,
    record jsonb NOT NULL
);

CREATE TABLE pages (
    bot    text COLLATE "C" NOT NULL,
    url    text COLLATE "C" NOT NULL,
    record jsonb NOT NULL,
    PRIMARY KEY (bot, url)
);

CREATE SEQUENCE chunk_ids;

CREATE TABLE chunks (
    id        bigint PRIMARY KEY,
    bot       text COLLATE "C" NOT NULL,
    record    jsonb NOT NULL,
    embedding vector NOT NULL,
    staged_by text COLLATE "C"
);
CREATE INDEX chunks_bot ON chunks (bot);
CREATE INDEX chunks_staged ON chunks (staged_by) WHERE staged_by IS NOT NULL;
