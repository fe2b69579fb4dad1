-- Vault services: hosts a vault binds to one of its credentials, which
-- paddock's egress path adds to a VM's requests to that host; and the
-- requests it sent so (method, path, status: never a body, query or
-- secret).
CREATE TABLE vault_services (
    id           TEXT PRIMARY KEY,
    vault_id     TEXT NOT NULL REFERENCES vaults(id) ON DELETE CASCADE,
    account_id   TEXT NOT NULL,
    host         TEXT NOT NULL,
    -- The auth_config as the API shows it: credential names, no values.
    auth_config  TEXT NOT NULL,
    description  TEXT,
    enabled      INTEGER NOT NULL,
    created_at   INTEGER NOT NULL,
    UNIQUE (vault_id, host)
);

CREATE TABLE vault_requests (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    vault_id         TEXT NOT NULL REFERENCES vaults(id) ON DELETE CASCADE,
    account_id       TEXT NOT NULL,
    vm_id            TEXT NOT NULL,
    service_id       TEXT NOT NULL,
    host             TEXT NOT NULL,
    method           TEXT NOT NULL,
    path             TEXT NOT NULL,
    status           INTEGER NOT NULL,
    duration_ms      INTEGER NOT NULL,
    credential_name  TEXT NOT NULL,
    created_at       INTEGER NOT NULL
);

CREATE INDEX vault_requests_by_vault ON vault_requests(vault_id, id DESC);
