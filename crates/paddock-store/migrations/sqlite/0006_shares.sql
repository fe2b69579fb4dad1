-- A VM's port published through the share proxy. Shares end with their VM.
CREATE TABLE shares (
    id          TEXT PRIMARY KEY,
    account_id  TEXT NOT NULL REFERENCES accounts(id),
    vm_id       TEXT NOT NULL REFERENCES vms(id),
    port        INTEGER NOT NULL,
    is_public   INTEGER NOT NULL,
    token_hash  TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE INDEX shares_by_vm ON shares(vm_id);
CREATE INDEX shares_by_account ON shares(account_id, created_at DESC);

-- One-time login tokens of private shares: a URL carrying one sets the
-- share's cookie once, then the token is gone.
CREATE TABLE share_logins (
    token_hash  TEXT PRIMARY KEY,
    share_id    TEXT NOT NULL REFERENCES shares(id) ON DELETE CASCADE,
    expires_at  INTEGER NOT NULL
);
