-- paddock's schema for PostgreSQL: the SQLite migrations' final schema
-- (migrations/sqlite, 0001-0018) in PostgreSQL's types. Kept in step with
-- them by the store's test `the_backends_share_one_schema`, which compares
-- both column by column. A change to the schema is a new migration in each
-- set.

-- The VMs' creation order (vms.seq): two writers must never take the
-- same place, which MAX(seq) + 1 would give them.
CREATE SEQUENCE vms_seq;

CREATE TABLE accounts (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,
    account_id  TEXT NOT NULL REFERENCES accounts(id),
    name        TEXT NOT NULL,
    prefix      TEXT NOT NULL,
    hash        TEXT NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL,
    revoked_at  BIGINT,
    user_email TEXT NOT NULL DEFAULT '',
    description TEXT,
    expires_at BIGINT);

CREATE TABLE vms (
    id                  TEXT PRIMARY KEY,
    account_id          TEXT NOT NULL REFERENCES accounts(id),
    session_id          TEXT NOT NULL,
    status              TEXT NOT NULL,
    status_reason       TEXT,
    provider            TEXT NOT NULL,
    image_variant       TEXT NOT NULL,
    memory_mb           BIGINT NOT NULL,
    vcpu_count          BIGINT NOT NULL,
    pids_max            BIGINT NOT NULL,
    metadata            TEXT NOT NULL,
    env                 TEXT NOT NULL,
    lifetime_seconds    BIGINT,
    created_at          BIGINT NOT NULL,
    updated_at          BIGINT NOT NULL,
    started_at          BIGINT,
    expires_at          BIGINT,
    terminated_at       BIGINT,
    runtime_pid         BIGINT,
    runtime_start_ticks BIGINT,
    -- a monotonic insert order: keyset pagination needs a total order and
    -- two VMs may share a millisecond
    seq                 BIGINT NOT NULL UNIQUE,
    image_digest TEXT,
    options TEXT NOT NULL DEFAULT '{}',
    disk_mb BIGINT NOT NULL DEFAULT 0,
    cpu_millis BIGINT NOT NULL DEFAULT 0);

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
    exit_code       BIGINT,
    execution_time  DOUBLE PRECISION,
    cpu_time        DOUBLE PRECISION,
    error           TEXT,
    created_at      BIGINT NOT NULL,
    completed_at    BIGINT
);

CREATE INDEX executions_running ON executions(status);

CREATE TABLE images (
    account_id     TEXT NOT NULL REFERENCES accounts(id),
    digest         TEXT NOT NULL,
    reference      TEXT NOT NULL,
    config_digest  TEXT NOT NULL,
    config         TEXT NOT NULL,
    layers         TEXT NOT NULL,
    size           BIGINT NOT NULL,
    created_at     BIGINT NOT NULL,
    PRIMARY KEY (account_id, digest)
);

CREATE INDEX images_by_reference ON images(account_id, reference);

CREATE TABLE build_cache (
    key         TEXT PRIMARY KEY,
    digest      TEXT NOT NULL,
    size        BIGINT NOT NULL,
    media_type  TEXT NOT NULL,
    diff_id     TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

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
    size           BIGINT NOT NULL,
    created_at     BIGINT NOT NULL,
    UNIQUE (account_id, name)
);

CREATE TABLE volumes (
    id          TEXT PRIMARY KEY,
    account_id  TEXT NOT NULL REFERENCES accounts(id),
    name        TEXT NOT NULL,
    size_bytes  BIGINT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);

CREATE INDEX volumes_by_account ON volumes(account_id, created_at DESC);

CREATE TABLE checkpoints (
    id          TEXT PRIMARY KEY,
    volume_id   TEXT NOT NULL REFERENCES volumes(id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE INDEX checkpoints_by_volume ON checkpoints(volume_id, created_at DESC);

CREATE TABLE attachments (
    vm_id       TEXT NOT NULL,
    volume_id   TEXT NOT NULL REFERENCES volumes(id),
    mount_path  TEXT NOT NULL,
    mode        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    checkpoint_id TEXT REFERENCES checkpoints(id),
    subpath TEXT,
    PRIMARY KEY (vm_id, mount_path)
);

CREATE INDEX attachments_by_volume ON attachments(volume_id);

CREATE TABLE vaults (
    id           TEXT PRIMARY KEY,
    account_id   TEXT NOT NULL REFERENCES accounts(id),
    name         TEXT NOT NULL,
    description  TEXT,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
);

CREATE INDEX vaults_by_account ON vaults(account_id, created_at DESC);

CREATE TABLE credentials (
    id               TEXT PRIMARY KEY,
    vault_id         TEXT NOT NULL REFERENCES vaults(id) ON DELETE CASCADE,
    name             TEXT NOT NULL,
    credential_type  TEXT NOT NULL,
    description      TEXT,
    key_id           TEXT NOT NULL,
    nonce            BYTEA NOT NULL,
    ciphertext       BYTEA NOT NULL,
    created_at       BIGINT NOT NULL,
    rotated_at       BIGINT,
    UNIQUE (vault_id, name)
);

CREATE UNIQUE INDEX attachments_one_writer ON attachments(volume_id) WHERE mode = 'rw';

CREATE TABLE shares (
    id          TEXT PRIMARY KEY,
    account_id  TEXT NOT NULL REFERENCES accounts(id),
    vm_id       TEXT NOT NULL REFERENCES vms(id),
    port        BIGINT NOT NULL,
    is_public   BIGINT NOT NULL,
    token_hash  TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE INDEX shares_by_vm ON shares(vm_id);

CREATE INDEX shares_by_account ON shares(account_id, created_at DESC);

CREATE TABLE share_logins (
    token_hash  TEXT PRIMARY KEY,
    share_id    TEXT NOT NULL REFERENCES shares(id) ON DELETE CASCADE,
    expires_at  BIGINT NOT NULL
);

CREATE TABLE custom_domains (
    id               BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    account_id       TEXT NOT NULL REFERENCES accounts(id),
    share_id         TEXT NOT NULL REFERENCES shares(id) ON DELETE CASCADE,
    domain           TEXT NOT NULL UNIQUE,
    dns_provider     TEXT,
    creds_key_id     TEXT,
    creds_nonce      BYTEA,
    creds_ciphertext BYTEA,
    status           TEXT NOT NULL,
    last_error       TEXT,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL
);

CREATE INDEX custom_domains_by_account ON custom_domains(account_id, id);

CREATE TABLE ssh_keys (
    id           BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    account_id   TEXT NOT NULL REFERENCES accounts(id),
    public_key   TEXT NOT NULL,
    fingerprint  TEXT NOT NULL,
    key_type     TEXT NOT NULL,
    comment      TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    user_email TEXT NOT NULL DEFAULT '',
    UNIQUE (account_id, fingerprint)
);

CREATE TABLE gateway_resources (
    kind        TEXT NOT NULL,
    account_id  TEXT NOT NULL REFERENCES accounts(id),
    id          TEXT NOT NULL,
    state       TEXT NOT NULL,
    doc         TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (kind, account_id, id)
);

CREATE INDEX gateway_resources_by_state ON gateway_resources(kind, state);

CREATE TABLE batch_job_logs (
    account_id  TEXT NOT NULL REFERENCES accounts(id),
    job_id      TEXT NOT NULL,
    seq         BIGINT NOT NULL,
    stream      TEXT NOT NULL,
    data        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (account_id, job_id, seq)
);

CREATE INDEX vms_live_by_account ON vms(account_id, status, memory_mb, vcpu_count)
    WHERE status IN ('creating', 'running', 'stopping');

CREATE TABLE usage (
    account_id          TEXT NOT NULL,
    vm_id               TEXT NOT NULL,
    day                 TEXT NOT NULL,
    cpu_seconds         DOUBLE PRECISION NOT NULL DEFAULT 0,
    memory_gib_seconds  DOUBLE PRECISION NOT NULL DEFAULT 0,
    egress_bytes        BIGINT NOT NULL DEFAULT 0,
    storage_gib_seconds DOUBLE PRECISION NOT NULL DEFAULT 0,
    PRIMARY KEY (account_id, vm_id, day)
);

CREATE INDEX usage_by_vm ON usage (vm_id);

CREATE TABLE usage_cursors (
    vm_id        TEXT PRIMARY KEY,
    cpu_ns       BIGINT NOT NULL,
    egress_bytes BIGINT NOT NULL,
    at           BIGINT NOT NULL
);

CREATE TABLE audit_events (
    seq             BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    id              TEXT NOT NULL UNIQUE,
    account_id      TEXT,
    created_at      BIGINT NOT NULL,
    event_group     TEXT NOT NULL,
    event_type      TEXT NOT NULL,
    status          TEXT NOT NULL,
    actor_key_id    TEXT,
    user_email      TEXT,
    vm_id           TEXT,
    session_id      TEXT,
    resource_type   TEXT,
    resource_id     TEXT,
    request_id      TEXT NOT NULL,
    source_address  TEXT NOT NULL,
    method          TEXT NOT NULL,
    path            TEXT NOT NULL,
    http_status     BIGINT NOT NULL,
    error_message   TEXT
);

CREATE INDEX audit_events_by_account ON audit_events (account_id, seq);

CREATE INDEX audit_events_by_time ON audit_events (created_at);

CREATE TABLE audit_key_addresses (
    key_id      TEXT NOT NULL,
    address     TEXT NOT NULL,
    first_seen  BIGINT NOT NULL,
    PRIMARY KEY (key_id, address)
);

CREATE TABLE webhook_endpoints (
    id                TEXT PRIMARY KEY,
    account_id        TEXT NOT NULL,
    url               TEXT NOT NULL,
    description       TEXT,
    event_patterns    TEXT NOT NULL,
    enabled           BIGINT NOT NULL,
    timeout_seconds   BIGINT NOT NULL,
    max_retries       BIGINT NOT NULL,
    secret_key_id     TEXT NOT NULL,
    secret_nonce      BYTEA NOT NULL,
    secret_ciphertext BYTEA NOT NULL,
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL
);

CREATE INDEX webhook_endpoints_by_account ON webhook_endpoints (account_id, created_at);

CREATE TABLE webhook_deliveries (
    seq              BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    id               TEXT NOT NULL UNIQUE,
    account_id       TEXT NOT NULL,
    endpoint_id      TEXT NOT NULL,
    event_id         TEXT NOT NULL,
    event_type       TEXT NOT NULL,
    payload          TEXT NOT NULL,
    status           TEXT NOT NULL,
    attempts         BIGINT NOT NULL,
    next_attempt_at  BIGINT NOT NULL,
    last_status_code BIGINT,
    last_error       TEXT,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL
);

CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, next_attempt_at);

CREATE INDEX webhook_deliveries_by_account ON webhook_deliveries (account_id, seq);

CREATE TABLE vault_services (
    id           TEXT PRIMARY KEY,
    vault_id     TEXT NOT NULL REFERENCES vaults(id) ON DELETE CASCADE,
    account_id   TEXT NOT NULL,
    host         TEXT NOT NULL,
    -- The auth_config as the API shows it: credential names, no values.
    auth_config  TEXT NOT NULL,
    description  TEXT,
    enabled      BIGINT NOT NULL,
    created_at   BIGINT NOT NULL,
    UNIQUE (vault_id, host)
);

CREATE TABLE vault_requests (
    id               BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    vault_id         TEXT NOT NULL REFERENCES vaults(id) ON DELETE CASCADE,
    account_id       TEXT NOT NULL,
    vm_id            TEXT NOT NULL,
    service_id       TEXT NOT NULL,
    host             TEXT NOT NULL,
    method           TEXT NOT NULL,
    path             TEXT NOT NULL,
    status           BIGINT NOT NULL,
    duration_ms      BIGINT NOT NULL,
    credential_name  TEXT NOT NULL,
    created_at       BIGINT NOT NULL
);

CREATE INDEX vault_requests_by_vault ON vault_requests(vault_id, id DESC);
