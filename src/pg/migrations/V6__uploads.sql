-- Documents uploaded to `POST /v1/bots/{id}/documents`, kept until their job has run, so
-- whichever node takes the job (or the same one after a restart) reads them from here.
-- A finished job's rows are deleted in the transaction that records its end.

CREATE TABLE uploads (
    job   text COLLATE "C" NOT NULL,
    name  text COLLATE "C" NOT NULL,
    bytes bytea NOT NULL,
    PRIMARY KEY (job, name)
);
