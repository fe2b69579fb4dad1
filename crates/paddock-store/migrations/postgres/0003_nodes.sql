-- sqlite 0020 in PostgreSQL's types.
-- The nodes sharing the store: registered at start, alive while their
-- heartbeat is younger than their lease.
CREATE TABLE nodes (
    id            TEXT PRIMARY KEY,
    address       TEXT NOT NULL,
    providers     TEXT NOT NULL,
    memory_mb     BIGINT NOT NULL,
    vcpus         BIGINT NOT NULL,
    gpus          TEXT NOT NULL,
    labels        TEXT NOT NULL,
    started_at    BIGINT NOT NULL,
    heartbeat_at  BIGINT NOT NULL,
    lease_ms      BIGINT NOT NULL
);
-- Work one process of an installation does alone, and who does it until when.
CREATE TABLE leases (
    name        TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,
    expires_at  BIGINT NOT NULL
);
