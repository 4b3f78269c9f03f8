-- docent's PostgreSQL schema, first step: API keys, crawl jobs, operator accounts and
-- their sessions. Each row keeps the record docent's redb store keeps (serde JSON, as
-- jsonb), with the columns lookups and uniqueness need beside it.

CREATE TABLE keys (
    id     text PRIMARY KEY,
    record jsonb NOT NULL
);

CREATE TABLE jobs (
    id     text PRIMARY KEY,
    record jsonb NOT NULL
);

CREATE TABLE accounts (
    id     text PRIMARY KEY,
    -- Normalised: the login name, unique.
    email  text NOT NULL UNIQUE,
    record jsonb NOT NULL
);

CREATE TABLE sessions (
    -- The token's sha256.
    id      text PRIMARY KEY,
    account text NOT NULL,
    record  jsonb NOT NULL
);
CREATE INDEX sessions_account ON sessions (account);
