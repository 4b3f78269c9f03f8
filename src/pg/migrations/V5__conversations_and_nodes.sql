-- Conversations with their messages, leads, and what was erased (so a turn answered
-- while its conversation, user or bot was being erased writes nothing).

CREATE TABLE conversations (
    id     text COLLATE "C" PRIMARY KEY,
    bot    text COLLATE "C" NOT NULL,
    usr    text COLLATE "C",
    record jsonb NOT NULL
);
CREATE INDEX conversations_bot ON conversations (bot, id);
CREATE INDEX conversations_usr ON conversations (usr, id) WHERE usr IS NOT NULL;

CREATE TABLE messages (
    conversation text COLLATE "C" NOT NULL,
    position     integer NOT NULL,
    id           text COLLATE "C" NOT NULL,
    record       jsonb NOT NULL,
    PRIMARY KEY (conversation, position)
);
CREATE INDEX messages_id ON messages (id);

CREATE TABLE leads (
    bot    text COLLATE "C" NOT NULL,
    -- `lead_` + creation time + random: ids sort by time.
    id     text COLLATE "C" NOT NULL,
    usr    text COLLATE "C",
    record jsonb NOT NULL,
    PRIMARY KEY (bot, id)
);
CREATE INDEX leads_usr ON leads (usr) WHERE usr IS NOT NULL;

-- `conv/<id>`, `bot/<id>`, `user/<bot>/<user>`: when each was erased (Unix ms).
CREATE TABLE erasures (
    subject text COLLATE "C" PRIMARY KEY,
    at_ms   bigint NOT NULL
);
CREATE INDEX erasures_at ON erasures (at_ms);

-- Erasing a conversation erases the events about it.
CREATE INDEX events_conversation ON events ((data->>'conversation_id'));

-- The node that staged a chunk (it holds the advisory lock `docent-node:<id>` while it
-- lives): another node removes what a dead node staged and never committed.
ALTER TABLE chunks ADD COLUMN staged_node text COLLATE "C";

-- The node that queued or runs an unfinished job; another node adopts the job once that
-- node is gone.
ALTER TABLE jobs ADD COLUMN node text COLLATE "C";
CREATE INDEX jobs_unfinished ON jobs (node)
    WHERE record->>'state' IN ('queued', 'running');

-- Secrets every node signs with (widget session tokens), by name.
CREATE TABLE secrets (
    name  text COLLATE "C" PRIMARY KEY,
    value bytea NOT NULL
);

-- The node sending a delivery it claimed (until its attempt is recorded): a node that
-- opens the store gives a gone node's claims back at once.
ALTER TABLE deliveries ADD COLUMN claimed_by text COLLATE "C";
CREATE INDEX deliveries_claimed ON deliveries (claimed_by) WHERE claimed_by IS NOT NULL;
