-- The webhook outbox: webhooks, events, and each (webhook, event) delivery with its
-- attempts (the record) and, while it is pending, when it is next due.

CREATE TABLE webhooks (
    id     text COLLATE "C" PRIMARY KEY,
    bot    text COLLATE "C" NOT NULL,
    record jsonb NOT NULL
);
CREATE INDEX webhooks_bot ON webhooks (bot);

CREATE TABLE events (
    -- `evt_` + creation time + random: ids sort by time.
    id      text COLLATE "C" PRIMARY KEY,
    bot     text COLLATE "C",
    kind    text NOT NULL,
    created bigint NOT NULL,
    data    jsonb NOT NULL
);
CREATE INDEX events_bot ON events (bot);

CREATE TABLE deliveries (
    webhook text COLLATE "C" NOT NULL,
    event   text COLLATE "C" NOT NULL,
    record  jsonb NOT NULL,
    -- Unix ms of the next attempt while pending; null once delivered or failed.
    due_ms  bigint,
    PRIMARY KEY (webhook, event)
);
CREATE INDEX deliveries_due ON deliveries (due_ms, webhook, event) WHERE due_ms IS NOT NULL;
CREATE INDEX deliveries_event ON deliveries (event);
