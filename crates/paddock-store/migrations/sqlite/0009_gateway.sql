-- The account gateway's resources (clusters, node pools, environments,
-- batch jobs): each is a JSON document keyed by kind, account and id, as a
-- control plane keeps its objects. The columns beside the document are the
-- ones the server itself looks rows up by.
CREATE TABLE gateway_resources (
    kind        TEXT NOT NULL,
    account_id  TEXT NOT NULL REFERENCES accounts(id),
    id          TEXT NOT NULL,
    state       TEXT NOT NULL,
    doc         TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (kind, account_id, id)
);

CREATE INDEX gateway_resources_by_state ON gateway_resources(kind, state);

-- A batch job's output, kept after its sandbox is gone.
CREATE TABLE batch_job_logs (
    account_id  TEXT NOT NULL REFERENCES accounts(id),
    job_id      TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    stream      TEXT NOT NULL,
    data        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (account_id, job_id, seq)
);

-- Keys act for a user of their account (the gateway's `createdBy`, its
-- sharing rules, and whose SSH keys log in where).
ALTER TABLE api_keys ADD COLUMN user_email TEXT NOT NULL DEFAULT '';
ALTER TABLE ssh_keys ADD COLUMN user_email TEXT NOT NULL DEFAULT '';
