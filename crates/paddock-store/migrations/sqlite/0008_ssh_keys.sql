-- SSH public keys registered per account.
CREATE TABLE ssh_keys (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id   TEXT NOT NULL REFERENCES accounts(id),
    public_key   TEXT NOT NULL,
    fingerprint  TEXT NOT NULL,
    key_type     TEXT NOT NULL,
    comment      TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    UNIQUE (account_id, fingerprint)
);
