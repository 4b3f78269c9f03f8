-- docent's PostgreSQL schema, first step: API keys, crawl jobs, operator accounts and
-- their sessions. Each row keeps the record docent's redb store keeps (serde JSON, as
-- jsonb), with the columns lookups and uniqueness need beside it. Keys compare as bytes
-- (COLLATE "C"), as redb's do, whatever the database's collation.

CREATE TABLE keys (
    id     text COLLATE "C" PRIMARY KEY,
    record jsonb NOT NULL
);

CREATE TABLE jobs (
    id     text COLLATE "C" PRIMARY KEY,
    record jsonb NOT NULL
);

CREATE TABLE accounts (
    id     text COLLATE "C" PRIMARY KEY,
    -- Normalised: the login name, unique.
    email  text COLLATE "C" NOT NULL UNIQUE,
    record jsonb NOT NULL
);

CREATE TABLE sessions (
    -- The token's sha256.
    id      text COLLATE "C" PRIMARY KEY,
    account text COLLATE "C" NOT NULL,
    record  jsonb NOT NULL
);
CREATE INDEX sessions_account ON sessions (account);
