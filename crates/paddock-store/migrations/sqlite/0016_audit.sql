-- The audit log: append-only through the API; retention prunes by age.
CREATE TABLE audit_events (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    id              TEXT NOT NULL UNIQUE,
    account_id      TEXT,
    created_at      INTEGER NOT NULL,
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
    http_status     INTEGER NOT NULL,
    error_message   TEXT
);
CREATE INDEX audit_events_by_account ON audit_events (account_id, seq);
CREATE INDEX audit_events_by_time ON audit_events (created_at);

-- Which addresses each key has been used from.
CREATE TABLE audit_key_addresses (
    key_id      TEXT NOT NULL,
    address     TEXT NOT NULL,
    first_seen  INTEGER NOT NULL,
    PRIMARY KEY (key_id, address)
);
