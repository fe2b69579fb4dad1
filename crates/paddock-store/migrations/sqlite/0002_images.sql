-- Images each account has pulled, and the image a VM runs.

CREATE TABLE images (
    account_id     TEXT NOT NULL REFERENCES accounts(id),
    digest         TEXT NOT NULL,
    reference      TEXT NOT NULL,
    config_digest  TEXT NOT NULL,
    config         TEXT NOT NULL,
    layers         TEXT NOT NULL,
    size           INTEGER NOT NULL,
    created_at     INTEGER NOT NULL,
    PRIMARY KEY (account_id, digest)
);

CREATE INDEX images_by_reference ON images(account_id, reference);

ALTER TABLE vms ADD COLUMN image_digest TEXT;
