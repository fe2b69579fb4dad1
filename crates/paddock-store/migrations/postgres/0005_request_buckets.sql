-- Each rate-limited account's token bucket, which every process sharing
-- this database takes tokens from: `tokens` as of `at` (milliseconds, by
-- the database's clock, so nodes' clocks need not agree), and how many
-- the last take got (`granted`).
CREATE TABLE request_buckets (
    account_id TEXT PRIMARY KEY,
    tokens     DOUBLE PRECISION NOT NULL,
    at         BIGINT NOT NULL,
    granted    DOUBLE PRECISION NOT NULL
);
