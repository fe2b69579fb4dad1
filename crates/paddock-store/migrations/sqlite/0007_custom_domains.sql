-- A user's hostname routed to one of their shares. The DNS provider's
-- credentials are sealed like vault secrets and never returned.
CREATE TABLE custom_domains (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id       TEXT NOT NULL REFERENCES accounts(id),
    share_id         TEXT NOT NULL REFERENCES shares(id) ON DELETE CASCADE,
    domain           TEXT NOT NULL UNIQUE,
    dns_provider     TEXT,
    creds_key_id     TEXT,
    creds_nonce      BLOB,
    creds_ciphertext BLOB,
    status           TEXT NOT NULL,
    last_error       TEXT,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
);
CREATE INDEX custom_domains_by_account ON custom_domains(account_id, id);
