-- paddock's first schema: accounts, API keys, VMs and async executions.
-- Timestamps are Unix milliseconds (UTC).

CREATE TABLE accounts (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,
    account_id  TEXT NOT NULL REFERENCES accounts(id),
    name        TEXT NOT NULL,
    prefix      TEXT NOT NULL,
    hash        TEXT NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);

CREATE TABLE vms (
    id                  TEXT PRIMARY KEY,
    account_id          TEXT NOT NULL REFERENCES accounts(id),
    session_id          TEXT NOT NULL,
    status              TEXT NOT NULL,
    status_reason       TEXT,
    provider            TEXT NOT NULL,
    image_variant       TEXT NOT NULL,
    memory_mb           INTEGER NOT NULL,
    vcpu_count          INTEGER NOT NULL,
    pids_max            INTEGER NOT NULL,
    metadata            TEXT NOT NULL,
    env                 TEXT NOT NULL,
    lifetime_seconds    INTEGER,
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL,
    started_at          INTEGER,
    expires_at          INTEGER,
    terminated_at       INTEGER,
    runtime_pid         INTEGER,
    runtime_start_ticks INTEGER,
    -- a monotonic insert order: keyset pagination needs a total order and
    -- two VMs may share a millisecond
    seq                 INTEGER NOT NULL UNIQUE
);

CREATE INDEX vms_by_account ON vms(account_id, seq DESC);
CREATE INDEX vms_by_session ON vms(account_id, session_id, seq DESC);
CREATE INDEX vms_by_status ON vms(status);
CREATE INDEX vms_by_expiry ON vms(expires_at) WHERE expires_at IS NOT NULL;

CREATE TABLE executions (
    id              TEXT PRIMARY KEY,
    account_id      TEXT NOT NULL REFERENCES accounts(id),
    vm_id           TEXT NOT NULL,
    session_id      TEXT NOT NULL,
    status          TEXT NOT NULL,
    stdout          TEXT NOT NULL,
    stderr          TEXT NOT NULL,
    exit_code       INTEGER,
    execution_time  REAL,
    cpu_time        REAL,
    error           TEXT,
    created_at      INTEGER NOT NULL,
    completed_at    INTEGER
);

CREATE INDEX executions_running ON executions(status);
