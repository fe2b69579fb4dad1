-- State that outlives a VM: snapshots, volumes with checkpoints, and
-- vaults of sealed secrets; and each VM's options for them.

-- JSON: snapshot_id, snapshot_on_terminate, snapshot_name, vault_ids,
-- env_status, env_error.
ALTER TABLE vms ADD COLUMN options TEXT NOT NULL DEFAULT '{}';

CREATE TABLE snapshots (
    id             TEXT PRIMARY KEY,
    account_id     TEXT NOT NULL REFERENCES accounts(id),
    name           TEXT NOT NULL,
    kind           TEXT NOT NULL,
    status         TEXT NOT NULL,
    error          TEXT,
    vm_id          TEXT,
    source         TEXT NOT NULL,
    base_variant   TEXT,
    -- the snapshot's image, once ready
    digest         TEXT,
    config_digest  TEXT,
    config         TEXT,
    layers         TEXT,
    size           INTEGER NOT NULL,
    created_at     INTEGER NOT NULL,
    UNIQUE (account_id, name)
);

CREATE TABLE volumes (
    id          TEXT PRIMARY KEY,
    account_id  TEXT NOT NULL REFERENCES accounts(id),
    name        TEXT NOT NULL,
    size_bytes  INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

CREATE INDEX volumes_by_account ON volumes(account_id, created_at DESC);

CREATE TABLE checkpoints (
    id          TEXT PRIMARY KEY,
    volume_id   TEXT NOT NULL REFERENCES volumes(id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE INDEX checkpoints_by_volume ON checkpoints(volume_id, created_at DESC);

-- Volumes mounted in VMs that still hold resources.
CREATE TABLE attachments (
    vm_id       TEXT NOT NULL,
    volume_id   TEXT NOT NULL REFERENCES volumes(id),
    mount_path  TEXT NOT NULL,
    mode        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (vm_id, mount_path)
);

CREATE INDEX attachments_by_volume ON attachments(volume_id);

CREATE TABLE vaults (
    id           TEXT PRIMARY KEY,
    account_id   TEXT NOT NULL REFERENCES accounts(id),
    name         TEXT NOT NULL,
    description  TEXT,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);

CREATE INDEX vaults_by_account ON vaults(account_id, created_at DESC);

-- Values only sealed (AEAD under the master key named by key_id).
CREATE TABLE credentials (
    id               TEXT PRIMARY KEY,
    vault_id         TEXT NOT NULL REFERENCES vaults(id) ON DELETE CASCADE,
    name             TEXT NOT NULL,
    credential_type  TEXT NOT NULL,
    description      TEXT,
    key_id           TEXT NOT NULL,
    nonce            BLOB NOT NULL,
    ciphertext       BLOB NOT NULL,
    created_at       INTEGER NOT NULL,
    rotated_at       INTEGER,
    UNIQUE (vault_id, name)
);
