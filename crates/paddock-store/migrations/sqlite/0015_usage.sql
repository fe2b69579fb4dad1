-- Measured consumption, per VM (or per account for stored data: vm_id
-- '') and UTC day; and each VM's counters at its last sample.
CREATE TABLE usage (
    account_id          TEXT NOT NULL,
    vm_id               TEXT NOT NULL,
    day                 TEXT NOT NULL,
    cpu_seconds         REAL NOT NULL DEFAULT 0,
    memory_gib_seconds  REAL NOT NULL DEFAULT 0,
    egress_bytes        INTEGER NOT NULL DEFAULT 0,
    storage_gib_seconds REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (account_id, vm_id, day)
);
CREATE INDEX usage_by_vm ON usage (vm_id);

CREATE TABLE usage_cursors (
    vm_id        TEXT PRIMARY KEY,
    cpu_ns       INTEGER NOT NULL,
    egress_bytes INTEGER NOT NULL,
    at           INTEGER NOT NULL
);
