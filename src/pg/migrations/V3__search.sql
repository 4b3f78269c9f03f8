-- Search over chunks in the database: pgvector HNSW indexes for cosine distance (one per
-- vector length docent's embedders make, each over the chunks of that length), and a
-- full-text vector of the chunk's title, headings and text with a GIN index.

CREATE INDEX chunks_hnsw_384 ON chunks
    USING hnsw ((embedding::vector(384)) vector_cosine_ops)
    WHERE vector_dims(embedding) = 384;
CREATE INDEX chunks_hnsw_768 ON chunks
    USING hnsw ((embedding::vector(768)) vector_cosine_ops)
    WHERE vector_dims(embedding) = 768;

ALTER TABLE chunks ADD COLUMN words tsvector
    GENERATED ALWAYS AS (
        jsonb_to_tsvector('english'::regconfig, record - 'bot' - 'url', '["string"]')
    ) STORED;
CREATE INDEX chunks_words ON chunks USING gin (words);
