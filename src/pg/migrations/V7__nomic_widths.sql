-- HNSW indexes for nomic-embed-text-v1.5's Matryoshka widths (512 and 256 dimensions), so
-- bots that chose them are searched by index like the 384 (MiniLM) and 768 (nomic) ones.

CREATE INDEX chunks_hnsw_512 ON chunks
    USING hnsw ((embedding::vector(512)) vector_cosine_ops)
    WHERE vector_dims(embedding) = 512;
CREATE INDEX chunks_hnsw_256 ON chunks
    USING hnsw ((embedding::vector(256)) vector_cosine_ops)
    WHERE vector_dims(embedding) = 256;
